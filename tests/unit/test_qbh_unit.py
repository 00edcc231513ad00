"""vdp.qbh without root: port resolution from a sysfs tree, host UUID order, messages, the bytes it sends."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hooks.errors import ConfigError, FeatureError, PeerUnavailable
from vdp.qbh import client as qbh
from vdp.qbh import host as qbh_host
from vdp.qbh.client import QbhClient, QbhRequest
from vdp.qbh.host import QbhPort
from vdp.wire import netlink

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "libvirt9_qbh.json"


# --- resolve_port -------------------------------------------------------------------------------------------


def _fake_sysfs(root: Path, *, vfs: int = 3, pf_net: tuple[str, ...] = ("eth1",)) -> Path:
    """A sysfs tree laid out like the kernel's: PF 0000:03:00.0 with ``vfs`` VFs at 0000:03:10.N.

    VF netdevs are called eth1vN; one plain device eth0 has no physfn.
    """
    pci = root / "devices" / "pci0000:00"
    net = root / "class" / "net"
    net.mkdir(parents=True)
    pf = pci / "0000:03:00.0"
    (pf / "net").mkdir(parents=True)
    for name in pf_net:
        (pf / "net" / name).mkdir()
    plain = pci / "0000:02:00.0"
    plain.mkdir(parents=True)
    for ifname, dev, ifindex in (("eth0", plain, 2), *((n, pf, 3 + i) for i, n in enumerate(pf_net))):
        (net / ifname).mkdir()
        (net / ifname / "device").symlink_to(dev)
        (net / ifname / "ifindex").write_text(f"{ifindex}\n")
    for n in range(vfs):
        vf = pci / f"0000:03:10.{n}"
        (vf / "net").mkdir(parents=True)
        (vf / "physfn").symlink_to(os.path.relpath(pf, vf))
        (pf / f"virtfn{n}").symlink_to(os.path.relpath(vf, pf))
        (net / f"eth1v{n}").mkdir()
        (net / f"eth1v{n}" / "device").symlink_to(vf)
        (net / f"eth1v{n}" / "ifindex").write_text(f"{10 + n}\n")
    return root


def test_plain_device_addresses_itself(tmp_path: Path) -> None:
    sysfs = _fake_sysfs(tmp_path)
    assert qbh_host.resolve_port("eth0", sysfs=str(sysfs)) == QbhPort("eth0", "eth0", 2, None)


def test_a_pf_addresses_itself(tmp_path: Path) -> None:
    sysfs = _fake_sysfs(tmp_path)
    assert qbh_host.resolve_port("eth1", sysfs=str(sysfs)) == QbhPort("eth1", "eth1", 3, None)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_vf_resolves_to_its_pf_and_number(tmp_path: Path, n: int) -> None:
    sysfs = _fake_sysfs(tmp_path)
    port = qbh_host.resolve_port(f"eth1v{n}", sysfs=str(sysfs))
    assert port == QbhPort(f"eth1v{n}", "eth1", 3, n)
    assert port.describe() == f"VF {n} of eth1 (eth1v{n})"


def test_vf_number_comes_from_the_virtfn_link_not_the_name(tmp_path: Path) -> None:
    sysfs = _fake_sysfs(tmp_path)
    # A VF renamed to something that suggests another number is still found by its PCI function.
    os.rename(sysfs / "class" / "net" / "eth1v2", sysfs / "class" / "net" / "guest0")
    assert qbh_host.resolve_port("guest0", sysfs=str(sysfs)).vf == 2


def test_vf_whose_pf_has_no_netdev_is_a_clear_error(tmp_path: Path) -> None:
    sysfs = _fake_sysfs(tmp_path, pf_net=())
    with pytest.raises(PeerUnavailable, match=r"VF 1 of PCI device 0000:03:00.0.*cannot be found"):
        qbh_host.resolve_port("eth1v1", sysfs=str(sysfs))


def test_vf_not_listed_by_its_pf_is_a_clear_error(tmp_path: Path) -> None:
    sysfs = _fake_sysfs(tmp_path)
    (sysfs / "devices" / "pci0000:00" / "0000:03:00.0" / "virtfn1").unlink()
    with pytest.raises(PeerUnavailable, match="does not list it"):
        qbh_host.resolve_port("eth1v1", sysfs=str(sysfs))


@pytest.mark.parametrize("name", ["nosuch0", "", "../eth0", "a/b", ".."])
def test_missing_or_bad_interface_names(tmp_path: Path, name: str) -> None:
    sysfs = _fake_sysfs(tmp_path)
    with pytest.raises(PeerUnavailable):
        qbh_host.resolve_port(name, sysfs=str(sysfs))


def test_real_sysfs_loopback_is_itself() -> None:
    # /sys is real on every Linux machine; lo is never a VF.
    assert qbh_host.resolve_port("lo") == QbhPort("lo", "lo", socket.if_nametoindex("lo"), None)


# --- host UUID -------------------------------------------------------------------------------------------------

U1 = "4c4c4544-0042-3510-8052-b4c04f4e3232"
U2 = "3d1219c7c4c5404aaa1f6d2a48adfda4"


def _files(tmp_path: Path, dmi: str | None, machine_id: str | None) -> dict[str, Any]:
    dmi_path = tmp_path / "product_uuid"
    mid_path = tmp_path / "machine-id"
    if dmi is not None:
        dmi_path.write_text(dmi + "\n")
    if machine_id is not None:
        mid_path.write_text(machine_id + "\n")
    return {"dmi_paths": [str(tmp_path / "absent"), str(dmi_path)], "machine_id_path": str(mid_path)}


def test_configured_wins(tmp_path: Path) -> None:
    assert qbh_host.host_uuid("aaaaaaaa-0000-4000-8000-0000000000ca", **_files(tmp_path, U1, U2)) == uuid.UUID(
        "aaaaaaaa-0000-4000-8000-0000000000ca"
    )


def test_smbios_before_machine_id(tmp_path: Path) -> None:
    assert qbh_host.host_uuid(None, **_files(tmp_path, U1.upper(), U2)) == uuid.UUID(U1)


def test_machine_id_when_no_smbios(tmp_path: Path) -> None:
    assert qbh_host.host_uuid(None, **_files(tmp_path, None, U2)) == uuid.UUID(U2)


@pytest.mark.parametrize(
    "bad", ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff", "junk"]
)
def test_invalid_smbios_uuid_is_skipped_like_libvirt(tmp_path: Path, bad: str) -> None:
    # virUUIDIsValid: 16 equal bytes are no host UUID (firmware placeholders).
    assert qbh_host.host_uuid(None, **_files(tmp_path, bad, U2)) == uuid.UUID(U2)


def test_libvirt_liberal_syntax_is_accepted(tmp_path: Path) -> None:
    # virUUIDParse allows '-' or ' ' between pairs and surrounding blanks.
    liberal = "  4c4c4544 0042 3510 8052 b4c04f4e3232 "
    assert qbh_host.host_uuid(liberal, **_files(tmp_path, None, None)) == uuid.UUID(U1)


@pytest.mark.parametrize("bad", ["00000000-0000-0000-0000-000000000000", "4c4c4544-0042", "zz" * 16])
def test_bad_configured_uuid_is_a_config_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="host_uuid"):
        qbh_host.host_uuid(bad, **_files(tmp_path, U1, U2))


def test_nothing_found_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(FeatureError, match="host_uuid"):
        qbh_host.host_uuid(None, **_files(tmp_path, None, "0" * 32))


def test_libvirt_config_host_uuid(tmp_path: Path) -> None:
    daemon = tmp_path / "libvirtd.conf"
    daemon.write_text('# host_uuid = "00000000-0000-0000-0000-000000000000"\nhost_uuid = "' + U1 + '"\n')
    assert qbh_host.libvirt_host_uuid([str(tmp_path / "absent.conf"), str(daemon)]) == U1
    daemon.write_text('#host_uuid = "x"\nlog_level = 3\n')
    assert qbh_host.libvirt_host_uuid([str(daemon)]) is None


# --- messages ----------------------------------------------------------------------------------------------------


def _req(
    request: int = qbh.ASSOCIATE, vf: int | None = None, profile: str = "finance-10", mac: str = "52:54:00:aa:00:03"
) -> QbhRequest:
    port = QbhPort("eth1" if vf is None else f"eth1v{vf}", "eth1", 3, vf)
    return QbhRequest(port, mac, profile, uuid.UUID(int=1), uuid.UUID(U1), request)


def test_eopnotsupp_names_the_hardware_needed() -> None:
    text = qbh.kernel_errno_message(-errno.EOPNOTSUPP, _req())
    assert "eth1 cannot do 802.1Qbh port profiles" in text
    assert "Cisco VIC (enic)" in text and "ndo_set_vf_port" in text


def test_eopnotsupp_for_plain_preassociate_points_to_preassociate_rr() -> None:
    text = qbh.kernel_errno_message(-errno.EOPNOTSUPP, _req(qbh.PREASSOCIATE))
    assert "PREASSOCIATE_RR" in text and "cannot do" not in text


@pytest.mark.parametrize(
    ("err", "word"),
    [
        (errno.EINVAL, "profile name"),
        (errno.ENODEV, "ENODEV"),
        (errno.ENOMEM, "out of resources"),
        (errno.EPERM, "CAP_NET_ADMIN"),
        (errno.EBUSY, "busy"),
        (errno.ETIMEDOUT, "firmware did not answer"),
        (errno.ENETDOWN, "uplink is down"),
        (errno.EIO, "I/O error"),
        (errno.EFAULT, "rejected the command"),
        (errno.ENOSPC, "No space left on device"),
    ],
)
def test_each_errno_has_one_actionable_line(err: int, word: str) -> None:
    for sign in (-1, 1):
        text = qbh.kernel_errno_message(sign * err, _req(vf=2))
        assert word in text and "\n" not in text
        assert " -- " in text


def test_einval_with_the_mac_for_the_device_itself_explains_the_kernel_check() -> None:
    assert "Linux 5.5" in qbh.kernel_errno_message(-errno.EINVAL, _req(), port_self_mac=True)
    assert "Linux 5.5" not in qbh.kernel_errno_message(-errno.EINVAL, _req(vf=1), port_self_mac=True)


# --- what goes on the wire (a bare netlink socket stands in for a silent kernel; no root needed) ---------------


class _Capture:
    """A NETLINK_ROUTE socket that receives and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.port_id = self.sock.getsockname()[0]
        self.sock.settimeout(0)

    def messages(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            out.extend(m for _h, m in netlink.split_messages(data))


@pytest.fixture
def capture() -> Iterator[_Capture]:
    cap = _Capture()
    yield cap
    cap.sock.close()


def _golden_requests() -> list[tuple[str, QbhRequest, bytes]]:
    """Every RTM_SETLINK libvirt 9.0 sent, with the request that should reproduce it."""
    doc = json.loads(GOLDEN.read_text())
    out: list[tuple[str, QbhRequest, bytes]] = []
    for m in doc["messages"]:
        if m["header"]["nlmsg_type"] != netlink.RTM_SETLINK:
            continue
        var = m["varying"]
        guest = m["name"].split("_", 1)[0]
        vf = var["port_vf"]
        port = QbhPort("dev", "pf", var["ifindex"], vf)
        request = {"ASSOCIATE": qbh.ASSOCIATE, "PREASSOCIATE_RR": qbh.PREASSOCIATE_RR}[m["request"]]
        req = QbhRequest(
            port,
            doc["port"]["mac"],
            doc["port"]["profileid"],
            uuid.UUID(doc["domain_uuids"][guest]),
            uuid.UUID(var["host_uuid"]),
            request,
        )
        out.append((m["name"], req, bytes.fromhex(m["hex"])))
    return out


GOLDEN_REQUESTS = _golden_requests()


def _same_but_seq_and_pid(sent: bytes, gold: bytes) -> bytes:
    """``gold`` with the (per-run) sequence number and port id of ``sent``."""
    fixed = bytearray(gold)
    struct.pack_into("=II", fixed, 8, *struct.unpack_from("=II", sent, 8))
    return bytes(fixed)


def test_golden_covers_self_and_vf_ports() -> None:
    kinds = {(r.port.vf is None, r.request) for _n, r, _b in GOLDEN_REQUESTS}
    assert kinds == {
        (True, qbh.ASSOCIATE),
        (True, qbh.PREASSOCIATE_RR),
        (False, qbh.ASSOCIATE),
        (False, qbh.PREASSOCIATE_RR),
    }


@pytest.mark.parametrize(("name", "req", "gold"), GOLDEN_REQUESTS, ids=[n for n, _r, _b in GOLDEN_REQUESTS])
def test_requests_are_libvirts_bytes(capture: _Capture, name: str, req: QbhRequest, gold: bytes) -> None:
    # VF ports: libvirt's layout by default; the device itself: with port_self_mac (see the module docstring).
    with QbhClient(
        dest_pid=capture.port_id, exchange_timeout=0.05, manage_link=False, port_self_mac=req.port.vf is None
    ) as client:
        client.submit([req])
    sent = capture.messages()
    assert sent[0] == _same_but_seq_and_pid(sent[0], gold)


@pytest.mark.parametrize(("name", "req", "gold"), GOLDEN_REQUESTS[:2], ids=[n for n, _r, _b in GOLDEN_REQUESTS[:2]])
def test_by_default_the_device_itself_gets_libvirts_bytes_without_the_mac(
    capture: _Capture, name: str, req: QbhRequest, gold: bytes
) -> None:
    assert req.port.vf is None
    with QbhClient(dest_pid=capture.port_id, exchange_timeout=0.05, manage_link=False) as client:
        client.submit([req])
    sent = capture.messages()[0]
    # libvirt's message minus its IFLA_VFINFO_LIST attribute (the first one after struct ifinfomsg)
    start = 32
    vfinfo_len, vfinfo_type = struct.unpack_from("=HH", gold, start)
    assert vfinfo_type & 0x3FFF == 22
    size = (vfinfo_len + 3) & ~3
    expected = bytearray(gold[:start] + gold[start + size :])
    struct.pack_into("=I", expected, 0, len(expected))
    assert sent == _same_but_seq_and_pid(sent, bytes(expected))


def test_by_default_the_device_itself_gets_no_mac(capture: _Capture) -> None:
    with QbhClient(dest_pid=capture.port_id, exchange_timeout=0.05, manage_link=False) as client:
        client.submit([_req()])
    sent = capture.messages()
    assert netlink.decode_vfinfo(sent[0]) == []
    (port,) = netlink.decode_ports(sent[0])
    assert port.port_self and port.profile == "finance-10" and port.request == qbh.ASSOCIATE


def test_a_vf_gets_its_mac_with_its_number(capture: _Capture) -> None:
    with QbhClient(dest_pid=capture.port_id, exchange_timeout=0.05, manage_link=False) as client:
        client.submit([_req(vf=2)])
    sent = capture.messages()
    assert netlink.decode_vfinfo(sent[0]) == [("52:54:00:aa:00:03", None)]
    # struct ifla_vf_mac.vf is the VF number, not -1 (rtnetlink refuses >= INT_MAX)
    assert struct.pack("=I", 2) + bytes.fromhex("525400aa0003") in sent[0]
    (port,) = netlink.decode_ports(sent[0])
    assert port.vf == 2 and not port.port_self


def test_silence_times_out_and_sends_disassociate(capture: _Capture) -> None:
    with QbhClient(dest_pid=capture.port_id, exchange_timeout=0.2, manage_link=False) as client:
        started = time.monotonic()
        (result,) = client.submit([_req(vf=1)])
        took = time.monotonic() - started
    assert not result.ok and result.timed_out
    assert "timed out" in result.message and "did not acknowledge" in result.message
    assert "DISASSOCIATE" in result.message
    assert 0.2 <= took < 1.0
    sent = capture.messages()
    requests = [netlink.decode_ports(m)[0].request for m in sent]
    assert requests == [qbh.ASSOCIATE, qbh.DISASSOCIATE]
    undo = netlink.decode_ports(sent[1])[0]
    # libvirt's DISASSOCIATE: VF and request only
    assert (undo.vf, undo.profile, undo.instance, undo.host_uuid) == (1, None, None, None)
    assert netlink.decode_vfinfo(sent[1]) == []


def test_deadline_caps_the_wait(capture: _Capture) -> None:
    with QbhClient(dest_pid=capture.port_id, exchange_timeout=10, manage_link=False) as client:
        started = time.monotonic()
        (result,) = client.submit([_req()], deadline=started + 0.8)
        took = time.monotonic() - started
    assert result.timed_out and took < 0.8 + 0.05


@pytest.mark.parametrize(
    ("req", "word"),
    [
        (_req(profile=""), "1..39 bytes"),
        (_req(profile="p" * 40), "1..39 bytes"),
        (_req(mac="52:54:00:aa:00"), "not a MAC address"),
    ],
)
def test_bad_requests_fail_alone_without_being_sent(capture: _Capture, req: QbhRequest, word: str) -> None:
    with QbhClient(dest_pid=capture.port_id, exchange_timeout=0.05, manage_link=False) as client:
        bad, good = client.submit([req, _req(vf=3)])
    assert not bad.ok and word in bad.message
    assert good.timed_out  # the good one went out (and met silence)
    sent = capture.messages()
    assert [netlink.decode_ports(m)[0].vf for m in sent] == [3, 3]
