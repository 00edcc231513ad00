"""Byte-for-byte tests of the 802.1Qbg-2012 wire codec used by the lab's switch peer.

The golden frames were captured with tcpdump on a veth pair between two real lldpad 1.1+git20221028
daemons (one station, one bridge; LAB.md recipe A): ``vdptool -T -W -V assoc`` with VLAN 0, an
association with ``hints=to`` and VLAN 7, and its de-association.
"""

from __future__ import annotations

import uuid

import pytest

from tests.lab.harness import vdp22wire as w

BRIDGE_MAC = bytes.fromhex("c241312bd500")
STATION_MAC = bytes.fromhex("2a8e536d3f7e")
UUID_A = "11111111-2222-3333-4444-555555555555"
UUID_B = "11111111-2222-3333-4444-555555555556"
MGRID_M = w.mgrid_bytes("m")

# LLDPDUs (Ethernet frames, padded to 60 bytes by lldpad).
LLDP_BRIDGE_FIRST = bytes.fromhex(
    "0180c2000000c241312bd50088cc020704c241312bd500040703c241312bd50006020078fe090080c20d0200685414"
    "00000000000000000000000000"
)
LLDP_BRIDGE_NEGOTIATED = bytes.fromhex(
    "0180c2000000c241312bd50088cc020704c241312bd500040703c241312bd50006020078fe090080c20d0305687434"
    "00000000000000000000000000"
)
LLDP_STATION_NEGOTIATED = bytes.fromhex(
    "0180c20000002a8e536d3f7e88cc0207042a8e536d3f7e0407032a8e536d3f7e06020078fe090080c20d030568b434"
    "00000000000000000000000000"
)

# ECP22 frames: the station's associate (VLAN 0), the bridge's ack, the bridge's response.
ECP_ASSOC_REQ = bytes.fromhex(
    "0180c20000002a8e536d3f7e8940100100010a106d0000000000000000000000000000000621000000050405"
    "11111111222233334444555555555555020001525400112233" "0000"
)
ECP_ACK_1 = bytes.fromhex("0180c2000000c241312bd500894014010001")
ECP_ASSOC_RESP = bytes.fromhex(
    "0180c2000000c241312bd5008940100100010a106d0000000000000000000000000000000621400000050405"
    "11111111222233334444555555555555020001525400112233" "0000"
)
# Associate with hints=to (M bit) and VLAN 7; later de-associate of the same VSI.
ECP_ASSOC_M_REQ = bytes.fromhex(
    "0180c20000002a8e536d3f7e8940100100020a106d0000000000000000000000000000000621100000050405"
    "11111111222233334444555555555556020001525400112234" "0007"
)
ECP_DEASSOC_REQ = bytes.fromhex(
    "0180c20000002a8e536d3f7e8940100100030a106d0000000000000000000000000000000821100000050405"
    "11111111222233334444555555555556020001525400112234" "0007"
)
ECP_DEASSOC_RESP = bytes.fromhex(
    "0180c2000000c241312bd5008940100100030a106d0000000000000000000000000000000821400000050405"
    "11111111222233334444555555555556020001525400112234" "0007"
)


def _vsi(mode: int, status: int, uuid_text: str, mac: str, vid: int) -> w.VsiTlv:
    return w.VsiTlv(mode=mode, status=status, type_id=5, type_version=4, vsi_id=uuid.UUID(uuid_text).bytes,
                    filter_format=w.FFMT_MACVID, filters=(w.FilterEntry(vid=vid, mac=w.mac_bytes(mac)),))


def _lldp_payload(frame: bytes) -> bytes:
    dst, _src, ethertype, payload = w.decode_ethernet(frame)
    assert dst == w.NEAREST_CUSTOMER_BRIDGE
    assert ethertype == w.ETH_P_LLDP
    return payload


@pytest.mark.parametrize(
    ("frame", "mac", "evb"),
    [
        (LLDP_BRIDGE_FIRST, BRIDGE_MAC,
         w.EvbTlv(bridge_status=w.EVB_RRCAP, station_status=0, retries=3, rte=8, mode=w.EVB_MODE_BRIDGE,
                  rwd=20, rka=20)),
        (LLDP_BRIDGE_NEGOTIATED, BRIDGE_MAC,
         w.EvbTlv(bridge_status=w.EVB_RRCAP | w.EVB_RRCTR, station_status=w.EVB_RRREQ | 1, retries=3, rte=8,
                  mode=w.EVB_MODE_BRIDGE, rwd_remote=True, rwd=20, rka_remote=True, rka=20)),
        (LLDP_STATION_NEGOTIATED, STATION_MAC,
         w.EvbTlv(bridge_status=w.EVB_RRCAP | w.EVB_RRCTR, station_status=w.EVB_RRREQ | 1, retries=3, rte=8,
                  mode=w.EVB_MODE_STATION, rwd_remote=True, rwd=20, rka_remote=True, rka=20)),
    ],
)
def test_lldp_evb_golden(frame: bytes, mac: bytes, evb: w.EvbTlv) -> None:
    tlvs = w.decode_lldpdu(_lldp_payload(frame))
    assert w.find_evb(tlvs) == evb
    # lldpad's port id is its MAC (subtype 3), which encode_lldpdu can reproduce exactly.
    built = w.encode_ethernet(w.NEAREST_CUSTOMER_BRIDGE, mac, w.ETH_P_LLDP,
                              w.encode_lldpdu(mac, mac, 120, evb, port_subtype=w.PORT_SUBTYPE_MAC))
    assert built == frame


def test_lldpdu_without_end_is_rejected() -> None:
    with pytest.raises(w.WireError):
        w.decode_lldpdu(bytes.fromhex("020704c241312bd500"))
    with pytest.raises(w.WireError):
        w.decode_lldpdu(bytes.fromhex("0207"))  # overrun


def test_evb_rejects_other_org_tlv() -> None:
    with pytest.raises(w.WireError):
        w.decode_evb(bytes.fromhex("0080c2010000000000"))
    assert w.find_evb([(127, bytes.fromhex("0080c201000000"))]) is None


def test_ecp_ack_golden() -> None:
    _dst, src, ethertype, payload = w.decode_ethernet(ECP_ACK_1)
    assert (src, ethertype) == (BRIDGE_MAC, w.ETH_P_ECP22)
    assert w.decode_ecp(payload) == w.EcpFrame(op=w.ECP22_ACK, seqno=1)
    assert w.encode_ethernet(w.NEAREST_CUSTOMER_BRIDGE, BRIDGE_MAC, w.ETH_P_ECP22,
                             w.encode_ecp(w.EcpFrame(op=w.ECP22_ACK, seqno=1)), pad=False) == ECP_ACK_1


@pytest.mark.parametrize(
    ("frame", "src", "seqno", "vsi"),
    [
        (ECP_ASSOC_REQ, STATION_MAC, 1, _vsi(w.VDP22_ASSOC, 0, UUID_A, "52:54:00:11:22:33", 0)),
        (ECP_ASSOC_RESP, BRIDGE_MAC, 1, _vsi(w.VDP22_ASSOC, w.STATUS_ACK, UUID_A, "52:54:00:11:22:33", 0)),
        (ECP_ASSOC_M_REQ, STATION_MAC, 2, _vsi(w.VDP22_ASSOC, w.HINT_M, UUID_B, "52:54:00:11:22:34", 7)),
        (ECP_DEASSOC_REQ, STATION_MAC, 3, _vsi(w.VDP22_DEASSOC, w.HINT_M, UUID_B, "52:54:00:11:22:34", 7)),
        (ECP_DEASSOC_RESP, BRIDGE_MAC, 3,
         _vsi(w.VDP22_DEASSOC, w.STATUS_ACK, UUID_B, "52:54:00:11:22:34", 7)),
    ],
)
def test_ecp_vdp_golden(frame: bytes, src: bytes, seqno: int, vsi: w.VsiTlv) -> None:
    _dst, got_src, ethertype, payload = w.decode_ethernet(frame)
    assert (got_src, ethertype) == (src, w.ETH_P_ECP22)
    ecp = w.decode_ecp(payload)
    assert (ecp.op, ecp.seqno, ecp.subtype, ecp.version) == (w.ECP22_REQUEST, seqno, w.ECP22_SUBTYPE_VDP, 1)
    msg = w.decode_vdp(ecp.payload)
    assert msg.mgrid == MGRID_M
    assert w.mgrid_str(msg.mgrid) == "m"
    assert msg.vsis == (vsi,)
    # lldpad sends no end TLV: without one our encoder reproduces the frame exactly.
    body = w.encode_vdp(MGRID_M, [vsi], end_tlv=False)
    assert w.encode_ethernet(w.NEAREST_CUSTOMER_BRIDGE, src, w.ETH_P_ECP22,
                             w.encode_ecp(w.EcpFrame(op=w.ECP22_REQUEST, seqno=seqno, payload=body)),
                             pad=False) == frame
    # With the end TLV (what the peer sends) it decodes to the same message.
    assert w.decode_vdp(w.encode_vdp(MGRID_M, [vsi])).vsis == (vsi,)


def test_vsi_instance_and_fields() -> None:
    msg = w.decode_vdp(w.decode_ecp(w.decode_ethernet(ECP_ASSOC_M_REQ)[3]).payload)
    vsi = msg.vsis[0]
    assert vsi.instance == UUID_B
    assert w.MODE_NAMES[vsi.mode] == "assoc"
    assert vsi.status & w.HINT_M and not vsi.status & w.HINT_S
    assert w.mac_str(vsi.filters[0].mac or b"") == "52:54:00:11:22:34"


@pytest.mark.parametrize(
    ("fmt", "entry", "raw"),
    [
        (w.FFMT_VID, w.FilterEntry(vid=100, qos=0x9), "9064"),
        (w.FFMT_MACVID, w.FilterEntry(vid=4094, mac=bytes.fromhex("525400aa0002")), "525400aa00020ffe"),
        (w.FFMT_GROUPVID, w.FilterEntry(vid=2, group=0x01020304), "010203040002"),
        (w.FFMT_GROUPMACVID, w.FilterEntry(vid=3, group=7, mac=bytes.fromhex("020000000001")),
         "000000070200000000010003"),
    ],
)
def test_filter_formats_roundtrip(fmt: int, entry: w.FilterEntry, raw: str) -> None:
    vsi = w.VsiTlv(mode=w.VDP22_PREASSOC_RR, status=w.STATUS_ACK | w.STATUS_KEEP | 3, type_id=0x123456,
                   type_version=2, vsi_id=bytes(range(16)), filter_format=fmt, filters=(entry,))
    data = w.encode_vsi(vsi)
    # header: type 2 << 9 | length 25 + entry size
    assert int.from_bytes(data[:2], "big") == 2 << 9 | (25 + len(raw) // 2)
    assert data[2:6] == bytes.fromhex("63123456")
    assert data[-len(raw) // 2 :].hex() == raw
    assert w.decode_vdp(w.encode_vdp(w.mgrid_bytes("x"), [vsi])).vsis == (vsi,)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ("0621" + "00" * 33, "no manager id first"),
        ("0a10" + "00" * 15, "manager id overruns"),
        ("0a10" + "00" * 16 + "0a10" + "00" * 16, "duplicate manager id"),
        ("0a10" + "00" * 16 + "0621" + "00" * 30, "VSI overruns"),
        ("0a10" + "00" * 16 + "0621" + "00" * 22 + "09" + "0001" + "00" * 8, "unknown filter format"),
        ("0a10" + "00" * 16 + "0622" + "00" * 22 + "02" + "0001" + "00" * 9, "length mismatch"),
        ("", "empty"),
    ],
)
def test_vdp_malformed(data: str, what: str) -> None:
    with pytest.raises(w.WireError):
        w.decode_vdp(bytes.fromhex(data))


def test_vdp_unknown_tlv_kept_and_end_stops() -> None:
    data = w.encode_vdp(MGRID_M, [], end_tlv=False) + bytes.fromhex("fe03616263") + bytes.fromhex("0000ffff")
    msg = w.decode_vdp(data)
    assert msg.other == ((0x7F, b"abc"),)
    assert msg.vsis == ()


def test_mgrid_and_mac_helpers() -> None:
    assert w.mgrid_bytes("m") == b"m" + bytes(15)
    assert w.mgrid_str(bytes([11]) + bytes(15)) == "0b" + "00" * 15
    with pytest.raises(w.WireError):
        w.mgrid_bytes("x" * 17)
    with pytest.raises(w.WireError):
        w.mac_bytes("52:54:00")
