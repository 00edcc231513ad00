"""``<interface type='hostdev'>`` with an 802.1Qbh virtualport (an SR-IOV VF passed through by PCI address,
as in libvirt's docs and Cisco VM-FEX set-ups): the VF resolves to its PF and number the way libvirt finds
them, and ``migrate begin`` / ``restore begin`` check that PF the way hook-managed Qbh ports are checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hooks.errors import PeerUnavailable
from hooks.event import parse_event
from tests.unit.conftest import MAC_A, HookEnv, domain_xml
from tests.unit.test_qbh_unit import _fake_sysfs
from vdp.qbh import host as qbh_host
from vdp.qbh.host import QbhPort


def hostdev_interface(
    mac: str, *, domain: str = "0x0000", bus: str = "0x0d", slot: str = "0x00", fn: str = "0x1"
) -> str:
    return f"""
    <interface type='hostdev' managed='yes'>
      <mac address='{mac}'/>
      <driver name='vfio'/>
      <source>
        <address type='pci' domain='{domain}' bus='{bus}' slot='{slot}' function='{fn}'/>
      </source>
      <virtualport type='802.1Qbh'>
        <parameters profileid='pp-vlan-25'/>
      </virtualport>
    </interface>"""


def _pci_sysfs(root: Path) -> Path:
    """The fake sysfs of test_qbh_unit plus /sys/bus/pci/devices links, with VF 1 bound to vfio-pci
    (no network interface of its own, as for a guest's hostdev)."""
    sysfs = _fake_sysfs(root)
    devices = sysfs / "bus" / "pci" / "devices"
    devices.mkdir(parents=True)
    for dev in (sysfs / "devices" / "pci0000:00").iterdir():
        (devices / dev.name).symlink_to(os.path.relpath(dev, devices))
    os.rmdir(sysfs / "devices" / "pci0000:00" / "0000:03:10.1" / "net")
    (sysfs / "devices" / "pci0000:00" / "0000:03:10.0" / "net" / "eth1v0").mkdir()
    return sysfs


def test_hostdev_interface_keeps_its_pci_address() -> None:
    xml = domain_xml(interfaces=[hostdev_interface(MAC_A, bus="0x03", slot="0x10", fn="0x2")])
    iface = parse_event(["g", "migrate", "begin", "-"], xml).interfaces[0]
    assert (iface.type, iface.pci, iface.virtualport_type) == ("hostdev", "0000:03:10.2", "802.1Qbh")
    assert dict(iface.virtualport) == {"profileid": "pp-vlan-25"}


def test_a_vf_by_pci_address_resolves_to_its_pf_and_number(tmp_path: Path) -> None:
    sysfs = str(_pci_sysfs(tmp_path))
    # Bound to vfio-pci: no interface of its own, so the PF's name stands for it.
    assert qbh_host.resolve_pci("0000:03:10.1", sysfs=sysfs) == QbhPort("eth1", "eth1", 3, 1)
    assert qbh_host.resolve_pci("0000:03:10.0", sysfs=sysfs) == QbhPort("eth1v0", "eth1", 3, 0)


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("0000:02:00.0", "is not an SR-IOV VF"),
        ("0000:0d:00.1", "does not exist on this host"),
        ("../x", "does not exist"),
    ],
)
def test_pci_addresses_that_are_no_vf_here_are_clear_errors(tmp_path: Path, address: str, needle: str) -> None:
    with pytest.raises(PeerUnavailable, match=needle):
        qbh_host.resolve_pci(address, sysfs=str(_pci_sysfs(tmp_path)))


def test_migrate_begin_vetoes_a_hostdev_qbh_port_whose_vf_is_not_here(hookenv: HookEnv) -> None:
    hookenv.write_config(features="vdp", vdp_required=None)
    xml = domain_xml(interfaces=[hostdev_interface(MAC_A, domain="0x00fe")])
    result = hookenv.run("migrate", "begin", xml)
    assert result.returncode == 1
    assert (
        f"port {MAC_A}: feature vdp: <interface type='hostdev'> PCI 00fe:0d:00.1 (qbh): "
        "PCI device 00fe:0d:00.1 does not exist on this host" in result.err
    ), result.err
    # Preflight only: at prepare begin libvirt sets the profile itself.
    assert hookenv.run("prepare", "begin", xml).returncode == 0
