"""Pure encode/decode of the IEEE 802.1Qbg-2012 frames a bridge exchanges with an lldpad station.

No sockets, no root: everything here maps bytes to values and back, so the unit tests can check it
byte for byte against frames captured between two real lldpad daemons.

Three layers, each a plain function pair:

* LLDP (ethertype 0x88cc) carrying the EVB TLV (organizationally specific TLV, OUI 00-80-C2, subtype 0x0d)::

    struct evb22_tlv { u8 oui[3]; u8 sub;
                       u8 bridge_s;   /* bgid 0x04, rrcap 0x02, rrctr 0x01 */
                       u8 station_s;  /* sgid 0x08, rrreq 0x04, rrstat 0x03 */
                       u8 r_rte;      /* retries << 5 | rte */
                       u8 evb_mode;   /* mode << 6 (1 bridge, 2 station) | r/l 0x20 | rwd */
                       u8 rl_rka; };  /* r/l 0x20 | rka */

* ECP22 (ethertype 0x8940): a 4-byte header ``u16 version << 12 | op << 10 | subtype; u16 seqno``
  (version 1, op 0 request / 1 ack, subtype 1 = VDP), then the upper-layer data.
* VDP22 TLVs inside ECP requests: a 16-bit header ``type << 9 | length``; the manager-id TLV (type 5,
  16 bytes) first, then VSI TLVs (1 pre-associate, 2 pre-associate with resource reservation,
  3 associate, 4 de-associate)::

    u8 status; u8 type_id[3]; u8 type_version; u8 id_format; u8 vsi_id[16];
    u8 filter_format; u16 entries; then per entry (VID 2, MAC/VID 8, GROUP/VID 6, GROUP/MAC/VID 12 bytes)

  In a request the status byte carries the migration hints (0x10 M: this port is the migration target,
  0x20 S: the VSI is leaving this port); in a response 0x40 = acknowledgement, 0x20 = keep (rejected,
  previous state kept), 0x10 = hard error, low nibble = status code.  A response without 0x40 and with
  mode de-associate is a switch-initiated de-association.  A filter's 16-bit VLAN field is
  ``qos << 12 | vid`` (the top bit of the qos nibble is the PS bit).

Facts from openlldp (qbg/ecp22.c, qbg/vdp22sm.c, include/qbg_vdp22.h, lldp_evb22.c) and from frames
captured between two lldpad 1.1 daemons; the code is this project's own.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

__all__ = [
    "ECP22_ACK",
    "ECP22_REQUEST",
    "ECP22_SUBTYPE_VDP",
    "ETH_P_ECP22",
    "ETH_P_LLDP",
    "EVB_MODE_BRIDGE",
    "EVB_MODE_STATION",
    "HINT_M",
    "HINT_S",
    "MODE_NAMES",
    "NEAREST_CUSTOMER_BRIDGE",
    "STATUS_ACK",
    "STATUS_HARD",
    "STATUS_KEEP",
    "EcpFrame",
    "EvbTlv",
    "FilterEntry",
    "VdpMessage",
    "VsiTlv",
    "WireError",
    "decode_ecp",
    "decode_ethernet",
    "decode_evb",
    "decode_lldpdu",
    "decode_vdp",
    "encode_ecp",
    "encode_ethernet",
    "encode_evb",
    "encode_lldpdu",
    "encode_vdp",
    "encode_vsi",
    "find_evb",
    "mac_bytes",
    "mac_str",
    "mgrid_bytes",
    "mgrid_str",
]

ETH_P_LLDP = 0x88CC
ETH_P_ECP22 = 0x8940
# LLDP's nearest-customer-bridge group address; lldpad sends ECP requests, acks and VDP there too.
NEAREST_CUSTOMER_BRIDGE = bytes.fromhex("0180c2000000")
_ETH_ZLEN = 60

# --- LLDP / EVB ------------------------------------------------------------------------------------

LLDP_TLV_END = 0
LLDP_TLV_CHASSIS_ID = 1
LLDP_TLV_PORT_ID = 2
LLDP_TLV_TTL = 3
LLDP_TLV_ORG = 127
CHASSIS_SUBTYPE_MAC = 4
PORT_SUBTYPE_MAC = 3
PORT_SUBTYPE_IFNAME = 5
EVB22_OUI_SUBTYPE = bytes.fromhex("0080c20d")

EVB_MODE_BRIDGE = 1
EVB_MODE_STATION = 2
EVB_BGID = 0x04
EVB_RRCAP = 0x02
EVB_RRCTR = 0x01
EVB_SGID = 0x08
EVB_RRREQ = 0x04
EVB_RRSTAT_MASK = 0x03
_EVB_ROL = 0x20


class WireError(ValueError):
    """Bytes that do not decode as the expected frame or TLV."""


@dataclass(frozen=True)
class EvbTlv:
    """The five value bytes of the EVB22 TLV, unpacked into fields."""

    bridge_status: int = 0
    station_status: int = 0
    retries: int = 3
    rte: int = 8
    mode: int = EVB_MODE_BRIDGE
    rwd_remote: bool = False
    rwd: int = 20
    rka_remote: bool = False
    rka: int = 20


def encode_evb(tlv: EvbTlv) -> bytes:
    """The EVB TLV's information string (OUI, subtype, five bytes), without the LLDP TLV header."""
    return EVB22_OUI_SUBTYPE + bytes(
        (
            tlv.bridge_status & 0xFF,
            tlv.station_status & 0xFF,
            (tlv.retries & 0x7) << 5 | (tlv.rte & 0x1F),
            (tlv.mode & 0x3) << 6 | (_EVB_ROL if tlv.rwd_remote else 0) | (tlv.rwd & 0x1F),
            (_EVB_ROL if tlv.rka_remote else 0) | (tlv.rka & 0x1F),
        )
    )


def decode_evb(info: bytes) -> EvbTlv:
    """Inverse of :func:`encode_evb`."""
    if len(info) < 9 or info[:4] != EVB22_OUI_SUBTYPE:
        raise WireError(f"not an EVB22 TLV: {info.hex()}")
    bridge_s, station_s, r_rte, evb_mode, rl_rka = info[4:9]
    return EvbTlv(
        bridge_status=bridge_s,
        station_status=station_s,
        retries=r_rte >> 5,
        rte=r_rte & 0x1F,
        mode=evb_mode >> 6,
        rwd_remote=bool(evb_mode & _EVB_ROL),
        rwd=evb_mode & 0x1F,
        rka_remote=bool(rl_rka & _EVB_ROL),
        rka=rl_rka & 0x1F,
    )


def _lldp_tlv(tlv_type: int, value: bytes) -> bytes:
    if len(value) > 0x1FF:
        raise WireError("LLDP TLV value longer than 511 bytes")
    return struct.pack("!H", tlv_type << 9 | len(value)) + value


def encode_lldpdu(chassis_mac: bytes, port_id: bytes, ttl: int, evb: EvbTlv | None,
                  *, port_subtype: int = PORT_SUBTYPE_MAC) -> bytes:
    """An LLDPDU: chassis id (MAC), port id, TTL, the EVB TLV when given, end."""
    out = _lldp_tlv(LLDP_TLV_CHASSIS_ID, bytes((CHASSIS_SUBTYPE_MAC,)) + chassis_mac)
    out += _lldp_tlv(LLDP_TLV_PORT_ID, bytes((port_subtype,)) + port_id)
    out += _lldp_tlv(LLDP_TLV_TTL, struct.pack("!H", ttl))
    if evb is not None:
        out += _lldp_tlv(LLDP_TLV_ORG, encode_evb(evb))
    return out + _lldp_tlv(LLDP_TLV_END, b"")


def decode_lldpdu(data: bytes) -> list[tuple[int, bytes]]:
    """The LLDPDU's TLVs as (type, value) up to the end TLV (trailing padding ignored)."""
    tlvs: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 2 <= len(data):
        (head,) = struct.unpack_from("!H", data, pos)
        tlv_type, length = head >> 9, head & 0x1FF
        pos += 2
        if pos + length > len(data):
            raise WireError(f"LLDP TLV type {tlv_type} overruns the frame")
        if tlv_type == LLDP_TLV_END:
            return tlvs
        tlvs.append((tlv_type, data[pos : pos + length]))
        pos += length
    raise WireError("LLDPDU without end TLV")


def find_evb(tlvs: list[tuple[int, bytes]]) -> EvbTlv | None:
    """The EVB22 TLV among decoded LLDP TLVs, if any."""
    for tlv_type, value in tlvs:
        if tlv_type == LLDP_TLV_ORG and value[:4] == EVB22_OUI_SUBTYPE:
            return decode_evb(value)
    return None


# --- Ethernet --------------------------------------------------------------------------------------


def encode_ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, *, pad: bool = True) -> bytes:
    """An Ethernet frame without FCS, padded to 60 bytes when ``pad`` (LLDP); lldpad never pads ECP."""
    frame = dst + src + struct.pack("!H", ethertype) + payload
    if pad and len(frame) < _ETH_ZLEN:
        frame += bytes(_ETH_ZLEN - len(frame))
    return frame


def decode_ethernet(frame: bytes) -> tuple[bytes, bytes, int, bytes]:
    """(dst, src, ethertype, payload)."""
    if len(frame) < 14:
        raise WireError("short Ethernet frame")
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    return frame[0:6], frame[6:12], ethertype, frame[14:]


def mac_bytes(mac: str) -> bytes:
    """``52:54:00:11:22:33`` -> 6 bytes."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise WireError(f"not a MAC address: {mac!r}")
    return raw


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


# --- ECP22 -----------------------------------------------------------------------------------------

ECP22_VERSION = 1
ECP22_REQUEST = 0
ECP22_ACK = 1
ECP22_SUBTYPE_VDP = 1


@dataclass(frozen=True)
class EcpFrame:
    """An ECP22 data unit: header fields and the upper-layer payload."""

    op: int
    seqno: int
    payload: bytes = b""
    subtype: int = ECP22_SUBTYPE_VDP
    version: int = ECP22_VERSION


def encode_ecp(ecp: EcpFrame) -> bytes:
    head = (ecp.version & 0xF) << 12 | (ecp.op & 0x3) << 10 | (ecp.subtype & 0x3FF)
    return struct.pack("!HH", head, ecp.seqno & 0xFFFF) + ecp.payload


def decode_ecp(data: bytes) -> EcpFrame:
    if len(data) < 4:
        raise WireError("short ECP22 header")
    head, seqno = struct.unpack_from("!HH", data, 0)
    return EcpFrame(op=(head >> 10) & 0x3, seqno=seqno, payload=data[4:], subtype=head & 0x3FF,
                    version=head >> 12)


# --- VDP22 -----------------------------------------------------------------------------------------

VDP22_END = 0
VDP22_PREASSOC = 1
VDP22_PREASSOC_RR = 2
VDP22_ASSOC = 3
VDP22_DEASSOC = 4
VDP22_MGRID = 5
VDP22_OUI = 0x7F
MODE_NAMES = {VDP22_PREASSOC: "preassoc", VDP22_PREASSOC_RR: "preassoc-rr", VDP22_ASSOC: "assoc",
              VDP22_DEASSOC: "deassoc"}

HINT_M = 0x10  # request: migration target (lldpad VDP22_MIGTO, vdptool hints=to)
HINT_S = 0x20  # request: migration source (lldpad VDP22_MIGFROM, vdptool hints=from)
STATUS_ACK = 0x40
STATUS_KEEP = 0x20
STATUS_HARD = 0x10
STATUS_CODE_MASK = 0x0F

ID_FMT_UUID = 5
FFMT_VID = 1
FFMT_MACVID = 2
FFMT_GROUPVID = 3
FFMT_GROUPMACVID = 4
_FILTER_SIZES = {FFMT_VID: 2, FFMT_MACVID: 8, FFMT_GROUPVID: 6, FFMT_GROUPMACVID: 12}
_VSI_FIXED = 25  # status .. entry count


@dataclass(frozen=True)
class FilterEntry:
    """One filter-info entry; ``mac``/``group`` are used by the formats that carry them."""

    vid: int
    qos: int = 0
    mac: bytes | None = None
    group: int | None = None

    def with_vid(self, vid: int) -> FilterEntry:
        return FilterEntry(vid=vid, qos=self.qos, mac=self.mac, group=self.group)


@dataclass(frozen=True)
class VsiTlv:
    """A VSI TLV (pre-associate, pre-associate with RR, associate or de-associate)."""

    mode: int
    status: int
    type_id: int
    type_version: int
    vsi_id: bytes
    filter_format: int
    filters: tuple[FilterEntry, ...] = ()
    id_format: int = ID_FMT_UUID

    @property
    def instance(self) -> str:
        """The VSI id as a UUID string (its 16 bytes printed as one, whatever the id format)."""
        return str(uuid.UUID(bytes=self.vsi_id))


@dataclass(frozen=True)
class VdpMessage:
    """The upper-layer data of one ECP request: a manager id and the VSI TLVs that follow it."""

    mgrid: bytes
    vsis: tuple[VsiTlv, ...] = field(default_factory=tuple)
    # (type, value) of TLVs we do not interpret (organizationally defined ones), kept for logging.
    other: tuple[tuple[int, bytes], ...] = ()


def mgrid_bytes(text: str) -> bytes:
    """vdptool's ``mgrid2``: up to 16 characters, NUL padded."""
    raw = text.encode()
    if len(raw) > 16:
        raise WireError("manager id longer than 16 bytes")
    return raw.ljust(16, b"\0")


def mgrid_str(raw: bytes) -> str:
    """Printable manager ids as text, others as hex."""
    text = raw.rstrip(b"\0")
    return text.decode() if text and all(32 <= b < 127 for b in text) else raw.hex()


def _vdp_tlv(tlv_type: int, value: bytes) -> bytes:
    return struct.pack("!H", (tlv_type & 0x7F) << 9 | (len(value) & 0x1FF)) + value


def _encode_filter(fmt: int, entry: FilterEntry) -> bytes:
    vlan = struct.pack("!H", (entry.qos & 0xF) << 12 | (entry.vid & 0xFFF))
    group = struct.pack("!I", entry.group or 0)
    mac = entry.mac if entry.mac is not None else bytes(6)
    if fmt == FFMT_VID:
        return vlan
    if fmt == FFMT_MACVID:
        return mac + vlan
    if fmt == FFMT_GROUPVID:
        return group + vlan
    if fmt == FFMT_GROUPMACVID:
        return group + mac + vlan
    raise WireError(f"unknown filter format {fmt}")


def _decode_filter(fmt: int, raw: bytes) -> FilterEntry:
    (vlan,) = struct.unpack("!H", raw[-2:])
    vid, qos = vlan & 0xFFF, vlan >> 12
    if fmt == FFMT_VID:
        return FilterEntry(vid=vid, qos=qos)
    if fmt == FFMT_MACVID:
        return FilterEntry(vid=vid, qos=qos, mac=raw[0:6])
    (group,) = struct.unpack("!I", raw[0:4])
    if fmt == FFMT_GROUPVID:
        return FilterEntry(vid=vid, qos=qos, group=group)
    return FilterEntry(vid=vid, qos=qos, group=group, mac=raw[4:10])


def encode_vsi(vsi: VsiTlv) -> bytes:
    """One VSI TLV with its header."""
    if len(vsi.vsi_id) != 16:
        raise WireError("VSI id must be 16 bytes")
    body = bytes((vsi.status & 0xFF,)) + (vsi.type_id & 0xFFFFFF).to_bytes(3, "big")
    body += bytes((vsi.type_version & 0xFF, vsi.id_format & 0xFF)) + vsi.vsi_id
    body += struct.pack("!BH", vsi.filter_format, len(vsi.filters))
    body += b"".join(_encode_filter(vsi.filter_format, f) for f in vsi.filters)
    return _vdp_tlv(vsi.mode, body)


def encode_vdp(mgrid: bytes, vsis: list[VsiTlv] | tuple[VsiTlv, ...], *, end_tlv: bool = True) -> bytes:
    """Manager-id TLV, the VSI TLVs, and (by default) an end TLV.

    lldpad itself sends no end TLV; we add one because lldpad's parser walks TLVs until it meets type 0
    and would otherwise read whatever an earlier, longer frame left in its input buffer.
    """
    if len(mgrid) != 16:
        raise WireError("manager id must be 16 bytes")
    out = _vdp_tlv(VDP22_MGRID, mgrid) + b"".join(encode_vsi(v) for v in vsis)
    return out + (_vdp_tlv(VDP22_END, b"") if end_tlv else b"")


def _decode_vsi(mode: int, value: bytes) -> VsiTlv:
    if len(value) < _VSI_FIXED:
        raise WireError(f"VSI TLV too short ({len(value)} bytes)")
    status = value[0]
    type_id = int.from_bytes(value[1:4], "big")
    type_version, id_format = value[4], value[5]
    vsi_id = value[6:22]
    fmt, count = struct.unpack_from("!BH", value, 22)
    size = _FILTER_SIZES.get(fmt)
    if size is None:
        raise WireError(f"unknown filter format {fmt}")
    if len(value) != _VSI_FIXED + count * size:
        raise WireError(f"VSI TLV length {len(value)} does not match {count} entries of format {fmt}")
    filters = tuple(
        _decode_filter(fmt, value[_VSI_FIXED + i * size : _VSI_FIXED + (i + 1) * size]) for i in range(count)
    )
    return VsiTlv(mode=mode, status=status, type_id=type_id, type_version=type_version, vsi_id=vsi_id,
                  filter_format=fmt, filters=filters, id_format=id_format)


def decode_vdp(data: bytes) -> VdpMessage:
    """Decode ECP upper-layer data; the manager-id TLV must come first (as lldpad requires)."""
    mgrid: bytes | None = None
    vsis: list[VsiTlv] = []
    other: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 2 <= len(data):
        (head,) = struct.unpack_from("!H", data, pos)
        tlv_type, length = head >> 9, head & 0x1FF
        pos += 2
        if tlv_type == VDP22_END:
            break
        if pos + length > len(data):
            raise WireError(f"VDP TLV type {tlv_type} overruns the data")
        value = data[pos : pos + length]
        pos += length
        if tlv_type == VDP22_MGRID:
            if mgrid is not None or vsis:
                raise WireError("manager-id TLV not first or duplicated")
            if length != 16:
                raise WireError(f"manager-id TLV of length {length}")
            mgrid = value
        elif mgrid is None:
            raise WireError("VDP data does not start with a manager-id TLV")
        elif tlv_type in MODE_NAMES:
            vsis.append(_decode_vsi(tlv_type, value))
        else:
            other.append((tlv_type, value))
    if mgrid is None:
        raise WireError("VDP data without manager-id TLV")
    return VdpMessage(mgrid=mgrid, vsis=tuple(vsis), other=tuple(other))
