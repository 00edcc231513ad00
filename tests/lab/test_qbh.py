"""vdp.qbh against a peer that plays the kernel + enic (no enic hardware here), and against the real kernel.

Every test runs in a network namespace of its own: ``up0`` is a veth that the peer treats as an enic
(dynamic vNIC with 4 SR-IOV VFs), ``vf1`` the other end standing for its VF 1's netdev.  Port-profile
messages go to the peer; link up/down go to the real kernel on those veths and are checked with ``ip``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hooks.errors import PeerUnavailable
from tests.lab.harness.enicpeer import (
    BADSTATE,
    ERROR,
    INSUFFICIENT_RESOURCES,
    INVALID,
    SUCCESS,
    EnicDevice,
    EnicPeer,
    Firmware,
    enter_netns,
)
from tests.lab.harness.netns import Netns, unique_suffix
from vdp.qbh import client as qbh
from vdp.qbh import host as qbh_host
from vdp.qbh.client import QbhClient, QbhRequest
from vdp.qbh.host import QbhPort
from vdp.wire import netlink

pytestmark = pytest.mark.lab

GUEST = uuid.UUID("5e1f0c3a-7d3b-4c55-9a61-3f9e2b8d0c02")
HOST = uuid.UUID("cccccccc-0000-4000-8000-00000000000c")
MAC = "52:54:00:aa:00:03"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Lab:
    ns: Netns
    peer: EnicPeer
    self_port: QbhPort
    vf_port: QbhPort

    def client(self, **kwargs: Any) -> QbhClient:
        kwargs.setdefault("exchange_timeout", 3.0)
        return QbhClient(dest_pid=self.peer.port_id, **kwargs)

    def is_up(self, ifname: str) -> bool:
        out = self.ns.run(["ip", "-j", "link", "show", ifname]).stdout
        return "UP" in json.loads(out)[0]["flags"]


def _req(
    port: QbhPort, request: int, *, profile: str = "finance-10", mac: str = MAC, guest: uuid.UUID = GUEST
) -> QbhRequest:
    return QbhRequest(port, mac, profile, guest, HOST, request)


@pytest.fixture
def netns() -> Iterator[Netns]:
    with Netns(f"vq{unique_suffix()}") as ns:
        ns.run(["ip", "link", "add", "up0", "type", "veth", "peer", "name", "vf1"])
        yield ns


@pytest.fixture
def lab(netns: Netns) -> Iterator[Lab]:
    with enter_netns(netns.name):
        idx = socket.if_nametoindex("up0")
        with EnicPeer([EnicDevice(idx, "up0", dynamic=True, num_vfs=4)]) as peer:
            yield Lab(netns, peer, QbhPort("up0", "up0", idx, None), QbhPort("vf1", "up0", idx, 1))


# --- against the peer ---------------------------------------------------------------------------------------------


def test_associate_device_itself(lab: Lab) -> None:
    assert not lab.is_up("up0")
    with lab.client() as client:
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)])
    assert result.ok and result.response == SUCCESS, result.message
    state = lab.peer.state(lab.self_port.pf_ifindex, None)
    assert state["applied"] and state["request"] == qbh.ASSOCIATE
    assert (state["profile"], state["instance"], state["host_uuid"]) == ("finance-10", str(GUEST), str(HOST))
    (sent,) = lab.peer.setlinks()
    assert sent.port_self is not None and sent.vf_macs == ()  # no MAC for the device itself (kernel >= 5.5)
    assert lab.is_up("up0")  # libvirt sets the link up after a successful ASSOCIATE


def test_associate_vf(lab: Lab) -> None:
    with lab.client() as client:
        (result,) = client.submit([_req(lab.vf_port, qbh.ASSOCIATE)])
    assert result.ok, result.message
    (sent,) = lab.peer.setlinks()
    assert sent.vf_macs == ((1, MAC),)
    assert sent.vf_ports[0] == {
        "vf": 1,
        "profile": "finance-10",
        "instance": str(GUEST),
        "host_uuid": str(HOST),
        "request": qbh.ASSOCIATE,
    }
    state = lab.peer.state(lab.vf_port.pf_ifindex, 1)
    assert state["mac"] == MAC and state["request"] == qbh.ASSOCIATE
    assert lab.is_up("vf1") and not lab.is_up("up0")  # the VF's own link, not the PF's


def test_preassociate_rr_reserves_without_link_up(lab: Lab) -> None:
    with lab.client() as client:
        (result,) = client.submit([_req(lab.vf_port, qbh.PREASSOCIATE_RR)])
    assert result.ok, result.message
    assert lab.peer.state(lab.vf_port.pf_ifindex, 1)["request"] == qbh.PREASSOCIATE_RR
    assert not lab.is_up("vf1")


def test_disassociate_sets_link_down_first_and_sends_vf_and_request_only(lab: Lab) -> None:
    with lab.client() as client:
        assert client.submit([_req(lab.vf_port, qbh.ASSOCIATE)])[0].ok
        assert lab.is_up("vf1")
        (result,) = client.submit([_req(lab.vf_port, qbh.DISASSOCIATE)])
    assert result.ok and result.response == SUCCESS, result.message
    assert not lab.is_up("vf1")
    undo = lab.peer.setlinks()[-1]
    assert undo.vf_macs == () and undo.vf_ports == ({"vf": 1, "request": qbh.DISASSOCIATE},)
    state = lab.peer.state(lab.vf_port.pf_ifindex, 1)
    assert state["request"] == qbh.DISASSOCIATE and state["profile"] is None and state["mac"] is None


def test_disassociate_of_a_port_that_holds_nothing_is_fine(lab: Lab) -> None:
    with lab.client() as client:
        (result,) = client.submit([_req(lab.self_port, qbh.DISASSOCIATE)])
    assert result.ok, result.message


def test_in_progress_then_success_polls_fast(lab: Lab) -> None:
    lab.peer.script(None, None, qbh.ASSOCIATE, Firmware(polls_in_progress=5))
    with lab.client() as client:
        started = time.monotonic()
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)])
        took = time.monotonic() - started
    assert result.ok, result.message
    polls = [r for r in lab.peer.received if r.type == netlink.RTM_GETLINK]
    assert len(polls) == 6 and all(r.ext_mask == netlink.RTEXT_FILTER_VF for r in polls)
    # 1+2+4+8+16+32 ms of back-off; libvirt's fixed 125 ms interval would need 750 ms
    assert took < 0.5, took


@pytest.mark.parametrize(
    ("response", "word"),
    [
        (INVALID, "invalid"),
        (BADSTATE, "bad state"),
        (INSUFFICIENT_RESOURCES, "insufficient resources"),
        (ERROR, "adapter reported an error"),
    ],
)
def test_each_profile_response_fails_with_its_line(lab: Lab, response: int, word: str) -> None:
    lab.peer.script(None, None, qbh.ASSOCIATE, Firmware(polls_in_progress=2, final_response=response))
    with lab.client() as client:
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)])
    assert not result.ok and result.response == response and not result.timed_out
    assert word in result.message and "ASSOCIATE of profile 'finance-10'" in result.message
    assert not lab.is_up("up0")


@pytest.mark.parametrize(
    ("err", "word"),
    [(-errno.ENOMEM, "out of resources"), (-errno.EBUSY, "busy"), (-errno.ETIMEDOUT, "firmware did not answer")],
)
def test_failing_device_command_errno(lab: Lab, err: int, word: str) -> None:
    lab.peer.script(None, None, qbh.ASSOCIATE, Firmware(setlink_errno=err))
    with lab.client() as client:
        (result,) = client.submit([_req(lab.vf_port, qbh.ASSOCIATE)])
    assert not result.ok and result.errno == err and word in result.message


def test_plain_preassociate_is_refused_like_enic(lab: Lab) -> None:
    with lab.client() as client:
        (result,) = client.submit([_req(lab.self_port, qbh.PREASSOCIATE)])
    assert result.errno == -errno.EOPNOTSUPP and "PREASSOCIATE_RR" in result.message


def test_vf_out_of_range_is_einval(lab: Lab) -> None:
    port = QbhPort("vf1", "up0", lab.self_port.pf_ifindex, 9)
    with lab.client() as client:
        (result,) = client.submit([_req(port, qbh.ASSOCIATE)])
    assert result.errno == -errno.EINVAL and "VF number out of range" in result.message


def test_static_vnic_cannot_do_port_self(lab: Lab) -> None:
    lab.peer.devices[lab.self_port.pf_ifindex].dynamic = False
    with lab.client() as client:
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)])
    assert result.errno == -errno.EOPNOTSUPP and "cannot do 802.1Qbh port profiles" in result.message


def test_unknown_device_is_enodev(lab: Lab) -> None:
    port = QbhPort("x", "x", 999, None)
    with lab.client(manage_link=False) as client:
        (result,) = client.submit([_req(port, qbh.ASSOCIATE)])
    assert result.errno == -errno.ENODEV and "ENODEV" in result.message


def test_mac_for_the_device_itself_is_refused_by_new_kernels(lab: Lab) -> None:
    with lab.client(port_self_mac=True) as client:
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)])
    assert result.errno == -errno.EINVAL and "Linux 5.5" in result.message
    lab.peer.kernel_5_5 = False  # before 5.5 enic got the MAC through IFLA_VF_MAC(vf -1)
    with lab.client(port_self_mac=True) as client:
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)])
    assert result.ok, result.message
    assert lab.peer.state(lab.self_port.pf_ifindex, None)["mac"] == MAC


def test_missing_response_is_an_error(lab: Lab) -> None:
    lab.peer.script(None, None, qbh.ASSOCIATE, Firmware(no_response=True))
    with lab.client() as client:
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)])
    assert not result.ok and "IFLA_PORT_RESPONSE missing" in result.message


def test_in_progress_forever_times_out_and_disassociates(lab: Lab) -> None:
    lab.peer.script(None, None, qbh.ASSOCIATE, Firmware(polls_in_progress=10**9))
    with lab.client(exchange_timeout=0.6) as client:
        started = time.monotonic()
        (result,) = client.submit([_req(lab.vf_port, qbh.ASSOCIATE)])
        took = time.monotonic() - started
    assert result.timed_out and not result.ok
    assert "still reports it in progress" in result.message and "sent DISASSOCIATE" in result.message
    assert [r.requests for r in lab.peer.setlinks()] == [[(1, qbh.ASSOCIATE)], [(1, qbh.DISASSOCIATE)]]
    assert lab.peer.state(lab.vf_port.pf_ifindex, 1)["request"] == qbh.DISASSOCIATE
    assert took < 1.5
    assert not lab.is_up("vf1")


def test_silent_driver_times_out_and_disassociate_is_still_sent(lab: Lab) -> None:
    lab.peer.script(None, None, qbh.ASSOCIATE, Firmware(silent=True))
    with lab.client(exchange_timeout=0.4) as client:
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)])
    assert result.timed_out and "did not acknowledge" in result.message
    assert lab.peer.setlinks()[-1].requests == [(None, qbh.DISASSOCIATE)]
    assert lab.peer.setlinks()[-1].answered == 0


def test_no_status_reply_times_out_and_disassociates(lab: Lab) -> None:
    lab.peer.silent_getlink = True
    with lab.client(exchange_timeout=0.4) as client:
        (result,) = client.submit([_req(lab.self_port, qbh.PREASSOCIATE_RR)])
    assert result.timed_out and "no status came back" in result.message and "sent DISASSOCIATE" in result.message


def test_deadline_before_exchange_timeout_keeps_time_for_the_disassociate(lab: Lab) -> None:
    lab.peer.script(None, None, qbh.ASSOCIATE, Firmware(polls_in_progress=10**9))
    with lab.client(exchange_timeout=10) as client:
        started = time.monotonic()
        (result,) = client.submit([_req(lab.self_port, qbh.ASSOCIATE)], deadline=started + 1.0)
        took = time.monotonic() - started
    assert result.timed_out and "sent DISASSOCIATE" in result.message
    assert took <= 1.0 + 0.05


def test_requests_of_one_submit_are_in_flight_together(lab: Lab) -> None:
    lab.peer.script(None, None, qbh.ASSOCIATE, Firmware(polls_in_progress=4))
    ports = [lab.self_port, lab.vf_port, QbhPort("vf1", "up0", lab.self_port.pf_ifindex, 3)]
    guests = [uuid.uuid4() for _ in ports]
    with lab.client(manage_link=False) as client:
        results = client.submit([_req(p, qbh.ASSOCIATE, guest=g) for p, g in zip(ports, guests)])
    assert all(r.ok for r in results), [r.message for r in results]
    kinds = [r.type for r in lab.peer.received]
    assert kinds[:3] == [netlink.RTM_SETLINK] * 3  # all three out before the first status poll
    # one GETLINK per round serves all ports of the PF: 4 in-progress answers + the final one
    assert kinds.count(netlink.RTM_GETLINK) == 5
    for port, guest in zip(ports, guests):
        assert lab.peer.state(port.pf_ifindex, port.vf)["instance"] == str(guest)


def test_a_port_taken_over_by_another_guest_is_reported(lab: Lab) -> None:
    other = uuid.uuid4()
    with lab.client(manage_link=False) as mine, lab.client(manage_link=False) as theirs:
        assert theirs.submit([_req(lab.vf_port, qbh.ASSOCIATE, guest=other)])[0].ok
        # what our polling would conclude from the adapter's state now
        verdict = mine._judge(qbh._Pending(_req(lab.vf_port, qbh.ASSOCIATE)), _getlink(mine, lab.vf_port.pf_ifindex))
    assert verdict is not None and not verdict.ok and str(other) in verdict.message


def _getlink(client: QbhClient, ifindex: int) -> bytes:
    reply = client._getlink(ifindex, time.monotonic() + 2)
    assert isinstance(reply, bytes)
    return reply


def test_status_reads_back_what_the_driver_holds(lab: Lab) -> None:
    with lab.client(manage_link=False) as client:
        assert client.status(lab.vf_port) is None  # nothing applied yet: the kernel leaves the port out
        assert client.submit([_req(lab.vf_port, qbh.ASSOCIATE)])[0].ok
        st = client.status(lab.vf_port)
        assert st is not None and (st.vf, st.request, st.response, st.instance) == (1, qbh.ASSOCIATE, SUCCESS, GUEST)
        assert st.profile == "finance-10" and st.host_uuid == HOST
        assert client.status(lab.self_port) is None
        with pytest.raises(PeerUnavailable):
            client.status(QbhPort("x", "x", 999, None))


def test_supports_port_profiles_on_the_peer_before_any_request(lab: Lab) -> None:
    with lab.client() as client:
        # with VFs the kernel reports an (empty) IFLA_VF_PORTS at once
        assert client.supports_port_profiles(lab.self_port)
        lab.peer.devices[lab.self_port.pf_ifindex].num_vfs = 0
        # a dynamic vNIC without VFs reports nothing until its first request: the SETLINK probe decides
        assert client.supports_port_profiles(lab.self_port)
    probe = lab.peer.received[-1]
    assert probe.type == netlink.RTM_SETLINK and probe.vf_ports_present and probe.vf_ports == ()
    assert lab.peer.state(lab.self_port.pf_ifindex, None)["applied"] is False  # the probe changed nothing


# --- against the real kernel ------------------------------------------------------------------------------------------


@pytest.fixture
def kernel(netns: Netns) -> Iterator[tuple[QbhPort, QbhPort]]:
    with enter_netns(netns.name):
        # This thread entered the namespace without a sysfs of its own: build the ports from the kernel's
        # ifindex (resolve_port on the real sysfs is tested below, through 'ip netns exec').
        idx = socket.if_nametoindex("up0")
        yield QbhPort("up0", "up0", idx, None), QbhPort("vf1", "up0", idx, 0)


def test_resolve_port_on_real_sysfs_in_a_namespace(netns: Netns) -> None:
    code = "from vdp.qbh import host; print(host.resolve_port('vf1'))"
    out = netns.run([sys.executable, "-c", code], cwd=str(REPO)).stdout
    idx = int(netns.run(["cat", "/sys/class/net/vf1/ifindex"]).stdout)
    assert out.strip() == repr(QbhPort("vf1", "vf1", idx, None))  # a veth is no VF: the device itself


def test_resolve_port_refuses_sysfs_of_another_namespace(netns: Netns) -> None:
    with enter_netns(netns.name), pytest.raises(PeerUnavailable, match="does not show this network namespace"):
        qbh_host.resolve_port("up0")


@pytest.mark.parametrize("request_type", [qbh.ASSOCIATE, qbh.PREASSOCIATE_RR])
@pytest.mark.parametrize("vf", [None, 0])
def test_real_kernel_veth_cannot_do_port_profiles(
    kernel: tuple[QbhPort, QbhPort], request_type: int, vf: int | None
) -> None:
    port = kernel[0] if vf is None else kernel[1]
    with QbhClient() as client:
        (result,) = client.submit([_req(port, request_type)])
    assert not result.ok and result.errno == -errno.EOPNOTSUPP, result.message
    assert "up0 cannot do 802.1Qbh port profiles" in result.message
    assert "Cisco VIC (enic)" in result.message and "ndo_set_vf_port" in result.message
    assert " -- " in result.message and "\n" not in result.message


def test_real_kernel_refuses_libvirts_mac_for_the_device_itself(kernel: tuple[QbhPort, QbhPort]) -> None:
    # Measured: rtnetlink's do_setvfinfo refuses IFLA_VF_MAC with vf -1 (>= INT_MAX) since Linux 5.5,
    # before it looks at IFLA_PORT_SELF at all.
    with QbhClient(port_self_mac=True) as client:
        (result,) = client.submit([_req(kernel[0], qbh.ASSOCIATE)])
    assert result.errno == -errno.EINVAL and "Linux 5.5" in result.message


def test_real_kernel_disassociate_on_a_veth_has_nothing_to_release(kernel: tuple[QbhPort, QbhPort]) -> None:
    with QbhClient() as client:
        (result,) = client.submit([_req(kernel[0], qbh.DISASSOCIATE)])
    assert result.ok and result.errno == -errno.EOPNOTSUPP and "nothing to release" in result.message


def test_real_kernel_veth_does_not_support_port_profiles(kernel: tuple[QbhPort, QbhPort]) -> None:
    with QbhClient() as client:
        assert client.supports_port_profiles(kernel[0]) is False


def test_real_kernel_getlink_with_filter_vf_on_a_veth_has_no_port_attributes(kernel: tuple[QbhPort, QbhPort]) -> None:
    """What the kernel answers: an RTM_NEWLINK without IFLA_VFINFO_LIST, IFLA_VF_PORTS or IFLA_PORT_SELF."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        sock.sendto(netlink.encode_getlink(seq=7, port_id=sock.getsockname()[0], ifindex=kernel[0].pf_ifindex), (0, 0))
        reply = netlink.split_messages(sock.recv(65536))[0][1]
    finally:
        sock.close()
    assert netlink.parse_header(reply).type == netlink.RTM_NEWLINK
    types = set()
    pos = 32
    while pos + 4 <= len(reply):
        length, atype = struct.unpack_from("=HH", reply, pos)
        types.add(atype & 0x3FFF)
        pos += (length + 3) & ~3
    assert netlink.IFLA_IFNAME in types
    assert not types & {netlink.IFLA_VFINFO_LIST, netlink.IFLA_VF_PORTS, netlink.IFLA_PORT_SELF}
    assert netlink.decode_ports(reply) == []


# --- the peer as a process (how hook-level tests use it) ------------------------------------------------------------


def test_peer_process_with_control_file_and_client_in_the_namespace(netns: Netns, tmp_path: Path) -> None:
    control = tmp_path / "control.json"
    ready = tmp_path / "port"
    log = tmp_path / "received.jsonl"
    control.write_text(json.dumps({"devices": [{"ifname": "up0", "num_vfs": 2}], "default": {"polls_in_progress": 1}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    peer = subprocess.Popen(
        netns.argv(
            [
                sys.executable,
                "-m",
                "tests.lab.harness.enicpeer",
                "--control",
                str(control),
                "--ready",
                str(ready),
                "--log",
                str(log),
            ]
        ),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(200):
            if ready.exists() or peer.poll() is not None:
                break
            time.sleep(0.02)
        assert ready.exists(), peer.stderr.read() if peer.poll() is not None and peer.stderr else "peer not ready"
        port_id = int(ready.read_text())
        # A client process in the namespace, resolving the port on real sysfs (ip netns exec mounts it).
        code = (
            "import uuid; from vdp.qbh import client as qbh, host as qbh_host\n"
            "port = qbh_host.resolve_port('up0')\n"
            f"c = qbh.QbhClient(dest_pid={port_id}, exchange_timeout=2)\n"
            "print(c.supports_port_profiles(port))\n"
            f"req = qbh.QbhRequest(port, '{MAC}', 'finance-10', uuid.UUID('{GUEST}'), uuid.UUID('{HOST}'), 2)\n"
            "r = c.submit([req])[0]\n"
            "print(r.ok, r.response, r.message)\n"
        )
        out = netns.run([sys.executable, "-c", code], env=env).stdout.splitlines()
        assert out[0] == "True" and out[1].startswith(f"True {SUCCESS} "), out
        assert netns.run(["ip", "-j", "link", "show", "up0"]).stdout.count('"UP"') == 1
        # change the script between calls, as a hook test does between hook events
        control.write_text(
            json.dumps(
                {"devices": [{"ifname": "up0", "num_vfs": 2}], "default": {"final_response": INSUFFICIENT_RESOURCES}}
            )
        )
        time.sleep(0.2)
        out = netns.run([sys.executable, "-c", code], env=env).stdout.splitlines()
        assert out[1].startswith(f"False {INSUFFICIENT_RESOURCES} ") and "insufficient resources" in out[1], out
        time.sleep(0.2)
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        setlinks = [entry for entry in lines if entry["type"] == netlink.RTM_SETLINK and entry["requests"]]
        assert [entry["requests"] for entry in setlinks] == [[[None, qbh.ASSOCIATE]]] * 2
        assert setlinks[0]["port_self"]["instance"] == str(GUEST)
    finally:
        if peer.poll() is None:
            peer.terminate()  # by pid: this process only
            peer.wait(5)
