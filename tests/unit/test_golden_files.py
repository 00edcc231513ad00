"""Sanity of the golden netlink vectors in tests/golden/ (recorded from real libvirtd 9.0).

Checks that every file parses, that each message's length agrees with its header and with its
attribute layout, that the decoded fields stored beside the bytes agree with the bytes, and that
the port definition plus the listed varying fields are enough to rebuild each libvirt request byte
for byte (so a test of the product's encoder can rely on them).  No root needed.
"""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FILES = sorted(GOLDEN.glob("*.json"))

NLA_F_NESTED = 0x8000
RTM_GETLINK, RTM_SETLINK = 18, 19
REQUESTS = {"PREASSOCIATE": 0, "PREASSOCIATE_RR": 1, "ASSOCIATE": 2, "DISASSOCIATE": 3}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _messages() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for f in FILES:
        doc = _load(f)
        for m in doc["messages"]:
            out.append((f"{f.stem}:{m['name']}", doc, m))
    return out


MESSAGES = _messages()


def _walk(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, flags, payload) per attribute; asserts the attributes tile ``data`` exactly."""
    out = []
    off = 0
    while off < len(data):
        assert off + 4 <= len(data), "truncated attribute header"
        length, raw = struct.unpack_from("=HH", data, off)
        assert 4 <= length <= len(data) - off, f"attribute length {length} overruns at {off}"
        out.append((raw & 0x3FFF, raw & 0xC000, data[off + 4 : off + length]))
        off += (length + 3) & ~3
    assert off == len(data) or off - len(data) < 4
    return out


def _nla(atype: int, payload: bytes, *, nested: bool = False) -> bytes:
    length = 4 + len(payload)
    head = struct.pack("=HH", length, atype | (NLA_F_NESTED if nested else 0))
    return head + payload + b"\0" * ((4 - length % 4) % 4)


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def test_there_are_golden_files() -> None:
    names = {f.name for f in FILES}
    assert {"libvirt9_qbg.json", "libvirt9_qbh.json"} <= names
    assert (GOLDEN / "README.md").is_file()


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_file_shape(path: Path) -> None:
    doc = _load(path)
    assert doc["format"] == "vdph-golden-1"
    assert doc["port"]["type"] in ("802.1Qbg", "802.1Qbh")
    assert doc["versions"]["libvirt-daemon"].startswith("9.0.0")
    assert doc["messages"], "no messages"
    assert len({m["name"] for m in doc["messages"]}) == len(doc["messages"]), "duplicate names"


@pytest.mark.parametrize(("name", "doc", "msg"), MESSAGES, ids=[n for n, _, _ in MESSAGES])
def test_lengths_and_header(name: str, doc: dict[str, Any], msg: dict[str, Any]) -> None:
    raw = bytes.fromhex(msg["hex"])
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", raw)
    assert len(raw) == msg["length"] == length == msg["header"]["nlmsg_len"]
    assert (mtype, flags, seq, pid) == (
        msg["header"]["nlmsg_type"],
        msg["header"]["nlmsg_flags"],
        msg["header"]["nlmsg_seq"],
        msg["header"]["nlmsg_pid"],
    )
    assert msg["varying"]["nlmsg_seq"] == seq and msg["varying"]["nlmsg_pid"] == pid
    if "ifinfomsg" in msg:
        fam, itype, index, iflags, change = struct.unpack_from("=BxHiII", raw, 16)
        assert msg["ifinfomsg"] == {
            "ifi_family": fam, "ifi_type": itype, "ifi_index": index, "ifi_flags": iflags, "ifi_change": change,
        }
        assert msg["varying"]["ifindex"] == index

        def check(tree: list[dict[str, Any]], data: bytes) -> None:
            walked = _walk(data)
            assert len(walked) == len(tree)
            for node, (atype, aflags, payload) in zip(tree, walked):
                assert (node["type"], node["flags"], node["len"]) == (atype, aflags, 4 + len(payload))
                if "attrs" in node:
                    check(node["attrs"], payload)
                else:
                    assert node["hex"] == payload.hex()

        check(msg["attrs"], raw[32:])


def _libvirt_requests(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in doc["messages"] if m["origin"].startswith("real libvirtd")]


def _qbg_setlink(port: dict[str, Any], v: dict[str, Any], request: str) -> bytes:
    """The 802.1Qbg request as libvirt 9.0 builds it (PROTOCOL.md section 3), from port + varying."""
    vf_info = _nla(1, struct.pack("=I", 0xFFFFFFFF) + _mac(port["mac"]) + b"\0" * 26) + _nla(
        2, struct.pack("=III", 0xFFFFFFFF, v["vlan"], 0)
    )
    tid = port["typeid"]
    vsi = struct.pack("=B3BB3x", port["managerid"], tid & 0xFF, (tid >> 8) & 0xFF, tid >> 16, port["typeidversion"])
    vf_port = (
        _nla(3, vsi)
        + _nla(4, uuid.UUID(port["instanceid"]).bytes)
        + _nla(6, bytes([REQUESTS[request]]))
    )
    body = (
        struct.pack("=BxHiII", 0, 0, v["ifindex"], 0, 0)
        + _nla(3, b"uplink0\0")
        + _nla(22, _nla(1, vf_info, nested=True), nested=True)
        + _nla(24, _nla(1, vf_port, nested=True), nested=True)
    )
    return struct.pack("=IHHII", 16 + len(body), RTM_SETLINK, 5, v["nlmsg_seq"], v["nlmsg_pid"]) + body


def _getlink(v: dict[str, Any]) -> bytes:
    body = struct.pack("=BxHiII", 0, 0, v["ifindex"], 0, 0) + _nla(29, struct.pack("=I", 1))
    return struct.pack("=IHHII", 16 + len(body), RTM_GETLINK, 5, v["nlmsg_seq"], v["nlmsg_pid"]) + body


def _qbh_setlink(port: dict[str, Any], v: dict[str, Any], request: str, instance: str) -> bytes:
    """The 802.1Qbh request from port + varying: IFLA_PORT_SELF for the device itself, else
    IFLA_VF_PORTS{IFLA_VF_PORT{..., PORT_VF}} on the PF (PROTOCOL.md section 4)."""
    vf = v["port_vf"]
    vf_info = _nla(1, struct.pack("=I", 0xFFFFFFFF if vf is None else vf) + _mac(port["mac"]) + b"\0" * 26)
    port_attrs = (
        _nla(2, port["profileid"].encode() + b"\0")
        + _nla(4, uuid.UUID(instance).bytes)
        + _nla(5, uuid.UUID(v["host_uuid"]).bytes)
        + (b"" if vf is None else _nla(1, struct.pack("=I", vf)))
        + _nla(6, bytes([REQUESTS[request]]))
    )
    ports = _nla(25, port_attrs, nested=True) if vf is None else _nla(24, _nla(1, port_attrs, nested=True), nested=True)
    vf_list = _nla(22, _nla(1, vf_info, nested=True), nested=True)
    body = struct.pack("=BxHiII", 0, 0, v["ifindex"], 0, 0) + vf_list + ports
    return struct.pack("=IHHII", 16 + len(body), RTM_SETLINK, 5, v["nlmsg_seq"], v["nlmsg_pid"]) + body


def test_qbg_requests_rebuild_byte_for_byte() -> None:
    doc = _load(GOLDEN / "libvirt9_qbg.json")
    seen = set()
    for m in _libvirt_requests(doc):
        raw = bytes.fromhex(m["hex"])
        if m["header"]["nlmsg_type"] == RTM_SETLINK:
            assert raw == _qbg_setlink(doc["port"], m["varying"], m["request"]), m["name"]
            seen.add(m["request"])
        else:
            assert raw == _getlink(m["varying"]), m["name"]
    assert seen == {"PREASSOCIATE", "ASSOCIATE", "DISASSOCIATE"}


def test_qbh_requests_rebuild_byte_for_byte() -> None:
    doc = _load(GOLDEN / "libvirt9_qbh.json")
    seen = set()
    for m in _libvirt_requests(doc):
        if m["header"]["nlmsg_type"] != RTM_SETLINK:
            continue
        raw = bytes.fromhex(m["hex"])
        assert m["instance_uuid"] in doc["domain_uuids"].values()
        assert m["varying"]["host_uuid"] == doc["host_uuids"]["B"]
        assert raw == _qbh_setlink(doc["port"], m["varying"], m["request"], m["instance_uuid"]), m["name"]
        seen.add((m["request"], m["varying"]["port_vf"]))
    assert seen == {("ASSOCIATE", None), ("PREASSOCIATE_RR", None), ("ASSOCIATE", 1), ("PREASSOCIATE_RR", 1)}
