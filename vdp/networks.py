"""libvirt networks that carry 802.1Qbg / 802.1Qbh port profiles, read from the files libvirt keeps.

A guest's ``<interface type='network'><source network='N' portgroup='P'/>`` shows no ``<virtualport>`` in
the domain XML a hook gets: libvirt's network driver takes it from the network definition and from the
portgroup, merged with the interface's own (``networkAllocatePort`` in src/network/bridge_driver.c, using
``virNetDevVPortProfileMerge3`` of src/util/virnetdevvportprofile.c).  A hook must never call libvirt
(deadlock), so the definition is read from disk: the active network's status XML
(``/run/libvirt/network/N.xml``, a ``<networkstatus>`` around the ``<network>``), else the persistent one
(``/etc/libvirt/qemu/networks/N.xml``).  virtnetworkd keeps the same paths.

What libvirt does, and so what is done here:

- the portgroup is the one the interface names, else the network's ``default='yes'`` one;
- merge: start from the interface's virtualport, then the network's, then the portgroup's.  A ``type``
  set in two places must agree; an attribute is taken where it is first set and must agree wherever else
  it is set (numbers and UUIDs compared as such); attributes that do not belong to the type are dropped.
  Disagreement is an error that makes libvirt refuse the guest;
- 802.1Qbg/802.1Qbh is allowed for forward modes ``vepa``, ``private``, ``passthrough``, ``bridge``
  without a ``<bridge name=>`` (all macvtap on a forward device), and ``hostdev`` (a VF by PCI address);
  libvirt picks the device from the pool (``<forward dev=>``, ``<interface dev=>``, or the VFs of
  ``<pf dev=>``) by connection count, never by link state, so each of them may be the one;
- a Qbg profile needs managerid, typeid and typeidversion (instanceid is generated when missing), a Qbh
  profile needs profileid.

:func:`has_port_profile_network` is the cheap byte test the hook entry repeats with the standard library
alone (tests/unit/test_networks.py keeps the two in agreement).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from types import MappingProxyType

from hooks.errors import PeerUnavailable, XmlError
from hooks.event import Interface, attributes, parse_xml, pci_address
from hooks.plain import field, plain

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from lxml.etree import _Element

__all__ = [
    "CONFIG_DIR",
    "STATUS_DIR",
    "NetworkPort",
    "VirtualPort",
    "definition_path",
    "has_port_profile_network",
    "merge3",
    "network_dirs",
    "resolve",
    "source_networks",
]

STATUS_DIR = "/run/libvirt/network"
CONFIG_DIR = "/etc/libvirt/qemu/networks"
#: Bytes that occur in a network definition only when it carries a port profile we act on.
_PORT_PROFILE_BYTES = (b"802.1Qbg", b"802.1Qbh")
_PORT_PROFILES = ("802.1Qbg", "802.1Qbh")
_DIRECT_MODES = ("vepa", "private", "passthrough", "bridge")

# Which <parameters> attribute belongs to which virtualport type (virNetDevVPortProfileMerge's checks).
_ATTR_TYPES = {
    "managerid": ("802.1Qbg",),
    "typeid": ("802.1Qbg",),
    "typeidversion": ("802.1Qbg",),
    "instanceid": ("802.1Qbg",),
    "interfaceid": ("openvswitch", "midonet"),
    "profileid": ("openvswitch", "802.1Qbh"),
}
_REQUIRED = {"802.1Qbg": ("managerid", "typeid", "typeidversion"), "802.1Qbh": ("profileid",)}


def network_dirs(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Where network definitions are looked up, in order.  Tests point ``VDP_HOOKS_NETWORK_DIRS`` (colon
    separated) elsewhere; libvirt strips the environment, so it never steers a production hook."""
    override = environ.get("VDP_HOOKS_NETWORK_DIRS")
    return tuple(d for d in override.split(":") if d) if override else (STATUS_DIR, CONFIG_DIR)


def source_networks(raw: bytes) -> list[str]:
    """The names in ``<source network='N'>`` of the raw domain XML, by a byte scan (no parser)."""
    names: list[str] = []
    if b" network=" not in raw:
        return names
    start = 0
    while True:
        begin = raw.find(b"<source ", start)
        if begin < 0:
            return names
        end = raw.find(b">", begin)
        if end < 0:
            return names
        tag = raw[begin:end]
        for quote in (b"'", b'"'):
            at = tag.find(b" network=" + quote)
            if at >= 0:
                close = tag.find(quote, at + 10)
                if close > 0:
                    names.append(tag[at + 10 : close].decode("utf-8", "replace"))
                break
        start = end


def definition_path(name: str, dirs: tuple[str, ...]) -> str | None:
    """The file that defines network ``name``: the first of ``dirs`` that has ``name.xml``."""
    if not name or "/" in name or name.startswith("."):
        return None
    for directory in dirs:
        path = os.path.join(directory, name + ".xml")
        if os.path.isfile(path):
            return path
    return None


def has_port_profile_network(raw: bytes, dirs: tuple[str, ...]) -> bool:
    """Does one of the guest's networks carry an 802.1Qbg/Qbh virtualport?  One small file read per
    network the guest names (no parsing): cheap enough for every event of every type='network' guest."""
    for name in source_networks(raw):
        if "&" in name:
            return True  # an escaped name: not worth decoding here, let the parser decide
        path = definition_path(name, dirs)
        if path is None:
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            return True  # unreadable: let the slow path say why
        if any(marker in data for marker in _PORT_PROFILE_BYTES):
            return True
    return False


@plain(frozen=True)
class VirtualPort:
    """A ``<virtualport>``: ``type`` ("" when not given) and its ``<parameters>`` attributes."""

    type: str = ""
    params: Mapping[str, str] = field(default_factory=dict)


def _virtualport(node: _Element | None) -> VirtualPort | None:
    if node is None:
        return None
    params = node.find("parameters")
    attrs = attributes(params) if params is not None else {}
    return VirtualPort(node.get("type", ""), MappingProxyType(attrs))


def _same(attr: str, a: str, b: str) -> bool:
    """Compare as libvirt does after parsing: numbers as numbers, UUIDs as UUIDs."""
    try:
        if attr in ("managerid", "typeid", "typeidversion"):
            return int(a, 0) == int(b, 0)
        if attr in ("instanceid", "interfaceid"):
            return uuid.UUID(a) == uuid.UUID(b)
    except ValueError:
        pass
    return a == b


def merge3(
    interface: VirtualPort | None, network: VirtualPort | None, portgroup: VirtualPort | None
) -> VirtualPort | None:
    """The virtualport libvirt applies: the interface's, then the network's, then the portgroup's merged in.

    None when none of them has a type or an attribute.  Raises ValueError naming the disagreement."""
    parts = [(w, p) for w, p in (("interface", interface), ("network", network), ("portgroup", portgroup)) if p]
    if not any(p.type for _, p in parts):
        return None
    vtype = ""
    params: dict[str, str] = {}
    origin: dict[str, str] = {}
    for where, part in parts:
        if part.type:
            if vtype and vtype != part.type:
                raise ValueError(f"virtualport type '{vtype}' ({origin['type']}) and '{part.type}' ({where}) disagree")
            if not vtype:
                vtype, origin["type"] = part.type, where
        for attr, value in part.params.items():
            if attr not in _ATTR_TYPES or (vtype and vtype not in _ATTR_TYPES[attr]):
                continue  # libvirt drops what does not belong to the type
            if attr in params and not _same(attr, params[attr], value):
                raise ValueError(
                    f"virtualport {attr}='{params[attr]}' ({origin[attr]}) and '{value}' ({where}) disagree"
                )
            if attr not in params:
                params[attr], origin[attr] = value, where
    # Attributes merged before the type was known and that do not belong to it.
    params = {k: v for k, v in params.items() if vtype in _ATTR_TYPES[k]}
    return VirtualPort(vtype, MappingProxyType(params))


@plain(frozen=True)
class NetworkPort:
    """What libvirt will make of a ``type='network'`` interface on this host, as far as we preflight it."""

    network: str
    portgroup: str | None  # the one that applies (named by the interface or the network's default)
    mode: str  # the network's forward mode
    uplinks: tuple[str, ...]  # forward devices libvirt may pick (interface names)
    virtualport: VirtualPort
    path: str  # the definition read
    pci: tuple[str, ...] = ()  # forward mode hostdev: the VFs by PCI address ("0000:03:10.2")

    @property
    def proto(self) -> str:
        return "qbg" if self.virtualport.type == "802.1Qbg" else "qbh"

    def describe(self) -> str:
        """``network 'vdpnet' portgroup 'finance'`` for messages."""
        group = f" portgroup '{self.portgroup}'" if self.portgroup else " (no portgroup)"
        return f"network '{self.network}'{group}"


def resolve(iface: Interface, dirs: tuple[str, ...]) -> NetworkPort | None:
    """The port profile of ``iface`` (``type='network'``) on this host; None when it has none of ours.

    A network defined nowhere here is none of ours either: libvirt refuses the guest itself, before
    anything runs.  Raises PeerUnavailable when the definition is unusable, and ValueError when libvirt
    would refuse the combination only once it allocates the port (the message says why)."""
    name = iface.network or ""
    path = definition_path(name, dirs)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            doc = parse_xml(fh.read(), f"network definition {path}")
    except OSError as exc:
        raise PeerUnavailable(f"network '{name}': cannot read {path} ({exc.strerror})") from None
    except XmlError as exc:  # libvirt wrote it: a broken file is a host problem, not the guest's
        raise PeerUnavailable(exc.text, hint=f"check it with 'virsh net-dumpxml {name}'") from None
    root = doc.find("network") if doc.tag == "networkstatus" else doc
    if root is None or root.tag != "network":
        raise PeerUnavailable(f"network '{name}': {path} holds no <network>")
    find = root.find
    portgroups = root.findall("portgroup")
    if iface.portgroup:
        group = next((g for g in portgroups if g.get("name") == iface.portgroup), None)
    else:
        group = next((g for g in portgroups if g.get("default") == "yes"), None)
    mine = iface.virtualport_type
    merged = merge3(
        VirtualPort(mine, iface.virtualport) if mine is not None else None,
        _virtualport(find("virtualport")),
        _virtualport(group.find("virtualport")) if group is not None else None,
    )
    if merged is None or merged.type not in _PORT_PROFILES:
        return None
    forward = find("forward")
    mode = forward.get("mode", "nat") if forward is not None else "none"
    if forward is None or mode not in (*_DIRECT_MODES, "hostdev") or (mode == "bridge" and find("bridge") is not None):
        return None  # libvirt refuses a Qbg/Qbh profile there before anything runs
    uplinks: list[str] = []
    for dev in [forward.get("dev"), *(i.get("dev") for i in forward.iterfind("interface"))]:
        if dev and dev not in uplinks:
            uplinks.append(dev)
    if not uplinks:
        uplinks = [dev for p in forward.iterfind("pf") if (dev := p.get("dev"))]
    pci = [a for a in (pci_address(n) for n in forward.iterfind("address")) if a]
    missing = [a for a in _REQUIRED[merged.type] if a not in merged.params]
    if missing:
        raise ValueError(f"the merged <virtualport type='{merged.type}'> lacks {', '.join(missing)}")
    return NetworkPort(
        network=name,
        portgroup=group.get("name") if group is not None else iface.portgroup,
        mode=mode,
        uplinks=tuple(uplinks),
        virtualport=merged,
        path=path,
        pci=tuple(pci),
    )
