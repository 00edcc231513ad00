"""vdp.qbg.netlink's LldpadClient (with a QbgSession's client interface) against real lldpad: a station
lldpad and an lldpad bridge over a veth (LAB.md recipe A).

The client runs inside the station host's network and mount namespaces (it finds lldpad through that
host's /run/lldpad.pid, as on a real host); what it reports is checked with lldpad's own tool
(``vdptool -t``) where lldpad offers one.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness.switchpeer import SwitchPeer
from tests.lab.harness.vdplab import VdpLab
from vdp.qbg.netlink import DISASSOCIATED, NOTHING_HELD

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]

# Runs in the host's namespaces: a sequence of steps over one LldpadClient, JSON in (argv), JSON out.
DRIVER = r"""
import json, socket, sys, time, uuid
from hooks.errors import PeerUnavailable
from vdp.wire import netlink as nlmsg
from vdp.qbg.netlink import LldpadClient, VsiRequest
from vdp.qbg.session import QbgSession, find_lldpad_pid
from vdp.wire.netlink import VsiType

cmd = json.loads(sys.argv[1])
out = {"pid": find_lldpad_pid(), "steps": []}
try:
    timeout = cmd.get("timeout", 10.0)
    pid = cmd.get("lldpad_pid") or find_lldpad_pid()
    with QbgSession(exchange_timeout=timeout) as session, LldpadClient(
            lldpad_pid=pid, exchange_timeout=timeout, clif=session.peek) as client:
        for step in cmd["steps"]:
            t0 = time.monotonic()
            if step["op"] in ("table", "one_getlink"):
                if step["op"] == "table":
                    rows = client.table(step["ifname"])
                else:  # a single raw GETLINK, to show lldpad's own behaviour
                    rows = client._getlink(socket.if_nametoindex(step["ifname"]), time.monotonic() + 5)
                out["steps"].append({"table": [[str(r.instance), r.vf, r.response] for r in rows]})
                continue
            if step["op"] == "send":  # one raw SETLINK, acknowledged, not followed up
                r = step["request"]
                seq = client._next_seq()
                client._send(nlmsg.encode_qbg_request(
                    seq=seq, port_id=client.port_id, ifindex=socket.if_nametoindex(r["ifname"]),
                    ifname=r["ifname"], mac=r["mac"], vlan=r["vlan"], vsi_type=VsiType(*r["vsi_type"]),
                    instance=uuid.UUID(r["instance"]), request=r["request"]))
                end = time.monotonic() + 5
                acks = []
                while not acks and time.monotonic() < end:
                    acks = [m for h, m in client._recv(end) if h.seq == seq and h.type == nlmsg.NLMSG_ERROR]
                out["steps"].append({"ack": nlmsg.decode_error(acks[0])})
                continue
            if step["op"] == "table_paused":  # table() with a pause between its two GETLINK reads
                reads = []
                plain_getlink = client._getlink

                def paused_getlink(ifindex, end, _plain=plain_getlink, _reads=reads, _pause=step["pause"]):
                    got = _plain(ifindex, end + _pause)
                    _reads.append(got)
                    if len(_reads) == 1:
                        time.sleep(_pause)
                    return got

                client._getlink = paused_getlink
                try:
                    rows = client.table(step["ifname"])
                finally:
                    client._getlink = plain_getlink
                out["steps"].append({"table": [[str(r.instance), r.vf, r.response] for r in rows],
                                     "reads": [[[str(r.instance), r.response] for r in got] for got in reads]})
                continue
            if step["op"] == "getlink_vfinfo":  # what lldpad's raw GETLINK reply says about MAC/VLAN
                seq = client._next_seq()
                client._send(nlmsg.encode_getlink(seq=seq, port_id=client.own_port_id,
                                                  ifindex=socket.if_nametoindex(step["ifname"])))
                end = time.monotonic() + 5
                replies = []
                while not replies and time.monotonic() < end:
                    replies = [m for h, m in client._recv(end) if h.seq == seq and h.type == nlmsg.NLMSG_DONE]
                out["steps"].append({"vfinfo": nlmsg.decode_vfinfo(replies[0]),
                                     "ports": len(nlmsg.decode_ports(replies[0]))})
                continue
            if step["op"] == "sleep":
                time.sleep(step["s"])
                out["steps"].append({})
                continue
            reqs = [VsiRequest(r["ifname"], r["mac"], r["vlan"], VsiType(*r["vsi_type"]),
                               uuid.UUID(r["instance"]), r["request"]) for r in step["requests"]]
            deadline = t0 + step["deadline"] if "deadline" in step else None
            res = client.submit(reqs, deadline=deadline)
            out["steps"].append({
                "ms": (time.monotonic() - t0) * 1000,
                "results": [{"ok": r.ok, "status": r.status, "error_bits": r.error_bits, "vlan": r.vlan,
                             "message": r.message, "instance": str(r.request.instance)} for r in res],
            })
except PeerUnavailable as exc:
    out["error"] = ["PeerUnavailable", exc.one_line()]
print(json.dumps(out))
"""

PREASSOCIATE, PREASSOCIATE_RR, ASSOCIATE, DISASSOCIATE = 0, 1, 2, 3


def _req(ifname: str, instance: uuid.UUID, request: int, *, mac: str = "52:54:00:11:22:33", vlan: int = 10,
         vsi_type: Sequence[int] = (11, 5, 4)) -> dict[str, Any]:
    return {"ifname": ifname, "mac": mac, "vlan": vlan, "vsi_type": list(vsi_type), "instance": str(instance),
            "request": request}


def drive(lab: VdpLab, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Run DRIVER with ``steps`` in the lab host; its JSON answer."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(ROOT)}
    res = lab.run_in_host(None, [sys.executable, "-c", DRIVER, json.dumps({"steps": steps, **extra})], env=env)
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def submit(lab: VdpLab, *reqs: dict[str, Any], **step: Any) -> dict[str, Any]:
    """One submit() of ``reqs``; the step's answer (``ms``, ``results``)."""
    out = drive(lab, [{"op": "submit", "requests": list(reqs), **step}])
    assert "error" not in out, out
    return out["steps"][0]  # type: ignore[no-any-return]


def vdptool_vsis(lab: VdpLab, ifname: str) -> dict[str, dict[str, str]]:
    """lldpad's VSIs on ``ifname`` by UUID, as its own tool shows them (the independent check)."""
    return {row["uuid"]: row for row in lab.lldpad().vsi_table(ifname)}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    """One host with uplinks up0, up1 to an lldpad bridge; tests leave no VSI behind."""
    with VdpLab(tmp_path_factory.mktemp("lldpadclient"), uplinks=2) as vdp_lab:
        yield vdp_lab


def test_associate_then_disassociate(lab: VdpLab) -> None:
    inst = uuid.uuid4()
    step = submit(lab, _req("up0", inst, ASSOCIATE))
    (res,) = step["results"]
    assert res["ok"], res
    assert (res["status"], res["error_bits"], res["vlan"]) == (0, 0, 10)
    shown = vdptool_vsis(lab, "up0")
    assert shown[str(inst)]["mode"] == "assoc"
    assert shown[str(inst)]["filter"] == "10-52:54:00:11:22:33"
    table = drive(lab, [{"op": "table", "ifname": "up0"}])["steps"][0]["table"]
    assert [str(inst), 0xFFFFFFFF, 0] in table

    step = submit(lab, _req("up0", inst, DISASSOCIATE))
    assert step["results"][0]["ok"], step
    assert step["results"][0]["message"] == DISASSOCIATED
    assert str(inst) not in vdptool_vsis(lab, "up0")
    table = drive(lab, [{"op": "table", "ifname": "up0"}])["steps"][0]["table"]
    assert all(row[0] != str(inst) for row in table)

    # Teardown is idempotent: lldpad answers EINVAL for an unknown VSI, the client calls that done.
    again = submit(lab, _req("up0", inst, DISASSOCIATE))["results"][0]
    assert again["ok"]
    assert again["message"] == NOTHING_HELD


def test_table_survives_lldpads_skip_after_a_finished_vsi(lab: VdpLab) -> None:
    """lldpad forgets a VSI once a GETLINK reported its final state and, in that same reply, skips the
    VSI after it.  A single raw GETLINK shows the skip; table() (and submit()'s polling) still see it."""
    older, newer = uuid.uuid4(), uuid.uuid4()
    old_req = _req("up0", older, ASSOCIATE, mac="52:54:00:00:01:01")
    new_req = _req("up0", newer, ASSOCIATE, mac="52:54:00:00:01:02")
    assert submit(lab, old_req)["results"][0]["ok"]
    try:
        tables = []
        for op in ("one_getlink", "table"):
            # The newer VSI sits first in lldpad's list; take it down and let the switch answer, then
            # read: that read reports (and drops) the newer one, and lldpad skips the older one behind it.
            assert submit(lab, new_req)["results"][0]["ok"]
            out = drive(lab, [
                {"op": "send", "request": {**new_req, "request": DISASSOCIATE}},
                {"op": "sleep", "s": 0.3},
                {"op": op, "ifname": "up0"},
            ])
            assert out["steps"][0]["ack"] == 0
            tables.append({row[0] for row in out["steps"][2]["table"]})
        raw, table = tables
        assert str(older) not in raw, f"lldpad no longer skips ({raw}): the double read could go"
        assert str(older) in table
        assert str(older) in vdptool_vsis(lab, "up0")
        assert str(newer) not in vdptool_vsis(lab, "up0")
    finally:
        assert submit(lab, {**old_req, "request": DISASSOCIATE})["results"][0]["ok"]


def test_teardown_of_an_unknown_vsi_next_to_known_ones(lab: VdpLab) -> None:
    """One submit: a DISASSOCIATE lldpad refuses (EINVAL, unknown VSI: done), and two real ones on two
    uplinks.  Checking the refusal reads the table and so takes in the other request's ack; the client
    must not then wait for that ack until the timeout (it did, in a first version of the VLAN 0 fix)."""
    known = [_req("up0", uuid.uuid4(), ASSOCIATE, mac="52:54:00:00:06:01", vlan=21),
             _req("up1", uuid.uuid4(), ASSOCIATE, mac="52:54:00:00:06:02", vlan=22)]
    assert [r["ok"] for r in submit(lab, *known)["results"]] == [True, True]
    unknown = _req("up0", uuid.uuid4(), DISASSOCIATE, mac="52:54:00:00:06:03", vlan=23)
    step = submit(lab, unknown, *[{**k, "request": DISASSOCIATE} for k in known[::-1]], deadline=5.0)
    assert [(r["ok"], r["message"]) for r in step["results"]] == [
        (True, NOTHING_HELD), (True, DISASSOCIATED), (True, DISASSOCIATED)]
    assert step["ms"] < 1000, step["ms"]


def test_several_ports_in_one_submit(lab: VdpLab) -> None:
    ports = [_req("up0", uuid.uuid4(), ASSOCIATE, mac="52:54:00:00:00:01", vlan=11),
             _req("up0", uuid.uuid4(), ASSOCIATE, mac="52:54:00:00:00:02", vlan=12),
             _req("up1", uuid.uuid4(), ASSOCIATE, mac="52:54:00:00:00:03", vlan=13)]
    step = submit(lab, *ports)
    assert [r["ok"] for r in step["results"]] == [True, True, True], step
    assert [r["instance"] for r in step["results"]] == [p["instance"] for p in ports]
    assert {p["instance"] for p in ports[:2]} <= set(vdptool_vsis(lab, "up0"))
    assert ports[2]["instance"] in vdptool_vsis(lab, "up1")
    down = submit(lab, *[{**p, "request": DISASSOCIATE} for p in ports])
    assert [r["ok"] for r in down["results"]] == [True, True, True], down
    assert not ({p["instance"] for p in ports} & (set(vdptool_vsis(lab, "up0")) | set(vdptool_vsis(lab, "up1"))))


def test_many_ports_on_one_uplink(lab: VdpLab) -> None:
    """Four VSIs on one uplink, ten times over: lldpad 1.1 loses switch responses when several VSIs are
    in flight on one uplink (4 of 20 such exchanges stalled when sent all at once), so submit() keeps one
    in flight per uplink; every exchange must complete."""
    for _ in range(10):
        ports = [_req("up0", uuid.uuid4(), ASSOCIATE, mac=f"52:54:00:00:02:{i:02x}", vlan=30 + i) for i in range(4)]
        up = submit(lab, *ports, deadline=3.0)
        down = submit(lab, *[{**p, "request": DISASSOCIATE} for p in ports], deadline=3.0)
        assert [r["ok"] for r in up["results"] + down["results"]] == [True] * 8, (up, down)


def test_vlan_zero_left_to_the_switch(lab: VdpLab) -> None:
    """VLAN 0 = the switch assigns.  lldpad reports no VLAN over netlink (only to its client interface)."""
    inst = uuid.uuid4()
    res = submit(lab, _req("up0", inst, ASSOCIATE, vlan=0))["results"][0]
    try:
        assert res["ok"], res
        assert res["vlan"] is None
        assert "VLAN left to the switch" in res["message"]  # lldpad's bridge keeps VLAN 0
        # lldpad's GETLINK reply carries VSIs but no IFLA_VFINFO_LIST: no VLAN to read back there.
        raw = drive(lab, [{"op": "getlink_vfinfo", "ifname": "up0"}])["steps"][0]
        assert raw["ports"] >= 1
        assert raw["vfinfo"] == []
        # What the switch returned, through lldpad's own tool: Debian's bridge role keeps VLAN 0.
        assert vdptool_vsis(lab, "up0")[str(inst)]["filter"] == "0-52:54:00:11:22:33"
    finally:
        assert submit(lab, _req("up0", inst, DISASSOCIATE, vlan=0))["results"][0]["ok"]


def test_migration_sequence_waits_for_the_switch(lab: VdpLab) -> None:
    """PREASSOCIATE_RR then ASSOCIATE: lldpad shows the old response while the ASSOCIATE is out; the
    client must not report it before lldpad is done (a request right after then gets no EBUSY)."""
    inst = uuid.uuid4()
    out = drive(lab, [
        {"op": "submit", "requests": [_req("up0", inst, PREASSOCIATE_RR)]},
        {"op": "submit", "requests": [_req("up0", inst, ASSOCIATE)]},
        {"op": "submit", "requests": [_req("up0", inst, ASSOCIATE)]},
        {"op": "submit", "requests": [_req("up0", inst, DISASSOCIATE)]},
    ])
    msgs = [s["results"][0]["message"] for s in out["steps"]]
    assert [s["results"][0]["ok"] for s in out["steps"]] == [True, True, True, True], msgs
    assert not any("EBUSY" in m for m in msgs)
    assert str(inst) not in vdptool_vsis(lab, "up0")


def test_interface_without_vdp_is_refused(lab: VdpLab) -> None:
    """lldpad runs no VDP on lo: a clear refusal naming what to configure; a missing uplink likewise."""
    res = submit(lab, _req("lo", uuid.uuid4(), ASSOCIATE))["results"][0]
    assert not res["ok"]
    assert "lldpad answered ENXIO" in res["message"] or "lldpad answered ENODEV" in res["message"], res
    assert "configure" in res["message"]
    missing = submit(lab, _req("nosuch0", uuid.uuid4(), ASSOCIATE))["results"][0]
    assert not missing["ok"]
    assert "does not exist" in missing["message"]


@pytest.mark.parametrize(
    ("lab_kwargs", "errno_name", "advice"),
    [
        ({"station_role": "evb-off"}, "ENXIO", "configure EVB in station role"),  # EVB TLV not sent
        ({"switch": "none"}, "EPROTONOSUPPORT", "not negotiated with the switch"),  # no EVB bridge
    ],
    ids=["evb-off", "no-evb-bridge"],
)
def test_uplink_without_evb_is_refused(tmp_path: Path, lab_kwargs: dict[str, Any], errno_name: str,
                                       advice: str) -> None:
    with VdpLab(tmp_path, wait_evb=False, **lab_kwargs) as own_lab:
        res = submit(own_lab, _req("up0", uuid.uuid4(), ASSOCIATE), deadline=2.0)["results"][0]
    assert not res["ok"]
    assert f"lldpad answered {errno_name}" in res["message"]
    assert advice in res["message"]


def test_bad_port_fails_alone(lab: VdpLab) -> None:
    """A port that cannot be encoded (VLAN 4095 is reserved) fails on its own; the others go ahead."""
    good = _req("up0", uuid.uuid4(), ASSOCIATE, mac="52:54:00:00:03:01")
    step = submit(lab, _req("up0", uuid.uuid4(), ASSOCIATE, vlan=4095), good)
    bad, ok = step["results"]
    assert not bad["ok"]
    assert "VLAN 4095" in bad["message"]
    assert ok["ok"], ok
    assert submit(lab, {**good, "request": DISASSOCIATE})["results"][0]["ok"]


def test_bridge_role_is_refused(lab: VdpLab) -> None:
    """Asking the lldpad that runs the bridge role (the lab's switch side) gives EOPNOTSUPP: the line
    says to use the station role."""
    assert lab.switch is not None and lab.switch_lldpad is not None
    port = lab.switch_ifname(None, "up0")
    cmd = {"steps": [{"op": "submit", "requests": [_req(port, uuid.uuid4(), ASSOCIATE)]}],
           "lldpad_pid": lab.switch_lldpad.pid}
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(ROOT)}
    proc = lab.switch.run([sys.executable, "-c", DRIVER, json.dumps(cmd)], env=env)
    res = json.loads(proc.stdout)["steps"][0]["results"][0]
    assert not res["ok"]
    assert "lldpad answered EOPNOTSUPP" in res["message"]
    assert "station" in res["message"]


def test_silent_switch_hits_the_deadline(tmp_path: Path) -> None:
    """Bridge gone after EVB negotiation: the VSI stays in progress; the deadline ends the call."""
    with VdpLab(tmp_path) as lab:
        assert lab.switch_lldpad is not None
        lab.switch_lldpad.stop()
        t0 = time.monotonic()
        step = submit(lab, _req("up0", uuid.uuid4(), ASSOCIATE), deadline=0.5)
        took = time.monotonic() - t0
    res = step["results"][0]
    assert not res["ok"]
    assert "no answer within" in res["message"]
    assert 0.45 <= step["ms"] / 1000 < 0.7, step["ms"]
    assert took < 5


def test_find_lldpad_pid_without_a_usable_pid_file(lab: VdpLab) -> None:
    """No pid file, or one naming an lldpad of another network namespace (the lab's switch): the client
    asks lldpad itself through liblldp_clif and still finds the host's lldpad."""
    assert lab.switch_lldpad is not None
    want = lab.lldpad().pid
    backup = "/run/lldpad.pid.test-backup"
    assert lab.run_in_host(None, ["mv", "/run/lldpad.pid", backup]).returncode == 0
    try:
        assert drive(lab, [])["pid"] == want
        foreign = f"echo {lab.switch_lldpad.pid} > /run/lldpad.pid"
        assert lab.run_in_host(None, ["sh", "-c", foreign]).returncode == 0
        assert drive(lab, [])["pid"] == want
    finally:
        assert lab.run_in_host(None, ["mv", "-f", backup, "/run/lldpad.pid"]).returncode == 0
    assert drive(lab, [])["pid"] == want


def test_lldpad_down_is_peer_unavailable(tmp_path: Path) -> None:
    with VdpLab(tmp_path) as lab:
        pid = lab.lldpad().pid
        lab.stop_lldpad()
        out = drive(lab, [{"op": "table", "ifname": "up0"}])
        assert out["pid"] is None
        assert out["error"][0] == "PeerUnavailable"
        assert "lldpad is not running" in out["error"][1]
        # A stale pid (lldpad gone, port id unbound): sending fails, also PeerUnavailable.
        out = drive(lab, [{"op": "submit", "requests": [_req("up0", uuid.uuid4(), ASSOCIATE)]}], lldpad_pid=pid)
        assert out["error"][0] == "PeerUnavailable"
        assert "does not listen on netlink" in out["error"][1]
        # Back up: the client finds it again.
        lab.start_lldpad(wait_evb=True)
        out = drive(lab, [{"op": "table", "ifname": "up0"}])
        assert out["pid"] == lab.lldpad().pid
        assert "error" not in out



# -- against the lab's switch peer (a bridge that can refuse, stay silent, choose VLANs) ----------------


@dataclass
class PeerLab:
    lab: VdpLab
    peer: SwitchPeer
    port: str  # the switch-side name of up0


@pytest.fixture(scope="module")
def peer_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerLab]:
    """One host (up0, lldpad station) wired to the switch peer instead of lldpad's bridge role."""
    workdir = tmp_path_factory.mktemp("clientpeer")
    with VdpLab(workdir, switch="none") as vdp_lab:
        assert vdp_lab.switch is not None
        port = vdp_lab.switch_ifname(None, "up0")
        peer = SwitchPeer(vdp_lab.switch, [port], workdir / "peer")
        try:
            vdp_lab.lldpad().wait_evb("up0", timeout=15)
            end = time.monotonic() + 10
            while "error" in drive(vdp_lab, [{"op": "table", "ifname": "up0"}]):
                assert time.monotonic() < end, "VDP did not start on up0"
                time.sleep(0.1)
            yield PeerLab(vdp_lab, peer, port)
        finally:
            peer.stop()


@pytest.fixture
def plab(peer_lab: PeerLab) -> Iterator[PeerLab]:
    peer_lab.peer.control({})
    yield peer_lab
    peer_lab.peer.control({})


def _modes(plab: PeerLab, inst: uuid.UUID) -> list[tuple[str, int | None]]:
    """What the switch received for ``inst``: (mode, VLAN) per VSI TLV, keep-alives left out."""
    return [(r["mode"], r["vlan"]) for r in plab.peer.requests(str(inst)) if not r["keepalive"]]


def test_table_keeps_a_final_status_seen_only_in_its_second_read(plab: PeerLab) -> None:
    """Bug a: lldpad reports a finished VSI's final status once (the GETLINK that shows it deletes it).
    table() reads twice; "in progress" in the first read and the refusal in the second must give the
    refusal, not "in progress" (which would then vanish for good)."""
    inst = uuid.uuid4()
    plab.peer.control({"instances": {str(inst): {"status": "insufficient-resources", "delay_ms": 300}}})
    out = drive(plab.lab, [
        {"op": "send", "request": _req("up0", inst, ASSOCIATE, mac="52:54:00:00:05:01")},
        {"op": "table_paused", "ifname": "up0", "pause": 0.8},
        {"op": "table", "ifname": "up0"},
    ])
    assert out["steps"][0]["ack"] == 0
    first, second = out["steps"][1]["reads"]
    assert [str(inst), None] in first and [str(inst), 2] in second, out  # the interleaving happened
    assert [str(inst), 0xFFFFFFFF, 2] in out["steps"][1]["table"], out
    assert all(row[0] != str(inst) for row in out["steps"][2]["table"])  # lldpad forgot it meanwhile


def test_vlan_zero_association_reports_the_switchs_vlan(plab: PeerLab) -> None:
    """Bug b and fact c: ASSOCIATE with VLAN 0, the switch accepts with VLAN 222.  The client must report
    success with VLAN 222 (the old busy probe, a PREASSOCIATE with VLAN 0, made lldpad write status 5
    into the VSI); a DISASSOCIATE with VLAN 0 (a journal without the VLAN) still tears it down."""
    plab.peer.control({"vlan": 222})
    inst = uuid.uuid4()
    res = submit(plab.lab, _req("up0", inst, ASSOCIATE, mac="52:54:00:00:05:02", vlan=0))["results"][0]
    assert (res["ok"], res["status"], res["vlan"]) == (True, 0, 222), res
    assert "VLAN 222, chosen by the switch" in res["message"]
    assert plab.peer.table()[plab.port][str(inst)]["filters"][0]["vlan"] == 222
    table = drive(plab.lab, [{"op": "table", "ifname": "up0"}])["steps"][0]["table"]
    assert [str(inst), 0xFFFFFFFF, 0] in table  # not 5
    down = submit(plab.lab, _req("up0", inst, DISASSOCIATE, mac="52:54:00:00:05:02", vlan=0))["results"][0]
    assert down["ok"] and down["message"] == DISASSOCIATED, down
    assert str(inst) not in plab.peer.table()[plab.port]
    assert str(inst) not in vdptool_vsis(plab.lab, "up0")
    assert _modes(plab, inst) == [("assoc", 0), ("deassoc", 222)]


def test_vlan_zero_reservation_then_association_with_the_learnt_vlan(plab: PeerLab) -> None:
    """What an incoming migration with VLAN 0 needs: the reservation learns the VLAN; the ASSOCIATE must
    carry it -- with VLAN 0 lldpad refuses it locally (EINVAL), nothing reaches the switch."""
    plab.peer.control({"vlan": 321})
    inst = uuid.uuid4()
    mac = "52:54:00:00:05:03"
    rr = submit(plab.lab, _req("up0", inst, PREASSOCIATE_RR, mac=mac, vlan=0))["results"][0]
    assert (rr["ok"], rr["vlan"]) == (True, 321), rr
    zero = submit(plab.lab, _req("up0", inst, ASSOCIATE, mac=mac, vlan=0))["results"][0]
    assert not zero["ok"] and "lldpad answered EINVAL" in zero["message"], zero
    assoc = submit(plab.lab, _req("up0", inst, ASSOCIATE, mac=mac, vlan=321))["results"][0]
    assert (assoc["ok"], assoc["status"], assoc["vlan"]) == (True, 0, 321), assoc
    assert plab.peer.table()[plab.port][str(inst)]["mode"] == "assoc"
    assert submit(plab.lab, _req("up0", inst, DISASSOCIATE, mac=mac, vlan=321))["results"][0]["ok"]
    assert _modes(plab, inst) == [("preassoc-rr", 0), ("assoc", 321), ("deassoc", 321)]


@pytest.mark.parametrize(
    ("rule", "status", "words"),
    [
        ({"status": "keep", "code": 2}, 0x22, ("(keep)", "insufficient resources")),
        ({"status": "other", "hard": True}, 0x14, ("hard error", "another reason")),
        ({"status": "no-vsi-manager"}, 3, ("VSI manager",)),
    ],
    ids=["keep", "hard", "plain"],
)
def test_refusals_are_decoded(plab: PeerLab, rule: dict[str, Any], status: int, words: tuple[str, ...]) -> None:
    """Fact c: a refusal's status is the switch's status byte minus the ack bit (0x20|code keep, 0x10|code
    hard), or lldpad's enum for plain refusals; each becomes the right admin line."""
    inst = uuid.uuid4()
    plab.peer.control({"instances": {str(inst): rule}})
    res = submit(plab.lab, _req("up0", inst, ASSOCIATE, mac="52:54:00:00:05:04"))["results"][0]
    assert (res["ok"], res["status"]) == (False, status), res
    assert all(w in res["message"] for w in words), res["message"]
    assert "unknown" not in res["message"]
    # keep: lldpad holds the VSI with the keep status (no previous state); others: it forgot it.
    if str(inst) in vdptool_vsis(plab.lab, "up0"):
        assert submit(plab.lab, _req("up0", inst, DISASSOCIATE, mac="52:54:00:00:05:04"))["results"][0]["ok"]


def test_refused_association_of_a_reserved_vsi(plab: PeerLab) -> None:
    """PREASSOCIATE_RR accepted, the ASSOCIATE refused.  Had anyone read lldpad's table while the
    ASSOCIATE was out, lldpad would drop the VSI at once and tell only the requester's port (an
    unsolicited RTM_SETLINK without the status); the client probes before reading for such VSIs, so it
    gets the switch's status, and sends nothing else to the switch."""
    inst = uuid.uuid4()
    mac = "52:54:00:00:05:05"
    plab.peer.control({"instances": {str(inst): {"status": "insufficient-resources", "modes": ["assoc"],
                                                 "delay_ms": 100}}})
    out = drive(plab.lab, [
        {"op": "submit", "requests": [_req("up0", inst, PREASSOCIATE_RR, mac=mac)]},
        {"op": "submit", "requests": [_req("up0", inst, ASSOCIATE, mac=mac)]},
    ])
    rr, assoc = (s["results"][0] for s in out["steps"])
    assert rr["ok"], rr
    assert (assoc["ok"], assoc["status"]) == (False, 2) and "insufficient resources" in assoc["message"], assoc
    time.sleep(0.3)
    assert _modes(plab, inst) == [("preassoc-rr", 10), ("assoc", 10)]
    assert str(inst) not in vdptool_vsis(plab.lab, "up0")
    assert str(inst) not in plab.peer.table()[plab.port]
