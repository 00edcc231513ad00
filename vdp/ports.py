"""One VSI, one shape: the VDP feature's ports as typed values, parsed and validated once.

A ``<vdp:port>`` envelope (mac, uplink, vlan, required) is the framework's (``hooks.event``); its one
child, ``<vdp:qbg>`` or ``<vdp:qbh>``, is ours and becomes a :class:`QbgPort` or :class:`QbhPort` here,
with every range check in one place.  The same objects are rebuilt from a journal record
(:func:`from_journal`) and written into one (``journal()``): the journal format on disk is the one of
earlier releases, and journals written by them load unchanged (``via`` missing: see :func:`transport`).

:class:`Request` is the one request enum: its netlink value (IFLA_PORT_REQUEST, the same numbers for Qbg
and Qbh), its label for messages, its verb for log notes, vdptool's mode name.

Imported on the hook's hot path (every guest with ports): stdlib ``enum``/``uuid`` only (``re`` has
loaded ``enum`` already).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping

from hooks.event import int_in
from hooks.plain import field, plain

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
# Any: journal data is JSON (str, int, bool, None, lists and dicts of them).
if TYPE_CHECKING:
    from typing import Any, Union

    from hooks.errors import HookError
    from hooks.event import PortSpec

    Port = Union["QbgPort", "QbhPort"]

__all__ = [
    "KINDS",
    "VIA_CLIF",
    "VIA_NETLINK",
    "PortResult",
    "QbgPort",
    "QbhPort",
    "Request",
    "carried",
    "from_journal",
    "parse",
    "transport",
]


class Request(enum.IntEnum):
    """A VDP / port-profile request; the value is IFLA_PORT_REQUEST's."""

    PREASSOCIATE = 0
    PREASSOCIATE_RR = 1
    ASSOCIATE = 2
    DISASSOCIATE = 3

    @property
    def label(self) -> str:
        """For messages and the veto line: ``ASSOCIATE``."""
        return self.name

    @property
    def verb(self) -> str:
        """For log notes: ``associate on eth0``."""
        return self.name.lower().replace("_", "-")

    @property
    def mode(self) -> str:
        """vdptool's (lldpad client interface's) name of the request."""
        return _MODES[self]

    @classmethod
    def from_mode(cls, mode: str) -> Request:
        return next(r for r, m in _MODES.items() if m == mode)


_MODES = {
    Request.PREASSOCIATE: "preassoc",
    Request.PREASSOCIATE_RR: "preassoc-rr",
    Request.ASSOCIATE: "assoc",
    Request.DISASSOCIATE: "deassoc",
}

#: How a Qbg VSI reached lldpad, journaled as ``via``: its later requests (teardown above all) must take
#: the same way.  lldpad reports a VSI's progress to the netlink pid that created it, and to its client
#: interface only for a VSI without one (openlldp qbg/vdp22.c, vdp22_clntback): a VSI made over netlink and
#: withdrawn through the client interface is never answered there.  (The other way round works: netlink
#: reads the outcome from lldpad's table; it is still kept symmetrical.)
VIA_NETLINK, VIA_CLIF = "netlink", "clif"

#: The port kinds (child elements of ``<vdp:port>``) this feature owns.
KINDS = ("qbg", "qbh")
_QBG_ATTRS = ("managerid", "typeid", "typeidversion", "instanceid")
_QBH_ATTRS = ("profileid",)
#: Names derive a stable Qbg instance id from guest UUID + MAC when the admin gives none.
_INSTANCE_NS = uuid.UUID("5f0b2c1e-4b7a-4f55-9a39-0c4e2b1d7a61")
_PROFILE_MAX = 39  # IFLA_PORT_PROFILE_MAX is 40 including the NUL


@plain(frozen=True)
class QbgPort:
    """One 802.1Qbg VSI: the guest's MAC and VLAN on an uplink, its VSI type and instance.

    ``ifname`` is the uplink's interface here ("" until the host's ``[uplinks]`` mapping is applied);
    ``vlan`` 0 asks the switch to assign one.  ``via`` is the transport its VSI was made with ("" before
    the first request), ``hint`` the migration hint it was made with, if any."""

    mac: str
    uplink: str
    vlan: int
    managerid: int
    typeid: int
    typeidversion: int
    instance: uuid.UUID
    ifname: str = ""
    via: str = ""
    hint: str = ""

    proto = "qbg"

    def journal(self) -> dict[str, Any]:
        """The record's data: everything needed to rebuild the port's requests later, from the journal."""
        data: dict[str, Any] = {
            "proto": "qbg",
            "uplink": self.uplink,
            "ifname": self.ifname,
            "mac": self.mac,
            "vlan": self.vlan,
            "instance": str(self.instance),
            "managerid": self.managerid,
            "typeid": self.typeid,
            "typeidversion": self.typeidversion,
        }
        if self.via:
            data["via"] = self.via
        if self.hint:
            data["hint"] = self.hint
        return data


@plain(frozen=True)
class QbhPort:
    """One 802.1Qbh port profile on a VF; ``pf_ifname``/``vf`` as learnt once (the VF's interface may be
    gone by teardown time)."""

    mac: str
    uplink: str
    vlan: int
    profile: str
    instance: uuid.UUID
    ifname: str = ""
    pf_ifname: str = ""
    vf: int | None = None

    proto = "qbh"

    def journal(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "proto": "qbh",
            "uplink": self.uplink,
            "ifname": self.ifname,
            "mac": self.mac,
            "vlan": self.vlan,
            "instance": str(self.instance),
            "profile": self.profile,
        }
        if self.pf_ifname:
            data["pf_ifname"] = self.pf_ifname
            data["vf"] = self.vf
        return data


def _uuid5(namespace: uuid.UUID, name: str) -> uuid.UUID:
    """``uuid.uuid5`` without ``hashlib``, whose import loads OpenSSL (~5 ms of the hook's budget)."""
    try:
        from _sha1 import sha1  # CPython's own SHA-1, built in on Debian
    except ImportError:  # pragma: no cover - other builds
        from hashlib import sha1
    return uuid.UUID(bytes=sha1(namespace.bytes + name.encode()).digest()[:16], version=5)


def parse(spec: PortSpec, guest_uuid: uuid.UUID, warnings: list[str]) -> Port:
    """The typed port of a ``<vdp:port>`` whose envelope ``hooks.event`` has checked; ValueError with the
    admin's line when the child breaks a rule (unknown attributes only warn)."""
    kind, params, where = spec.kind, dict(spec.attrs), spec.where
    known = _QBG_ATTRS if kind == "qbg" else _QBH_ATTRS
    for name in params:
        if name not in known:
            warnings.append(f"{where}: <vdp:{kind}> unknown attribute '{name}' ignored")
    kwhere = f"{where} <vdp:{kind}>"
    uplink = spec.uplink or ""
    if kind == "qbg":
        for name in ("managerid", "typeid", "typeidversion"):
            if name not in params:
                raise ValueError(f"{kwhere}: {name}= is required")
        managerid = int_in(params["managerid"], 0, 255, kwhere, "managerid")
        typeid = int_in(params["typeid"], 0, 0xFFFFFF, kwhere, "typeid")
        version = int_in(params["typeidversion"], 0, 255, kwhere, "typeidversion")
        if "instanceid" in params:
            try:
                instance = uuid.UUID(params["instanceid"])
            except ValueError:
                raise ValueError(f"{kwhere}: instanceid='{params['instanceid']}' is not a UUID") from None
        else:
            # Stable across hosts and restarts: the same guest and MAC always name the same VSI.
            instance = _uuid5(_INSTANCE_NS, f"{guest_uuid}/{spec.mac}")
        return QbgPort(spec.mac, uplink, spec.vlan, managerid, typeid, version, instance)
    profile = params.get("profileid", "")
    if not profile or len(profile.encode()) > _PROFILE_MAX:
        raise ValueError(f"{kwhere}: profileid= must be 1..{_PROFILE_MAX} bytes")
    # Like libvirt: the port's instance is the domain UUID.
    return QbhPort(spec.mac, uplink, spec.vlan, profile, guest_uuid)


def transport(data: Mapping[str, Any]) -> str:
    """The transport a Qbg record's VSI was made with.  Journals written before ``via`` existed: only the
    client interface took migration hints, so a record that learnt a ``hint`` came that way."""
    via = data.get("via")
    if via in (VIA_NETLINK, VIA_CLIF):
        return str(via)
    return VIA_CLIF if "hint" in data else VIA_NETLINK


def from_journal(data: Mapping[str, Any]) -> Port:
    """The port a record's data describes (as written by ``journal()``, or by an earlier release)."""
    instance = uuid.UUID(str(data["instance"]))
    common = (str(data["mac"]), str(data.get("uplink") or ""), int(data.get("vlan") or 0))
    if data.get("proto") == "qbg":
        return QbgPort(
            *common, int(data["managerid"]), int(data["typeid"]), int(data["typeidversion"]), instance,
            str(data["ifname"]), transport(data), str(data.get("hint") or ""),
        )  # fmt: skip
    vf = data.get("vf")
    return QbhPort(
        *common, str(data.get("profile") or ""), instance, str(data["ifname"]), str(data.get("pf_ifname") or ""),
        None if vf is None else int(vf),
    )  # fmt: skip


def carried(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a later request for the same port takes over from an earlier one's journal record (the VSI's
    transport too: lldpad reports a VSI's progress only over the transport that created it)."""
    kept = {k: data[k] for k in ("vlan", "pf_ifname", "vf") if k in data}
    if data.get("proto") == "qbg":
        kept["via"] = transport(data)
    return kept


@plain
class PortResult:
    """What one request did for one port (key): ``error`` None when it succeeded.

    ``learnt`` is journaled with the record (a switch-assigned VLAN, the hint, the VF); ``unsent``: the
    request never left this host (its intent record can simply go); ``unanswered``: it went out and got no
    answer within the exchange timeout; ``stuck``: lldpad refused it because an earlier request for the
    VSI still lacks the switch's answer ("busy": it waits, "ended": it gave up); ``how``: how a teardown
    was settled, for its log line."""

    key: str
    error: HookError | None = None
    learnt: dict[str, object] = field(default_factory=dict)
    unsent: bool = False
    unanswered: bool = False
    stuck: str = ""
    how: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None
