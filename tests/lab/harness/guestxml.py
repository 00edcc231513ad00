"""Domain XML for tests and the demo: tiny guests with hook-managed ports in <metadata>."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

__all__ = ["NS", "Port", "domain_xml", "metadata_xml"]

NS = "http://libvirt-vdp-hooks.org/xmlns"


@dataclass(frozen=True)
class Port:
    """A hook-managed port: ``kind`` "qbg" (managerid/typeid/...) or "qbh" (profileid)."""

    mac: str
    uplink: str
    kind: str = "qbg"
    vlan: int | None = None
    required: bool | None = None
    params: Mapping[str, str] = field(
        default_factory=lambda: {"managerid": "11", "typeid": "1193047", "typeidversion": "2"}
    )


def metadata_xml(ports: Sequence[Port], *, policy: Mapping[str, bool] | None = None, prefix: str = "vdp") -> str:
    lines = [f'<{prefix}:hooks xmlns:{prefix}="{NS}" version="1">']
    for name, required in (policy or {}).items():
        lines.append(f'  <{prefix}:feature name="{name}" required="{"yes" if required else "no"}"/>')
    for p in ports:
        attrs = f"mac={quoteattr(p.mac)} uplink={quoteattr(p.uplink)}"
        if p.vlan is not None:
            attrs += f' vlan="{p.vlan}"'
        if p.required is not None:
            attrs += f' required="{"yes" if p.required else "no"}"'
        inner = " ".join(f"{k}={quoteattr(v)}" for k, v in p.params.items())
        lines.append(f"  <{prefix}:port {attrs}>\n    <{prefix}:{p.kind} {inner}/>\n  </{prefix}:port>")
    lines.append(f"</{prefix}:hooks>")
    return "\n".join(lines)


def domain_xml(
    name: str,
    uuid: str,
    *,
    macs: Sequence[str] = (),
    ports: Sequence[Port] = (),
    policy: Mapping[str, bool] | None = None,
    memory_mib: int = 64,
) -> str:
    """A TCG guest with no disk (it sits in the BIOS), one virtio ``type='ethernet'`` NIC per MAC."""
    macs = list(macs) or [p.mac for p in ports]
    nics = "\n".join(
        f"    <interface type='ethernet'><mac address='{mac}'/><model type='virtio'/></interface>" for mac in macs
    )
    metadata = f"  <metadata>\n{metadata_xml(ports, policy=policy)}\n  </metadata>\n" if ports or policy else ""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
{metadata}  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
{nics}
    <serial type='pty'/>
  </devices>
</domain>
"""
