"""lldpad's client interface: the messages, built and parsed (pure; the connection is ``vdp.qbg.clif``).

lldpad listens on the abstract unix datagram socket ``@/com/intel/lldpad`` (one per network namespace);
a client binds ``@/com/intel/lldpad/<pid>`` and exchanges ASCII messages with it.  The library opens and
closes that connection (so our socket is named as lldpad's tools name theirs); the messages themselves are
built and parsed here, in the exact form ``lldptool`` and ``vdptool`` send (traced with strace against
lldpad 1.1+git20221028; openlldp ``include/clif_msgs.h``, ``qbg/vdp22_cmds.c``, ``qbg/vdp_ascii.c``):

* request  ``M<module:8x>C3<cmd:2x><ops:8x><len(ifname):2x><ifname>02<tlvid:8x>{<len:2x><key>[<len:4x><value>]}``
  (``C3``: command message, version 3; ``02``: the nearest customer bridge agent),
* reply    ``R<status:2x>C3<cmd:2x><ops:8x><len(ifname):2x><ifname>[<tlvid:8x><payload>]``,
* event    ``M<module:8x>E<level:2x>{<len:4x><key/value list of one VSI>}`` (to attached clients only),
* ping ``P`` -> ``R00PPONG<pid>``, attach ``A<module hex>`` -> ``R00A``, detach ``D`` -> ``R00D``.

The connection that carries them (ctypes, ``liblldp_clif.so.1``) is :mod:`vdp.qbg.clif`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from hooks.errors import FeatureError, HookError, PeerRefused, PeerUnavailable
from hooks.plain import plain
from vdp.status import VDP22_SUCCESS, split_vdp22, vdp22_message

__all__ = [
    "Evb22Tlv",
    "EvbStatus",
    "VsiCommand",
    "VsiReply",
]

# -- protocol constants (include/clif_msgs.h, include/lldp*.h, include/qbg_vdp22*.h) -----------------------

MOD_CMD = "M"
CMD_REQUEST = "C"
CMD_RESPONSE = "R"
EVENT_MSG = "E"
CLIF_MSG_VERSION = 3
NEAREST_CUSTOMER_BRIDGE = 2  # agent type as the clif encodes it (lldptool -g ncb)
MAX_CLIF_MSGBUF = 4096

# command codes (lldptool/vdptool enum)
CMD_GETTLV = 1
CMD_SETTLV = 2

# ops bits (include/qbg_vdp22_clif.h; the same values lldptool uses)
OP_LOCAL = 0x01
OP_NEIGHBOR = 0x02
OP_ARG = 0x04
OP_ARGVAL = 0x08
OP_CONFIG = 0x10
OP_FID_POS = 8  # number of filter arguments, second byte of ops

# module ids / TLV ids
LLDP_MOD_MAND = 0x00000001  # lldptool addresses TLV gets of other modules through this id
LLDP_MOD_VDP22 = 0x000080C4
TLVID_EVB22 = 0x0080C20D  # IEEE 802.1Qbg-2012 EVB TLV: OUI 00-80-c2, subtype 0x0d
TLVID_VDP_DRAFT = 0x001B4002  # draft 0.2 VDP: OUI 00-1b-3f + 1, subtype 2 (also its module id)

# VDP22 request modes = the tlvid vdptool sends (enum vdp22_modes)
VDP22_MODES = {"preassoc": 1, "preassoc-rr": 2, "assoc": 3, "deassoc": 4}
HINTS = ("none", "to", "from")

# lldpad command status (include/lldpad_status.h, enum vdp22_cmd_status)
CMD_SUCCESS = 0
_CMD_STATUS = {
    1: "failed",
    2: "device not found or inactive",
    3: "agent instance for device not found",
    4: "invalid command",
    5: "invalid parameters",
    6: "peer feature not present",
    7: "version not compatible",
    8: "device not capable",
    9: "command not applicable",
    10: "access denied",
    11: "TLV does not support agent type",
    13: "VDP protocol not supported on interface",
    14: "not enough memory",
    15: "VSI association in progress",
}
CMD_DEVICE_NOT_FOUND = 2
CMD_AGENT_NOT_FOUND = 3
CMD_INVALID = 4
CMD_BAD_PARAMS = 5
CMD_NOT_CAPABLE = 8
CMD_NOT_APPLICABLE = 9
CMD_VDP_PROT_NO_SUPPORT = 13
CMD_VDP_BUSY = 15


# -- pure message building and parsing ---------------------------------------------------------------------


def _kv(key: str, value: str | None = None) -> str:
    """One argument as lldptool/vdptool encode it: 2-hex-digit key length, key, 4-hex-digit value length, value."""
    out = f"{len(key):02x}{key}"
    if value is not None:
        out += f"{len(value):04x}{value}"
    return out


def build_command(
    module: int,
    cmd: int,
    ops: int,
    ifname: str,
    tlvid: int,
    args: Sequence[tuple[str, str | None]] = (),
) -> bytes:
    """A module command message (see the module docstring) with ``args`` as (key, value-or-None)."""
    if not 0 < len(ifname) <= 15:
        raise ValueError(f"bad interface name {ifname!r}")
    head = (
        f"{MOD_CMD}{module:08x}{CMD_REQUEST}{CLIF_MSG_VERSION:1x}{cmd:02x}{ops:08x}"
        f"{len(ifname):02x}{ifname}{NEAREST_CUSTOMER_BRIDGE:02x}{tlvid:08x}"
    )
    return (head + "".join(_kv(k, v) for k, v in args)).encode("ascii")


def evb_request(ifname: str, *, neighbour: bool = False) -> bytes:
    """``lldptool [-n] -t -i IF -g ncb -V evb``: the local (or neighbour's) EVB22 TLV."""
    return build_command(LLDP_MOD_MAND, CMD_GETTLV, OP_NEIGHBOR if neighbour else OP_LOCAL, ifname, TLVID_EVB22)


def config_request(ifname: str, tlvid: int, arg: str, *, module: int = LLDP_MOD_MAND) -> bytes:
    """``lldptool -t -i IF -g ncb -V TLV -c ARG``: one configuration value of a TLV's module."""
    return build_command(module, CMD_GETTLV, OP_CONFIG | OP_ARG | OP_LOCAL, ifname, tlvid, [(arg, None)])


def vdp22_table_request(ifname: str, mode: str = "assoc") -> bytes:
    """``vdptool -i IF -t -V MODE``: the VSIs in ``mode`` (also tells whether VDP22 serves ``ifname``)."""
    return build_command(LLDP_MOD_VDP22, CMD_GETTLV, OP_LOCAL, ifname, VDP22_MODES[mode])


def mgrid2(manager_id: int) -> str:
    """The VDP22 manager id field for a one-byte manager id.

    lldpad reads a string of hex digits as bytes (``vdp_str2uuid``), so two hex digits put exactly this
    byte first in the 16-byte field; that is also what a netlink request's ``vsi_mgr_id`` becomes, and
    lldpad echoes such an id back in decimal.
    """
    if not 0 <= manager_id <= 0xFF:
        raise ValueError(f"manager id {manager_id} out of range 0..255")
    return f"{manager_id:02x}"


def vsi_request(
    ifname: str,
    *,
    mode: str,
    manager_id: int,
    type_id: int,
    type_version: int,
    instance: uuid.UUID,
    mac: str,
    vlan: int,
    hints: str = "none",
) -> bytes:
    """One VSI command in vdptool's length-prefixed form, arguments in the order of
    ``vdptool -i IF -T -W -V MODE -c mode=M -c mgrid2=ID -c typeid=T -c uuid=U -c typeidver=V -c hints=H
    -c filter=VLAN-MAC`` (byte for byte what that command sends)."""
    if mode not in VDP22_MODES:
        raise ValueError(f"VSI mode {mode!r}: use one of {', '.join(VDP22_MODES)}")
    if hints not in HINTS:
        raise ValueError(f"migration hints {hints!r}: use one of {', '.join(HINTS)}")
    if not 0 <= type_id <= 0xFFFFFF:
        raise ValueError(f"VSI type id {type_id} out of range 0..16777215")
    if not 0 <= type_version <= 0xFF:
        raise ValueError(f"VSI type version {type_version} out of range 0..255")
    if not 0 <= vlan <= 4094:
        raise ValueError(f"VLAN {vlan} out of range 0..4094 (0: the switch chooses)")
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac):
        raise ValueError(f"MAC address {mac!r} is not of the form xx:xx:xx:xx:xx:xx")
    args = [
        ("mode", mode),
        ("mgrid2", mgrid2(manager_id)),
        ("typeid", str(type_id)),
        ("uuid", str(instance)),
        ("typeidver", str(type_version)),
        ("hints", hints),
        ("filter", f"{vlan}-{mac.lower()}"),
    ]
    filters = 1
    ops = OP_CONFIG | OP_ARG | OP_ARGVAL | (filters << OP_FID_POS)
    return build_command(LLDP_MOD_VDP22, CMD_SETTLV, ops, ifname, VDP22_MODES[mode], args)


@plain(frozen=True)
class Reply:
    """lldpad's answer to a command: status (0 = success) and what follows the echoed header."""

    status: int
    body: str

    @property
    def ok(self) -> bool:
        return self.status == CMD_SUCCESS


def parse_reply(raw: bytes) -> Reply:
    """Split ``R<status:2x>...``; ``body`` is everything after the status."""
    text = raw.decode("ascii", "replace")
    if len(text) < 3 or text[0] != CMD_RESPONSE:
        raise ValueError(f"not an lldpad reply: {text[:40]!r}")
    return Reply(int(text[1:3], 16), text[3:])


def _strip_command_header(body: str, *, with_tlvid: bool = True) -> str:
    """Drop the echoed ``C3<cmd><ops><len><ifname>[<tlvid>]`` from a reply body."""
    if not body.startswith(f"{CMD_REQUEST}{CLIF_MSG_VERSION:1x}"):
        raise ValueError(f"unexpected reply body {body[:40]!r}")
    pos = 2 + 2 + 8
    iflen = int(body[pos : pos + 2], 16)
    pos += 2 + iflen
    if with_tlvid:
        pos += 8
    return body[pos:]


def parse_args(text: str, *, values: bool = True) -> list[tuple[str, str]]:
    """Decode a ``<len:2x><key><len:4x><value>`` list (the values' lengths are 4 hex digits)."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        klen = int(text[pos : pos + 2], 16)
        key = text[pos + 2 : pos + 2 + klen]
        pos += 2 + klen
        value = ""
        if values:
            vlen = int(text[pos : pos + 4], 16)
            value = text[pos + 4 : pos + 4 + vlen]
            pos += 4 + vlen
        out.append((key, value))
    return out


def parse_vsi_list(text: str) -> list[list[tuple[str, str]]]:
    """Decode ``{<len:4x><key/value list>}``: the VSI records of a table reply or an event."""
    vsis = []
    pos = 0
    while pos + 4 <= len(text):
        n = int(text[pos : pos + 4], 16)
        vsis.append(parse_args(text[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return vsis


def parse_event(raw: bytes) -> tuple[int, list[list[tuple[str, str]]]] | None:
    """A VDP22 event ``M<module>E<level>{vsi}`` as (module, VSI records); None for other messages."""
    text = raw.decode("ascii", "replace")
    if len(text) < 12 or text[0] != MOD_CMD or text[9] != EVENT_MSG:
        return None
    return int(text[1:9], 16), parse_vsi_list(text[12:])


def _bit(value: int, shift: int, width: int = 1) -> int:
    return (value >> shift) & ((1 << width) - 1)


@plain(frozen=True)
class Evb22Tlv:
    """The five bytes of an IEEE 802.1Qbg-2012 EVB TLV after OUI and subtype (``include/lldp_evb22.h``)::

    u8 bridge_s;   bit 2 bgid, bit 1 rrcap, bit 0 rrctr
    u8 station_s;  bit 3 sgid, bit 2 rrreq, bits 1-0 rrstat
    u8 r_rte;      bits 7-5 retries, bits 4-0 rte
    u8 evb_mode;   bits 7-6 mode (1 bridge, 2 station), bit 5 r/l, bits 4-0 rwd
    u8 rl_rka;     bit 5 r/l, bits 4-0 rka
    """

    bridge_s: int
    station_s: int
    r_rte: int
    evb_mode: int
    rl_rka: int

    @classmethod
    def from_bytes(cls, info: bytes) -> Evb22Tlv:
        if len(info) != 5:
            raise ValueError(f"EVB22 TLV info must be 5 bytes, got {len(info)}")
        return cls(*info)

    @property
    def mode(self) -> str:
        """``"bridge"``, ``"station"`` or ``"unknown"``."""
        return {1: "bridge", 2: "station"}.get(_bit(self.evb_mode, 6, 2), "unknown")

    @property
    def rr_capable(self) -> bool:
        return bool(_bit(self.bridge_s, 1))

    @property
    def rr_control(self) -> bool:
        """The bridge turned reflective relay on for this port."""
        return bool(_bit(self.bridge_s, 0))

    @property
    def rr_requested(self) -> bool:
        return bool(_bit(self.station_s, 2))

    @property
    def rr_status(self) -> int:
        return _bit(self.station_s, 0, 2)

    @property
    def retries(self) -> int:
        return _bit(self.r_rte, 5, 3)

    @property
    def rte(self) -> int:
        return _bit(self.r_rte, 0, 5)

    @property
    def rwd(self) -> int:
        return _bit(self.evb_mode, 0, 5)

    @property
    def rwd_remote(self) -> bool:
        return bool(_bit(self.evb_mode, 5))

    @property
    def rka(self) -> int:
        return _bit(self.rl_rka, 0, 5)

    @property
    def rka_remote(self) -> bool:
        return bool(_bit(self.rl_rka, 5))


def parse_evb_reply(body: str) -> Evb22Tlv | None:
    """The EVB22 TLV in a TLV-get reply body (None when lldpad has none: not sent / not received)."""
    rest = _strip_command_header(body)
    if not rest:
        return None
    raw = bytes.fromhex(rest)
    header = int.from_bytes(raw[:2], "big")
    tlv_type, length = header >> 9, header & 0x1FF
    info = raw[2 : 2 + length]
    if tlv_type != 127 or length != 9 or int.from_bytes(info[:4], "big") != TLVID_EVB22:
        raise ValueError(f"not an EVB22 TLV: {rest!r}")
    return Evb22Tlv.from_bytes(info[4:])


@plain(frozen=True)
class EvbStatus:
    """EVB (IEEE 802.1Qbg-2012) on one interface, as lldpad sees it.

    ``enabled``: lldpad transmits the EVB TLV here (``enableTx``); ``role``: configured ``evbmode``;
    ``local``/``neighbour``: the TLV sent / received (None when there is none).
    """

    ifname: str
    enabled: bool
    role: str | None
    local: Evb22Tlv | None
    neighbour: Evb22Tlv | None

    @property
    def negotiated(self) -> bool:
        """We are a station sending EVB and the link partner answers as an EVB bridge."""
        return (
            self.enabled
            and self.local is not None
            and self.local.mode == "station"
            and self.neighbour is not None
            and self.neighbour.mode == "bridge"
        )

    @property
    def settled(self) -> bool:
        """Negotiated, and our TLV already carries the bridge's values (timers marked remote, same bridge
        status).  During the first second or so after negotiation starts this is still false, and a VSI
        associated then can be dropped by the bridge at once (measured with lldpad's bridge role)."""
        return (
            self.negotiated
            and self.local is not None
            and self.neighbour is not None
            and self.local.rwd_remote
            and self.local.rka_remote
            and self.local.bridge_s == self.neighbour.bridge_s
        )


@plain(frozen=True)
class VsiReply:
    """What lldpad reported for one VSI request once the switch answered (the vdp22 event).

    ``mode`` is the state lldpad reports (``deassoc`` after a refused association); ``response`` the raw
    VDP22 response (low byte status, high byte error bits, see ``vdp.status``); ``vlan`` the VLAN of the
    first filter (the switch's choice when 0 was requested); ``fields`` every key/value as sent.
    """

    requested: str
    mode: str
    response: int
    vlan: int | None
    filters: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def status(self) -> int:
        return split_vdp22(self.response).status

    @property
    def error_bits(self) -> int:
        return split_vdp22(self.response).error_bits

    @property
    def ok(self) -> bool:
        """The switch accepted: status success, no error bits, and the VSI is in the requested state."""
        return self.response == VDP22_SUCCESS and self.mode == self.requested

    @property
    def message(self) -> str:
        """One line for the admin."""
        text = vdp22_message(self.response)
        if self.mode != self.requested and self.response == VDP22_SUCCESS:
            text = f"lldpad reports the VSI as {self.mode}, not {self.requested}"
        return text


@plain(frozen=True)
class VsiCommand:
    """One VSI request for :meth:`Clif.vsi_many` (the arguments of :func:`vsi_request`)."""

    ifname: str
    mode: str
    manager_id: int
    type_id: int
    type_version: int
    instance: uuid.UUID
    mac: str
    vlan: int
    hints: str = "none"


#: vdptool's mode names -> the request names the rest of the product (and the veto line) uses.
REQUEST_LABELS = {"preassoc": "PREASSOCIATE", "preassoc-rr": "PREASSOCIATE_RR", "assoc": "ASSOCIATE",
                  "deassoc": "DISASSOCIATE"}


def vsi_reply_from_event(requested: str, record: Sequence[tuple[str, str]]) -> VsiReply:
    """Build a :class:`VsiReply` from one decoded event record."""
    values = dict(record)
    filters = tuple(v for k, v in record if k == "filter")
    vlan = None
    if filters:
        first = filters[0].split("-", 1)[0]
        if first.isdigit():
            vlan = int(first) & 0x0FFF  # the top 4 bits carry the priority (QoS)
    hints = values.get("hints", "")
    return VsiReply(
        requested=requested,
        mode=values.get("mode", ""),
        response=int(hints) if hints.isdigit() else 0,
        vlan=vlan,
        filters=filters,
        fields=tuple(record),
    )


def _vsi_records(raw: bytes) -> list[list[tuple[str, str]]]:
    """The VSI records of a VDP22 event message; [] for anything else."""
    try:
        event = parse_event(raw)
    except ValueError:
        return []
    if event is None or event[0] != LLDP_MOD_VDP22:
        return []
    return event[1]


def _status_error(status: int, what: str, ifname: str) -> HookError:
    """Map a non-zero lldpad command status to the product's exception with an admin hint."""
    text = _CMD_STATUS.get(status, f"status {status}")
    msg = f"lldpad refused {what} on {ifname}: {text}"
    if status in (CMD_DEVICE_NOT_FOUND, CMD_AGENT_NOT_FOUND):
        return PeerUnavailable(
            msg,
            hint=f"check that {ifname} exists and is up, and is listed for EVB in lldpad's configuration "
            f"(lldptool -T -i {ifname} -g ncb -V evb -c enableTx=yes -c evbmode=station)",
        )
    if status in (CMD_NOT_APPLICABLE, CMD_NOT_CAPABLE):
        return PeerUnavailable(
            msg + " (the interface runs VDP in bridge role or not at all)",
            hint=f'set evbmode = "station" for {ifname} in lldpad\'s configuration and restart lldpad',
        )
    if status == CMD_VDP_PROT_NO_SUPPORT:
        return PeerUnavailable(msg, hint=f"check EVB negotiation: lldptool -t -n -i {ifname} -g ncb -V evb")
    if status == CMD_VDP_BUSY:
        return PeerRefused(msg, hint="a request for this VSI is still in progress; retry in a moment")
    if status in (CMD_INVALID, CMD_BAD_PARAMS):
        return PeerRefused(msg, hint="check the port's MAC, VLAN, VSI type and instance id in the guest metadata")
    return FeatureError(msg, hint="see lldpad's log (run lldpad -V7 for details)")
