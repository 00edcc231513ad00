"""The switch peer against real lldpad stations (root, network namespaces).

Topology (built once per module, names unique per run)::

    host netns A (lldpad station)  upA <-- veth --> spA  \
    host netns B (lldpad station)  upB <-- veth --> spB   > switch netns: the peer (one per test)
    raw netns (no lldpad)          rw  <-- veth --> spR  /

Stations run with ``vdprwd = 14`` so lldpad's own wait for a VDP answer is ~0.35 s instead of ~15 s.
Requests go in through lldpad's real interfaces: ``vdptool`` (the only way to give migration hints) and
netlink (SETLINK + GETLINK polling, what the hooks use).  What the station reports is read back from
lldpad; what the switch saw is read from the peer's event log and table.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.lab.harness.netns import Daemon, Netns, unique_suffix, veth_pair
from tests.lab.harness.switchpeer import SwitchPeer

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("lldpad") is None, reason="needs root and lldpad"),
]

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))
ASSOCIATE, PREASSOCIATE_RR, DISASSOCIATE = 2, 1, 3  # IFLA_PORT_REQUEST values

STATION_CONF = """nearest_customer_bridge : {{ {ifname} : {{ adminStatus = 3;
  tlvid0080c20d : {{ enableTx = true; evbmode = "station"; evbrrreq = true; evbrrcap = true; vdprwd = 14; }};
}}; }};
"""

# Runs inside a station's namespaces: one netlink request to lldpad (unless REQ is "table"), then GETLINK
# polls until the instance has a response or WAIT seconds pass.  Prints JSON.  (Raw vdp.wire.netlink messages,
# so what is checked is lldpad's answer, independent of the project's client logic.)
NL_SCRIPT = r"""
import json, socket, sys, time, uuid
from vdp.wire import netlink as nlmsg
pid, ifname, mac, vlan, inst, req, wait = sys.argv[1:8]
pid, wait = int(pid), float(wait)
ifindex = socket.if_nametoindex(ifname)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0))
s.settimeout(2)
port = s.getsockname()[0]
seq = 4242

def exchange(data):
    s.sendto(data, (pid, 0))
    while True:
        for hdr, msg in nlmsg.split_messages(s.recv(65536)):
            if hdr.seq == seq and hdr.type in (nlmsg.NLMSG_ERROR, nlmsg.NLMSG_DONE):
                return hdr, msg

ack = None
t0 = time.monotonic()
if req != "table":
    hdr, msg = exchange(nlmsg.encode_qbg_request(seq=seq, port_id=port, ifindex=ifindex, ifname=ifname, mac=mac,
                        vlan=int(vlan), vsi_type=nlmsg.VsiType(11, 5, 4), instance=uuid.UUID(inst),
                        request=int(req)))
    ack = nlmsg.decode_error(msg)
# One GETLINK at a time: lldpad forgets a finished VSI once a GETLINK has reported its final status.
while True:
    seq += 1
    hdr, msg = exchange(nlmsg.encode_getlink(seq=seq, port_id=port, ifindex=ifindex))
    if hdr.type == nlmsg.NLMSG_ERROR:
        print(json.dumps({"error": nlmsg.decode_error(msg)}))
        sys.exit(0)
    ports = nlmsg.decode_ports(msg) if hdr.length > 32 else []
    table = {str(p.instance): p.response for p in ports}
    if table.get(inst) is not None or time.monotonic() - t0 >= wait:
        break
    time.sleep(0.005)
print(json.dumps({"ack": ack, "response": table.get(inst), "present": inst in table,
                  "seconds": time.monotonic() - t0, "table": table}))
"""


@dataclass
class Station:
    """One station host: netns, uplink, switch-side port name, lldpad (a Daemon)."""

    netns: Netns
    uplink: str
    port: str
    lldpad: Daemon | None = None

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert self.lldpad is not None
        return self.lldpad.run(argv, check=False, env=ENV, timeout=30, **kwargs)

    def vdptool(self, mode: str, instance: str, filt: str, *, hints: str = "none",
                wait: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["vdptool", "-i", self.uplink, "-T", *(["-W"] if wait else []), "-V", mode, "-c", f"mode={mode}",
                "-c", "mgrid2=m", "-c", "typeid=5", "-c", f"uuid={instance}", "-c", "typeidver=4",
                "-c", f"hints={hints}", "-c", f"filter={filt}"]
        return self.run(argv)

    def netlink(self, mac: str, vlan: int, instance: str, request: int | str, wait: float = 2.0) -> dict[str, Any]:
        assert self.lldpad is not None
        out = self.run([sys.executable, "-c", NL_SCRIPT, str(self.lldpad.pid), self.uplink, mac, str(vlan),
                        instance, str(request), str(wait)])
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def table(self) -> dict[str, int | None]:
        return self.netlink("00:00:00:00:00:00", 0, str(uuid.uuid4()), "table", 0)["table"]

    def vdp_ready(self) -> bool:
        return "error" not in self.netlink("00:00:00:00:00:00", 0, str(uuid.uuid4()), "table", 0)

    def evb(self, neighbour: bool) -> str:
        return self.run(["lldptool", *(["-n"] if neighbour else []), "-t", "-i", self.uplink, "-g", "ncb",
                         "-V", "evb"]).stdout


@dataclass
class Lab:
    switch: Netns
    a: Station
    b: Station
    raw: Station
    workdir: Path
    peers: list[SwitchPeer] = field(default_factory=list)

    def start_peer(self, tmp: Path, **kwargs: Any) -> SwitchPeer:
        peer = SwitchPeer(self.switch, [self.a.port, self.b.port, self.raw.port], tmp / "peer", **kwargs)
        self.peers.append(peer)
        return peer


def evb_from_bridge(station: Station) -> bool:
    return "mode:bridge" in station.evb(neighbour=True)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("switchpeer")
    s = unique_suffix()
    made: list[Netns] = []
    stations: list[Station] = []
    try:
        switch = Netns(f"sps{s}")
        made.append(switch)
        for tag in ("a", "b", "r"):
            ns = Netns(f"sp{tag}{s}")
            made.append(ns)
            st = Station(ns, f"up{tag}{s}", f"sp{tag}{s}")
            veth_pair(ns, st.uplink, switch, st.port)
            stations.append(st)
        for st in stations[:2]:
            conf = workdir / f"{st.uplink}.conf"
            conf.write_text(STATION_CONF.format(ifname=st.uplink))
            st.lldpad = Daemon(st.netns, ["lldpad", "-t", "-f", str(conf)], log=workdir / f"{st.uplink}.log")
        yield Lab(switch, stations[0], stations[1], stations[2], workdir)
    finally:
        for st in stations:
            if st.lldpad is not None:
                st.lldpad.stop()
        for ns in reversed(made):
            ns.close()


@pytest.fixture
def peer_factory(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., SwitchPeer]]:
    def start(**kwargs: Any) -> SwitchPeer:
        peer = lab.start_peer(tmp_path, **kwargs)
        for st in (lab.a, lab.b):
            wait_until(functools.partial(evb_from_bridge, st), 10, f"EVB on {st.uplink}")
            wait_until(st.vdp_ready, 10, f"VDP running on {st.uplink}")
        return peer

    yield start
    while lab.peers:
        lab.peers.pop().stop()


def new_instance() -> str:
    return str(uuid.uuid4())


def test_evb_negotiates_with_the_peer(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory()
    assert "mode:bridge" in lab.a.evb(neighbour=True)
    # Reflective relay granted on request, once the peer has seen the station's TLV.
    wait_until(lambda: "bridge:rrcap,rrctr" in lab.a.evb(neighbour=True), 5, "rrctr granted")
    # The station took the peer's ECP ack-wait exponent (10) as the larger one.
    wait_until(lambda: "rte:10" in lab.a.evb(neighbour=False), 5, "station adopts rte 10")
    wait_until(lambda: any(e["iface"] == lab.a.port for e in peer.events("evb")), 5, "peer saw station EVB")


def test_success_via_vdptool_updates_table_and_log(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory()
    inst = new_instance()
    out = lab.a.vdptool("assoc", inst, "7-52:54:00:11:22:33")
    assert out.returncode == 0 and "Response from VDP" in out.stdout and "Error" not in out.stdout, out
    entry = peer.table()[lab.a.port][inst]
    assert entry["mode"] == "assoc" and entry["filters"][0] == {"mac": "52:54:00:11:22:33", "vlan": 7, "qos": 0,
                                                                "group": None}
    (req,) = peer.requests(inst)
    assert (req["iface"], req["mode"], req["mac"], req["vlan"], req["answer"], req["status_byte"]) == (
        lab.a.port, "assoc", "52:54:00:11:22:33", 7, "success", 0x40)
    assert req["hints"] == {"M": False, "S": False} and req["mgrid"] == "m" and req["typeid"] == 5

    out = lab.a.vdptool("deassoc", inst, "7-52:54:00:11:22:33")
    assert out.returncode == 0 and "Error" not in out.stdout, out
    assert inst not in peer.table()[lab.a.port]
    assert [r["mode"] for r in peer.requests(inst)] == ["assoc", "deassoc"]


def test_netlink_reservation_then_association(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    """What the hooks do on a migration: PREASSOCIATE_RR at prepare, ASSOCIATE at started."""
    peer = peer_factory()
    inst = new_instance()
    got = lab.a.netlink("52:54:00:aa:00:01", 9, inst, PREASSOCIATE_RR)
    assert (got["ack"], got["response"]) == (0, 0), got
    assert peer.table()[lab.a.port][inst]["mode"] == "preassoc-rr"
    got = lab.a.netlink("52:54:00:aa:00:01", 9, inst, ASSOCIATE)
    assert (got["ack"], got["response"]) == (0, 0), got
    wait_until(lambda: len(peer.requests(inst)) == 2, 2, "second request logged")
    assert [(r["mode"], r["answer"]) for r in peer.requests(inst)] == [("preassoc-rr", "success"), ("assoc", "success")]
    assert peer.table()[lab.a.port][inst]["mode"] == "assoc"
    got = lab.a.netlink("52:54:00:aa:00:01", 9, inst, DISASSOCIATE, wait=0.5)
    assert got["ack"] == 0
    wait_until(lambda: inst not in lab.a.table(), 2, "VSI leaves lldpad after DISASSOCIATE")
    assert inst not in peer.table()[lab.a.port]


@pytest.mark.parametrize(
    ("rule", "reported"),
    [
        ({"status": "invalid-format"}, 1),
        ({"status": "insufficient-resources"}, 2),
        ({"status": "no-vsi-manager"}, 3),
        ({"status": "other"}, 4),
        ({"status": "invalid-address"}, 5),
        ({"status": "other", "hard": True}, 0x10 | 4),
        # lldpad reports a keep answer as its status byte: keep bit 0x20 | code (not VDP22_RESP_KEEP 254).
        ({"status": "keep"}, 0x20 | 3),
        ({"status": "keep", "code": 2}, 0x20 | 2),
    ],
)
def test_refusal_reaches_the_station(lab: Lab, peer_factory: Callable[..., SwitchPeer], rule: dict[str, Any],
                                     reported: int) -> None:
    peer = peer_factory()
    inst = new_instance()
    peer.control({"instances": {inst: rule}})
    got = lab.a.netlink("52:54:00:aa:00:02", 11, inst, ASSOCIATE)
    assert (got["ack"], got["response"]) == (0, reported), got
    (req,) = peer.requests(inst)
    assert req["answer"] == rule["status"]
    assert inst not in peer.table()[lab.a.port]  # refused, or kept at its previous state (none)


def test_rule_precedence_and_runtime_changes(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory()
    chosen, only_assoc = new_instance(), new_instance()
    peer.control({
        "default": {"status": "other"},
        "ifaces": {lab.b.port: {"status": "insufficient-resources"}},
        "instances": {chosen: {"status": "success"}, only_assoc: {"status": "no-vsi-manager", "modes": ["assoc"]}},
    })
    assert lab.a.netlink("52:54:00:aa:00:03", 12, new_instance(), ASSOCIATE)["response"] == 4  # default
    assert lab.b.netlink("52:54:00:aa:00:04", 12, new_instance(), ASSOCIATE)["response"] == 2  # iface
    assert lab.a.netlink("52:54:00:aa:00:05", 12, chosen, ASSOCIATE)["response"] == 0  # instance
    # A rule limited to some modes: the reservation falls through to the iface/default rules.
    peer.control({"instances": {only_assoc: {"status": "no-vsi-manager", "modes": ["assoc"]}}})
    assert lab.a.netlink("52:54:00:aa:00:06", 12, only_assoc, PREASSOCIATE_RR)["response"] == 0
    got = lab.a.netlink("52:54:00:aa:00:06", 12, only_assoc, ASSOCIATE)
    wait_until(lambda: len(peer.requests(only_assoc)) == 2, 2, "association logged")
    assert [r["answer"] for r in peer.requests(only_assoc)] == ["success", "no-vsi-manager"]
    assert got["ack"] == 0
    # lldpad drops a VSI whose change the switch refused (it reports the status only to the requester's
    # netlink port, as an unsolicited message, once a GETLINK has seen the VSI meanwhile).
    wait_until(lambda: only_assoc not in lab.a.table(), 2, f"station drops the refused VSI ({got})")
    # A control file that does not parse keeps the last good one and is logged.
    (peer.state / "control.json").write_text("{not json")
    assert lab.a.netlink("52:54:00:aa:00:07", 12, new_instance(), ASSOCIATE)["response"] == 0
    assert peer.events("control-error")


def test_silence_leaves_the_request_in_progress(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory()
    inst = new_instance()
    peer.control({"ifaces": {lab.a.port: {"status": "silence"}}})
    got = lab.a.netlink("52:54:00:aa:00:08", 13, inst, ASSOCIATE, wait=1.0)
    # lldpad's own wait (~0.35 s here) ends, but it never reports a response: in progress forever.
    assert (got["ack"], got["present"], got["response"]) == (0, True, None), got
    (req,) = peer.requests(inst)
    assert (req["answer"], req["status_byte"]) == ("silence", None)
    assert inst not in peer.table()[lab.a.port]


def test_delayed_answer(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory()
    inst = new_instance()
    peer.control({"default": {"status": "success", "delay_ms": 150}})
    got = lab.a.netlink("52:54:00:aa:00:09", 14, inst, ASSOCIATE)
    assert got["response"] == 0 and got["seconds"] >= 0.15, got


def test_switch_assigns_vlan_for_vlan_zero(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory()
    inst = new_instance()
    peer.control({"vlan": 321})
    out = lab.a.vdptool("assoc", inst, "0-52:54:00:11:22:44")
    assert "filter = 321-52:54:00:11:22:44" in out.stdout, out
    (req,) = peer.requests(inst)
    assert (req["vlan"], req["assigned_vlan"]) == (0, 321)
    assert peer.table()[lab.a.port][inst]["filters"][0]["vlan"] == 321
    listing = lab.a.run(["vdptool", "-i", lab.a.uplink, "-t", "-V", "assoc"]).stdout
    assert "filter = 321-52:54:00:11:22:44" in listing
    # lldpad now holds VLAN 321 for this VSI and refuses a de-association that says VLAN 0.
    assert "Invalid parameters" in lab.a.vdptool("deassoc", inst, "0-52:54:00:11:22:44").stdout
    assert lab.a.vdptool("deassoc", inst, "321-52:54:00:11:22:44").returncode == 0
    assert inst not in peer.table()[lab.a.port]


def test_switch_assigned_vlan_over_netlink(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    """VLAN 0 over netlink: accepted with the switch's VLAN, which later requests must then carry."""
    peer = peer_factory()
    inst = new_instance()
    peer.control({"vlan": 222})
    got = lab.a.netlink("52:54:00:aa:00:10", 0, inst, ASSOCIATE)
    assert (got["ack"], got["response"]) == (0, 0), got
    assert peer.table()[lab.a.port][inst]["filters"][0]["vlan"] == 222
    # lldpad compares the request with the VLAN it now holds: VLAN 0 is refused locally (EINVAL) and the
    # VSI's reported status becomes 5 (invalid VID/MAC), without any frame to the switch.
    got = lab.a.netlink("52:54:00:aa:00:10", 0, inst, DISASSOCIATE, wait=0.2)
    assert (got["ack"], got["response"]) == (-22, 5), got
    assert [r["mode"] for r in peer.requests(inst)] == ["assoc"]
    got = lab.a.netlink("52:54:00:aa:00:10", 222, inst, DISASSOCIATE, wait=0.2)
    assert got["ack"] == 0
    wait_until(lambda: inst not in lab.a.table(), 2, "VSI leaves lldpad")
    assert [r["mode"] for r in peer.requests(inst)] == ["assoc", "deassoc"]


def test_per_port_model_keeps_both_ports(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory(model="per-port")
    inst = new_instance()
    assert lab.a.netlink("52:54:00:aa:00:0a", 15, inst, ASSOCIATE)["response"] == 0
    assert lab.b.netlink("52:54:00:aa:00:0a", 15, inst, ASSOCIATE)["response"] == 0
    time.sleep(0.3)
    assert not peer.events("switch-deassoc")
    assert inst in peer.table()[lab.a.port] and inst in peer.table()[lab.b.port]
    assert lab.a.table().get(inst) == 0


def test_one_port_model_deassociates_the_old_port(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory(model="one-port")
    inst = new_instance()
    assert lab.a.netlink("52:54:00:aa:00:0b", 16, inst, ASSOCIATE)["response"] == 0
    assert lab.b.netlink("52:54:00:aa:00:0b", 16, inst, ASSOCIATE)["response"] == 0
    ev = peer.wait_event(lambda e: e["event"] == "switch-deassoc", 2, "switch-initiated de-associate")
    assert (ev["iface"], ev["instance"], ev["reason"]) == (lab.a.port, inst, "moved")
    wait_until(lambda: inst not in lab.a.table(), 3, "old station drops the VSI")
    assert inst not in peer.table()[lab.a.port] and inst in peer.table()[lab.b.port]
    assert lab.b.table().get(inst) == 0


def test_one_port_model_keeps_source_for_migration_target(lab: Lab,
                                                          peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory(model="one-port")
    inst = new_instance()
    filt = "17-52:54:00:aa:00:0c"
    assert lab.a.vdptool("assoc", inst, filt).returncode == 0
    out = lab.b.vdptool("assoc", inst, filt, hints="to")
    assert out.returncode == 0 and "Error" not in out.stdout, out
    target = peer.requests(inst)[-1]
    assert (target["iface"], target["hints"]) == (lab.b.port, {"M": True, "S": False})
    table = peer.table()
    assert table[lab.a.port][inst]["migrating"] is True and inst in table[lab.b.port]
    time.sleep(0.3)
    assert inst in lab.a.table() and not peer.events("switch-deassoc")
    # The source de-associates (vdptool's hints=from is not sent by lldpad for an existing VSI: it
    # keeps the hints of the VSI's first request, here none).
    assert lab.a.vdptool("deassoc", inst, filt, hints="from").returncode == 0
    last = peer.requests(inst)[-1]
    assert (last["iface"], last["mode"], last["hints"]) == (lab.a.port, "deassoc", {"M": False, "S": False})
    assert inst not in peer.table()[lab.a.port] and inst in peer.table()[lab.b.port]
    assert not peer.events("switch-deassoc")


def test_one_port_model_migration_timeout(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory(model="one-port", migration_timeout=1.0)
    inst = new_instance()
    filt = "18-52:54:00:aa:00:0d"
    assert lab.a.vdptool("assoc", inst, filt).returncode == 0
    assert lab.b.vdptool("assoc", inst, filt, hints="to").returncode == 0
    ev = peer.wait_event(lambda e: e["event"] == "switch-deassoc", 3, "timeout de-associate")
    assert (ev["iface"], ev["reason"]) == (lab.a.port, "migration-timeout")
    wait_until(lambda: inst not in lab.a.table(), 3, "source station drops the VSI")
    assert inst in lab.b.table()


def test_deassociate_command(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory()
    inst = new_instance()
    assert lab.a.netlink("52:54:00:aa:00:0e", 19, inst, ASSOCIATE)["response"] == 0
    peer.control({"commands": [{"id": "kick-1", "deassoc": inst}]})
    ev = peer.wait_event(lambda e: e["event"] == "switch-deassoc", 2, "commanded de-associate")
    assert (ev["iface"], ev["reason"]) == (lab.a.port, "command")
    wait_until(lambda: inst not in lab.a.table(), 3, "station drops the VSI")
    # The same command id is not run again when the file changes.
    peer.control({"vlan": 5, "commands": [{"id": "kick-1", "deassoc": inst}]})
    time.sleep(0.3)
    assert len(peer.events("switch-deassoc")) == 1


# Speaks raw ECP to the peer from the lldpad-less netns: one request sent twice (a retransmission), then
# the peer's answer is left unacknowledged twice before it is acked.  Prints what came back.
RAW_SCRIPT = r"""
import json, socket, sys, time, uuid
from tests.lab.harness import vdp22wire as w
ifname, inst = sys.argv[1:3]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(w.ETH_P_ECP22))
s.bind((ifname, w.ETH_P_ECP22))
s.settimeout(0.05)
mac = s.getsockname()[4][:6]
vsi = w.VsiTlv(mode=3, status=0, type_id=5, type_version=4, vsi_id=uuid.UUID(inst).bytes, filter_format=2,
               filters=(w.FilterEntry(vid=20, mac=bytes.fromhex("525400aa000f")),))
body = w.encode_vdp(w.mgrid_bytes("m"), [vsi])
req = w.encode_ethernet(w.NEAREST_CUSTOMER_BRIDGE, mac, w.ETH_P_ECP22,
                        w.encode_ecp(w.EcpFrame(op=w.ECP22_REQUEST, seqno=777, payload=body)), pad=False)
acks, answers, acked_at = [], [], None
s.send(req); time.sleep(0.05); s.send(req)
end = time.monotonic() + 1.5
while time.monotonic() < end:
    try:
        frame, addr = s.recvfrom(2000)
    except socket.timeout:
        continue
    if addr[2] == 4:
        continue
    ecp = w.decode_ecp(w.decode_ethernet(frame)[3])
    if ecp.op == w.ECP22_ACK:
        acks.append(ecp.seqno)
    else:
        answers.append((ecp.seqno, time.monotonic(), w.decode_vdp(ecp.payload).vsis[0].status))
        if len(answers) == 3 and acked_at is None:
            s.send(w.encode_ethernet(w.NEAREST_CUSTOMER_BRIDGE, mac, w.ETH_P_ECP22,
                   w.encode_ecp(w.EcpFrame(op=w.ECP22_ACK, seqno=ecp.seqno)), pad=False))
            acked_at = time.monotonic()
# Frames the peer sent before it saw the ack may still be queued for us: count only later ones.
print(json.dumps({"acks": acks, "answers": [(q, st) for q, _t, st in answers],
                  "late": sum(1 for _q, t, _s in answers if acked_at and t > acked_at + 0.05)}))
"""


def test_ecp_duplicates_and_retransmission(lab: Lab, peer_factory: Callable[..., SwitchPeer]) -> None:
    peer = peer_factory()
    inst = new_instance()
    out = subprocess.run(lab.raw.netns.argv([sys.executable, "-c", RAW_SCRIPT, lab.raw.uplink, inst]),
                         capture_output=True, text=True, env=ENV, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["acks"] == [777, 777]  # the retransmitted request is acknowledged again ...
    assert len(peer.requests(inst)) == 1  # ... but processed once
    assert [e["seqno"] for e in peer.events("ecp-duplicate") if e["iface"] == lab.raw.port] == [777]
    seqs = {q for q, _st in got["answers"]}
    assert len(got["answers"]) >= 3 and len(seqs) == 1, got  # resent with the same seqno until acked
    assert {st for _q, st in got["answers"]} == {0x40}
    assert got["late"] == 0, got  # and not after the ack
    assert not peer.events("ecp-giveup")
