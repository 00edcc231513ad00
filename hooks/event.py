"""argv + domain XML -> an immutable :class:`Event`.

libvirt runs ``qemu NAME OP SUBOP EXTRA`` with the full domain XML on stdin.  We parse the XML once, with
entities, DTDs and network access off and a size cap, and keep what the features need: the guest's
identity, its interfaces, and our ``<metadata>`` (ports declared for the hooks, per-guest feature policy).

Errors that make the whole declaration unusable raise :class:`~hooks.errors.XmlError`.  A rule broken by
one port is kept on that port (``PortSpec.error``): whether it vetoes depends on whether the port is
required, which is the policy's call, not the parser's.

Just over 400 lines: the domain XML's one parser with every rule of the ``<vdp:hooks>`` envelope it checks.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType

from hooks import NAMESPACE
from hooks.boot import import_lean
from hooks.errors import XmlError
from hooks.plain import field, plain, replace

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from lxml.etree import _Element

__all__ = [
    "MAX_XML_BYTES",
    "PORT_FEATURE",
    "PORT_KINDS",
    "Event",
    "Interface",
    "PortSpec",
    "attributes",
    "int_in",
    "parse_event",
    "parse_xml",
    "pci_address",
]

#: Real domain XML is a few KiB; anything near this is an attack or a bug.
MAX_XML_BYTES = 4 * 1024 * 1024

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
#: The kinds of port (the one child element of ``<vdp:port>``) -> (the feature that serves them, the
#: ``module:function`` that turns the child into the feature's typed port).  The framework parses only the
#: envelope; what a kind's attributes mean is its feature's business.
PORT_KINDS: Mapping[str, tuple[str, str]] = {"qbg": ("vdp", "vdp.ports:parse"), "qbh": ("vdp", "vdp.ports:parse")}
#: Which feature serves each kind of port ("unknown": a broken envelope, its kind never known).
PORT_FEATURE = {**{kind: owner for kind, (owner, _) in PORT_KINDS.items()}, "unknown": "vdp"}
_PORT_ATTRS = ("mac", "uplink", "vlan", "required")
#: libvirt handles these port profiles itself; a hook-managed port on such an interface would fight it.
_LIBVIRT_PORT_PROFILES = ("802.1Qbg", "802.1Qbh")


def _q(tag: str) -> str:
    return f"{{{NAMESPACE}}}{tag}"


@plain(frozen=True)
class Interface:
    """One ``<interface>`` of the guest, as far as the hooks care.

    ``virtualport_type`` is None without a ``<virtualport>``, "" for one without ``type=`` (a
    ``type='network'`` interface may leave the type to its network)."""

    mac: str
    type: str
    source_dev: str | None
    virtualport_type: str | None
    virtualport: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None  # type='network': <source network=...>
    portgroup: str | None = None  # type='network': <source portgroup=...>
    pci: str | None = None  # type='hostdev': the PCI address of the VF, "0000:03:10.2"

    @property
    def libvirt_managed_profile(self) -> bool:
        """libvirt itself associates this port (``type='direct'`` + 802.1Qbg/Qbh ``<virtualport>``)."""
        if not self.virtualport_type:
            return False
        return self.type == "direct" or self.virtualport_type in _LIBVIRT_PORT_PROFILES


@plain(frozen=True)
class PortSpec:
    """A ``<vdp:port>`` the hooks manage.  ``error`` is set when the declaration breaks a rule."""

    mac: str
    where: str  # names the element for messages, e.g. "<vdp:port mac='52:54:00:aa:00:02'>"
    kind: str  # "qbg", "qbh" or "unknown"
    uplink: str | None = None
    vlan: int = 0  # 0 = the switch assigns it
    required: bool | None = None  # None = not said here; the guest or host decides
    attrs: Mapping[str, str] = field(default_factory=dict)  # the child element's attributes, as written
    port: object = None  # the typed port its feature's parser made of the child (None with an error)
    error: str | None = None

    @property
    def key(self) -> str:
        """What the journal and the logs call this port."""
        return self.mac

    @property
    def instance(self) -> uuid.UUID | None:
        """The typed port's instance (a VSI's, a port profile's), if it has one."""
        found = getattr(self.port, "instance", None)
        return found if isinstance(found, uuid.UUID) else None


@plain(frozen=True)
class Event:
    """One hook invocation: who, what, and what our metadata declares."""

    guest: str
    uuid: uuid.UUID
    op: str
    subop: str
    extra: str
    interfaces: tuple[Interface, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    #: Per-guest feature policy from ``<vdp:feature name= required=>``: name -> required.
    feature_policy: Mapping[str, bool] = field(default_factory=dict)
    #: Things worth a log line that change nothing (unknown attributes, newer metadata version, ...).
    warnings: tuple[str, ...] = ()
    has_metadata: bool = False
    raw: bytes = field(default=b"", repr=False)

    @property
    def hook(self) -> tuple[str, str]:
        return (self.op, self.subop)

    def interface(self, mac: str) -> Interface | None:
        for iface in self.interfaces:
            if iface.mac == mac:
                return iface
        return None


#: For XML that libvirt would never send: the admin replaying a saved or hand-made file.
_BAD_XML_HINT = "libvirt never sends such XML; if it came from 'vdp-hooks replay FILE', check FILE with xmllint"


def parse_xml(raw: bytes, what: str = "domain XML") -> _Element:
    """``raw`` parsed safely (no entities, DTDs or network; size and depth capped) -> the root element."""
    # Imported here: the entry's fast path must not pay for lxml.
    etree = import_lean("lxml.etree")  # without inspect and gzip: see hooks/boot.py

    if len(raw) > MAX_XML_BYTES:
        raise XmlError(
            f"{what} is {len(raw)} bytes, more than the {MAX_XML_BYTES} this hook reads",
            hint="make it smaller (a long <description>, for example)",
        )
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
    )
    try:
        return etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        # exc.msg carries the position once; str(exc) repeats it as "(<string>, line N)".
        text = str(exc.msg or exc)
        if text.startswith("Excessive depth in document"):
            text = f"elements nested more than 256 deep ({text.rsplit(', ', 2)[-2]}, {text.rsplit(', ', 1)[-1]})"
        elif "Invalid bytes in character encoding" in text or "not proper UTF-8" in text:
            text = f"not valid UTF-8 (line {exc.lineno}, column {exc.position[1]})"
        raise XmlError(f"{what} is not well-formed: {text}", hint=_BAD_XML_HINT) from None


def attributes(node: _Element) -> dict[str, str]:
    """``node``'s attributes.  lxml gives str names and values in Python 3; its stubs also allow bytes."""
    return {str(k): str(v) for k, v in node.attrib.items()}


def _parse_xml(raw: bytes) -> _Element:
    root = parse_xml(raw, "domain XML on stdin")
    if root is None or root.tag != "domain":
        raise XmlError("stdin does not hold a <domain> document", hint="libvirt passes the domain XML on stdin")
    return root


def _yes_no(value: str, where: str, attr: str) -> bool:
    if value in ("yes", "no"):
        return value == "yes"
    raise ValueError(f"{where}: {attr}='{value}' must be 'yes' or 'no'")


def int_in(value: str, lo: int, hi: int, where: str, attr: str) -> int:
    """A decimal attribute value within lo..hi; ValueError naming ``where`` and ``attr`` (also for the
    attributes of port kinds, parsed by their features: vdp.ports)."""
    try:
        number = int(value, 10)
    except ValueError:
        raise ValueError(f"{where}: {attr}='{value}' is not a decimal number") from None
    if not lo <= number <= hi:
        raise ValueError(f"{where}: {attr}={number} is outside {lo}..{hi}")
    return number


def _interfaces(root: _Element) -> tuple[Interface, ...]:
    found = []
    for node in root.iterfind("devices/interface"):
        mac_node = node.find("mac")
        mac = mac_node.get("address") if mac_node is not None else None
        if not mac:
            continue  # libvirt always fills the MAC in; an interface without one cannot be ours
        kind = node.get("type", "")
        source = node.find("source")
        vport = node.find("virtualport")
        params = vport.find("parameters") if vport is not None else None
        address = source.find("address") if source is not None and kind == "hostdev" else None
        found.append(
            Interface(
                mac=mac.lower(),
                type=kind,
                source_dev=source.get("dev") if source is not None else None,
                virtualport_type=vport.get("type", "") if vport is not None else None,
                virtualport=MappingProxyType(attributes(params)) if params is not None else MappingProxyType({}),
                network=source.get("network") if source is not None and kind == "network" else None,
                portgroup=source.get("portgroup") if source is not None and kind == "network" else None,
                pci=pci_address(address) if address is not None else None,
            )
        )
    return tuple(found)


def pci_address(node: _Element) -> str | None:
    """``<address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x2'/>`` -> "0000:03:10.2"."""
    get = node.get
    if get("type", "pci") != "pci":
        return None
    try:
        parts = [int(get(k, "0"), 0) for k in ("domain", "bus", "slot", "function")]
    except ValueError:
        return None
    return "{:04x}:{:02x}:{:02x}.{:x}".format(*parts)


def _tag_name(tag: str) -> str:
    """An element's name for messages: ``<vdp:qbz>`` for ours (whatever prefix the XML used)."""
    ns, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    if ns == NAMESPACE:
        return f"<vdp:{local}>"
    return f"<{local} xmlns='{ns}'>" if ns else f"<{local}>"


def _near_miss(uri: str) -> bool:
    """A namespace that was surely meant to be ours: case, https, a trailing slash, spaces."""
    loose = uri.strip().lower().rstrip("/")
    if loose.startswith("https://"):
        loose = "http://" + loose[len("https://") :]
    return uri != NAMESPACE and loose == NAMESPACE


def _near_miss_warnings(root: _Element) -> list[str]:
    found = []
    for node in root.iterfind("metadata/*"):
        tag = node.tag if isinstance(node.tag, str) else ""
        uri = tag[1:].partition("}")[0] if tag.startswith("{") else ""
        if _near_miss(uri):
            found.append(
                f"<metadata> holds <{tag.partition('}')[2]}> in namespace '{uri}', which is not "
                f"libvirt-vdp-hooks' '{NAMESPACE}' (namespaces must match exactly): its ports are ignored"
            )
    return found


def _port(node: _Element, guest_uuid: uuid.UUID, interfaces: tuple[Interface, ...], warnings: list[str]) -> PortSpec:
    """One ``<vdp:port>``: the envelope here, its child by the parser of the feature owning its kind
    (:data:`PORT_KINDS`); rule violations are kept in ``error`` rather than raised."""
    attrs = attributes(node)
    mac = attrs.get("mac", "").lower()
    where = f"<vdp:port mac='{attrs.get('mac', '')}'>"
    for name in attrs:
        if name not in _PORT_ATTRS:
            warnings.append(f"{where}: unknown attribute '{name}' ignored")
    required: bool | None = None
    try:
        if "required" in attrs:
            required = _yes_no(attrs["required"], where, "required")
    except ValueError as exc:
        return PortSpec(mac=mac, where=where, kind="unknown", error=str(exc))

    children = [c for c in node if isinstance(c.tag, str)]
    kinds = [c for c in children if c.tag in (_q(k) for k in PORT_KINDS)]
    others = [c for c in children if c not in kinds]

    def bad(message: str, kind: str = "unknown") -> PortSpec:
        return PortSpec(mac=mac, where=where, kind=kind, required=required, error=message)

    if not _MAC_RE.match(mac):
        return bad(f"{where}: mac must look like 52:54:00:aa:00:02")
    same_mac = [i for i in interfaces if i.mac == mac]
    if not same_mac:
        return bad(f"{where}: the guest has no <interface> with this MAC")
    # Any interface with this MAC counts, wherever it stands: libvirt's own port must not be fought over.
    managed = next((i for i in same_mac if i.libvirt_managed_profile), None)
    if managed is not None:
        return bad(
            f"{where}: an interface with this MAC has a <virtualport type='{managed.virtualport_type}'> that "
            "libvirt manages itself; remove one of the two"
        )
    iface = same_mac[0]
    if others:
        names = ", ".join(sorted({_tag_name(str(c.tag)) for c in others}))
        return bad(f"{where}: unknown element(s) {names} (a newer libvirt-vdp-hooks?)")
    if len(kinds) != 1:
        return bad(f"{where}: needs exactly one {' or '.join(f'<vdp:{k}>' for k in PORT_KINDS)} inside")
    kind_node = kinds[0]
    kind = kind_node.tag.split("}", 1)[1]
    try:
        vlan = int_in(attrs.get("vlan", "0"), 0, 4094, where, "vlan")
        uplink = attrs.get("uplink") or (iface.source_dev if iface.type == "direct" else None)
        if not uplink:
            raise ValueError(f"{where}: uplink= is missing (only type='direct' interfaces default to their source dev)")
        spec = PortSpec(
            mac=mac,
            where=where,
            kind=kind,
            uplink=uplink,
            vlan=vlan,
            required=required,
            attrs=MappingProxyType(attributes(kind_node)),
        )
        return replace(spec, port=_kind_parser(kind)(spec, guest_uuid, warnings))
    except ValueError as exc:
        return bad(str(exc), kind)


def _kind_parser(kind: str) -> Callable[[PortSpec, uuid.UUID, list[str]], object]:
    """The feature's parser for ``kind`` (``module:function``), imported when a port of that kind shows up."""
    module, _, attr = PORT_KINDS[kind][1].partition(":")
    return getattr(importlib.import_module(module), attr)


def _fix_hint(guest: str) -> str:
    # virsh refuses --edit without --key ("namespace key is required when modifying metadata").
    return f"fix it with 'virsh metadata {guest} {NAMESPACE} --key vdp --config --edit' or 'virsh edit {guest}'"


def parse_event(argv: list[str], raw: bytes) -> Event:
    """Build the event from the hook's argv (without argv[0]) and the XML bytes from stdin."""
    if len(argv) < 3:
        raise XmlError("expected arguments NAME OP SUBOP [EXTRA]", hint="run as libvirt does: qemu NAME OP SUBOP EXTRA")
    name, op, subop = argv[0], argv[1], argv[2]
    extra = argv[3] if len(argv) > 3 else "-"
    root = _parse_xml(raw)
    uuid_text = (root.findtext("uuid") or "").strip()
    try:
        guest_uuid = uuid.UUID(uuid_text)
    except ValueError:
        raise XmlError(f"<uuid>{uuid_text[:60]}</uuid> is not a UUID", hint="libvirt always sets one") from None
    guest = (root.findtext("name") or name).strip()
    interfaces = _interfaces(root)
    hint = _fix_hint(guest)
    warnings: list[str] = [f"{w}; {hint}" for w in _near_miss_warnings(root)]

    hooks_nodes = root.findall(f"metadata/{_q('hooks')}")
    if not hooks_nodes:
        return Event(guest, guest_uuid, op, subop, extra, interfaces, warnings=tuple(warnings), raw=raw)
    if len(hooks_nodes) > 1:
        raise XmlError("more than one <vdp:hooks> element in <metadata>; libvirt keeps only the first", hint=hint)
    top = hooks_nodes[0]
    version_text = top.get("version", "1")
    try:
        version = int(version_text)
        if version < 1:
            raise ValueError
    except ValueError:
        raise XmlError(f"<vdp:hooks version='{version_text}'>: version must be a positive integer", hint=hint) from None
    if version > 1:
        warnings.append(f"<vdp:hooks version='{version}'> is newer than this host understands (1)")

    policy: dict[str, bool] = {}
    ports: list[PortSpec] = []
    seen: set[str] = set()
    for node in top:
        if not isinstance(node.tag, str):
            continue
        if node.tag == _q("feature"):
            fname = node.get("name", "")
            where = f"<vdp:feature name='{fname}'>"
            if not fname:
                raise XmlError(f"{where}: name= is missing", hint=hint)
            if fname in policy:
                raise XmlError(f"{where} appears twice", hint=hint)
            try:
                policy[fname] = _yes_no(node.get("required", "yes"), where, "required")
            except ValueError as exc:
                raise XmlError(str(exc), hint=hint) from None
        elif node.tag == _q("port"):
            port = _port(node, guest_uuid, interfaces, warnings)
            if port.mac in seen:
                raise XmlError(f"{port.where} is declared twice; declare each port once", hint=hint)
            seen.add(port.mac)
            ports.append(port)
        else:
            warnings.append(f"<vdp:hooks>: unknown element {_tag_name(node.tag)} ignored")
    return Event(
        guest=guest,
        uuid=guest_uuid,
        op=op,
        subop=subop,
        extra=extra,
        interfaces=interfaces,
        ports=tuple(ports),
        feature_policy=MappingProxyType(policy),
        warnings=tuple(warnings),
        has_metadata=True,
        raw=raw,
    )
