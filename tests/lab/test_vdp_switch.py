"""The VDP feature at the hook level against a switch that can say no: the entry exec'd as libvirt does
(HookHost), a real lldpad station per host, the lab's switch peer on the switch side (per-port or
one-port model; see tests/lab/harness/switchpeer.py).

Every check uses independent views besides our journal: the switch peer's table.json and events.jsonl
(what the switch holds and received) and lldpad's own VSI table (vdptool).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import HookHost
from tests.lab.harness.switchpeer import SwitchPeer
from tests.lab.harness.vdplab import VdpLab
from tests.lab.test_lldpad_client import DRIVER, ROOT, drive

pytestmark = pytest.mark.lab

MACS = ["52:54:00:aa:10:02", "52:54:00:aa:10:03", "52:54:00:aa:10:04"]
UPLINKS = {"fabric-a": "up0", "fabric-b": "up1"}


@dataclass
class SwitchLab:
    lab: VdpLab
    peer: SwitchPeer


def _wait_vdp(lab: VdpLab, host: str | None, uplinks: list[str]) -> None:
    """EVB negotiated with the peer and lldpad's VDP22 running on every uplink (GETLINK answers)."""
    for uplink in uplinks:
        lab.lldpad(host).wait_evb(uplink, timeout=15)
    if host is not None:
        time.sleep(1.0)  # drive() runs in the only host; VDP starts well within this after EVB
        return
    end = time.monotonic() + 10
    for uplink in uplinks:
        while "error" in drive(lab, [{"op": "table", "ifname": uplink}]):
            assert time.monotonic() < end, f"VDP did not start on {uplink}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def swlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchLab]:
    workdir = tmp_path_factory.mktemp("vdpswitch")
    with VdpLab(workdir, uplinks=2, switch="none") as lab:
        assert lab.switch is not None
        peer = SwitchPeer(lab.switch, [lab.switch_ifname(None, u) for u in ("up0", "up1")], workdir / "peer")
        try:
            _wait_vdp(lab, None, ["up0", "up1"])
            yield SwitchLab(lab, peer)
        finally:
            peer.stop()


@pytest.fixture
def sw(swlab: SwitchLab) -> Iterator[SwitchLab]:
    swlab.peer.control({})
    yield swlab
    swlab.peer.control({})


def _host(sw: SwitchLab, tmp_path: Path, *, exchange_timeout: int = 5, extra: str = "") -> HookHost:
    host = HookHost(sw.lab, "host", tmp_path, uplinks=UPLINKS, extra=extra)
    text = host.config.read_text().replace("exchange_timeout = 5", f"exchange_timeout = {exchange_timeout}")
    host.config.write_text(text)
    return host


def _three_ports(*, second_required: bool | None = None) -> tuple[list[Port], list[str]]:
    instances = [str(uuid.uuid4()) for _ in MACS]
    params = [{"managerid": "11", "typeid": "1193047", "typeidversion": "2", "instanceid": i} for i in instances]
    ports = [
        Port(MACS[0], "fabric-a", vlan=100, params=params[0]),
        Port(MACS[1], "fabric-a", vlan=101, required=second_required, params=params[1]),
        Port(MACS[2], "fabric-b", vlan=102, params=params[2]),
    ]
    return ports, instances


def _switch_holds(sw: SwitchLab) -> dict[str, str]:
    """instance -> switch port, for every VSI the switch holds."""
    return {inst: port for port, vsis in sw.peer.table().items() for inst in vsis}


def _lldpad_holds(sw: SwitchLab, host: str | None = None) -> dict[str, dict[str, str]]:
    """instance -> lldpad's row (vdptool -t), over both uplinks."""
    out = {}
    for ifname in ("up0", "up1"):
        out.update({row["uuid"]: row for row in sw.lab.lldpad(host).vsi_table(ifname)})
    return out


def _netlink_table(sw: SwitchLab) -> dict[str, int | None]:
    """instance -> response, as lldpad's GETLINK shows them over both uplinks (None: in progress)."""
    out = drive(sw.lab, [{"op": "table", "ifname": "up0"}, {"op": "table", "ifname": "up1"}])
    return {row[0]: row[2] for step in out["steps"] for row in step["table"]}


def _seen(sw: SwitchLab, inst: str) -> list[tuple[str, str]]:
    """(mode, answer) of every non-keep-alive request the switch received for ``inst``."""
    return [(r["mode"], r["answer"]) for r in sw.peer.requests(inst) if not r["keepalive"]]


def test_switch_refuses_one_of_three_required_ports(sw: SwitchLab, tmp_path: Path) -> None:
    host = _host(sw, tmp_path)
    ports, insts = _three_ports()
    sw.peer.control({"instances": {insts[1]: {"status": "insufficient-resources"}}})
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1, result
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    for word in ("vm", MACS[1], "insufficient resources", ": ASSOCIATE on up0: "):
        assert word in result.stderr, result.stderr
    assert result.stderr.count(MACS[1]) == 1 and result.stderr.count("up0") == 1, result.stderr
    print(result.stderr)
    time.sleep(0.2)
    assert not set(insts) & set(_switch_holds(sw)), sw.peer.table()
    assert not set(insts) & set(_lldpad_holds(sw))
    assert _seen(sw, insts[1]) == [("assoc", "insufficient-resources")]
    for inst in (insts[0], insts[2]):
        assert _seen(sw, inst) == [("assoc", "success"), ("deassoc", "success")]
    assert host.journal(guest) is None
    assert host.hook(xml, "release", "end").rc == 0


def test_refused_port_not_required_warns_and_proceeds(sw: SwitchLab, tmp_path: Path) -> None:
    host = _host(sw, tmp_path)
    ports, insts = _three_ports(second_required=False)
    sw.peer.control({"instances": {insts[1]: {"status": "insufficient-resources"}}})
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    result = host.hook(xml, "prepare", "begin")
    assert (result.rc, result.stderr, result.stdout) == (0, "", b""), result
    log = host.log_file.read_text()
    warnings = [line for line in log.splitlines() if MACS[1] in line and "not required" in line]
    assert warnings and "insufficient resources" in warnings[0], log
    holds = _switch_holds(sw)
    assert insts[0] in holds and insts[2] in holds and insts[1] not in holds
    lldpad = _lldpad_holds(sw)
    assert insts[1] not in lldpad and {lldpad[i]["mode"] for i in (insts[0], insts[2])} == {"assoc"}
    journal = host.journal(guest)
    assert journal is not None
    assert sorted(r["key"] for r in journal["records"]) == [MACS[0], MACS[2]]
    release = host.hook(xml, "release", "end")
    assert release.rc == 0
    assert not set(insts) & set(_switch_holds(sw)) and not set(insts) & set(_lldpad_holds(sw))
    assert host.journal(guest) is None, (host.journal(guest), host.log_file.read_text()[-3000:])


def _records(host: HookHost, guest: str) -> list[tuple[str, str, str]]:
    journal = host.journal(guest)
    return sorted((r["key"], r["kind"], r["state"]) for r in (journal or {"records": []})["records"])


def test_silent_switch_vetoes_within_the_exchange_timeout(sw: SwitchLab, tmp_path: Path) -> None:
    """The switch acknowledges ECP but never answers VDP (``exchange_timeout = 2``).

    What happens, step by step (lldpad 1.1, default vdprwd: it waits ~15.7 s for the switch itself):

    * ``prepare begin`` vetoes after one exchange timeout: each uplink's first request times out, the
      uplink's other requests are not sent.  Nothing is associated at the switch.
    * lldpad lists the two sent VSIs as in progress (no response); the rollback's DISASSOCIATE gets
      EBUSY (lldpad still waits), so the journal keeps both as ``pending``, saying that lldpad holds an
      unanswered request; the unsent port's intent is torn down (lldpad does not know it: EINVAL = done).
    * ``release end`` while lldpad still waits: EBUSY again, still pending (exit 0).
    * Once lldpad's own wait is over, lldpad has ended the VSIs but never forgets them (it deletes a VSI
      only after reporting a response, and there is none): DISASSOCIATE answers ENODEV.  That is no word
      from the switch (its answer may be lost or late): the records stay pending, with that cause.
    * The same VSIs stay in lldpad's netlink table, "in progress" (vdptool no longer lists them as
      associations), and a new ASSOCIATE for them gets ENODEV until lldpad restarts: the next start of
      this guest vetoes saying that lldpad holds an unanswered request since the first start, and to
      restart lldpad.  After the restart lldpad holds nothing for them: ``release end`` finishes.
    """
    host = _host(sw, tmp_path, exchange_timeout=2)
    ports, insts = _three_ports()
    sw.peer.control({"default": {"status": "silence"}})
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    started = time.monotonic()
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1, result
    assert 2.0 <= result.seconds < 3.5, result.seconds
    assert result.stderr.count("\n") == 1 and "guest vm" in result.stderr, result.stderr
    assert "no answer within 2.0 s" in result.stderr and (MACS[0] in result.stderr or MACS[2] in result.stderr)
    assert not set(insts) & set(_switch_holds(sw))
    assert [_seen(sw, i) for i in insts] == [[("assoc", "silence")], [], [("assoc", "silence")]]
    lldpad = _lldpad_holds(sw)
    assert {i: lldpad[i]["hints"] for i in insts if i in lldpad} == {insts[0]: "255", insts[2]: "255"}
    assert _records(host, guest) == [(MACS[0], "associate", "pending"), (MACS[2], "associate", "pending")]
    journal = host.journal(guest)
    assert journal is not None, journal
    assert all("holds an unanswered request" in r["error"] for r in journal["records"]), journal
    assert not any("retry in a moment" in r["error"] for r in journal["records"]), journal

    sw.peer.control({})  # the switch answers again
    early = host.hook(xml, "release", "end")
    assert early.rc == 0 and time.monotonic() - started < 10
    assert _records(host, guest) == [(MACS[0], "associate", "pending"), (MACS[2], "associate", "pending")]

    def causes() -> list[str]:
        return [r["error"] for r in (host.journal(guest) or {"records": []})["records"]]

    while not all("gave up waiting" in c for c in causes()):
        assert time.monotonic() - started < 40, causes()
        time.sleep(1.0)
        assert host.hook(xml, "release", "end").rc == 0
        # Whatever lldpad answers meanwhile, nothing unconfirmed is dropped.
        assert _records(host, guest) == [(MACS[0], "associate", "pending"), (MACS[2], "associate", "pending")]
    assert all("ENODEV" in c and "unknown" in c for c in causes()), causes()
    assert time.monotonic() - started > 14  # lldpad's own wait had to end first
    assert "left pending" in host.log_file.read_text().rstrip().splitlines()[-1]
    assert not set(insts) & set(_switch_holds(sw))
    assert [_seen(sw, i) for i in insts] == [[("assoc", "silence")], [], [("assoc", "silence")]]
    # vdptool lists them no more (lldpad set their mode to deassoc when it ended them); netlink does.
    assert not set(insts) & set(_lldpad_holds(sw))
    assert _netlink_table(sw) == {insts[0]: None, insts[2]: None}

    journal = host.journal(guest)
    assert journal is not None
    first = min(r["created"] for r in journal["records"])
    again = host.hook(xml, "prepare", "begin")
    assert again.rc == 1 and "restart lldpad" in again.stderr, again
    assert "holds an unanswered request from the switch for this VSI since" in again.stderr, again.stderr
    assert time.strftime("%H:%M:%S", time.localtime(first)) in again.stderr, again.stderr
    assert "check the port's MAC" not in again.stderr and "retry in a moment" not in again.stderr
    _restart_lldpad(sw)
    deadline = time.monotonic() + 20
    while host.journal(guest) is not None:  # lldpad's VDP22 refuses requests until EVB is negotiated again
        assert host.hook(xml, "release", "end").rc == 0
        assert time.monotonic() < deadline, _records(host, guest)
        time.sleep(0.5)
    while (fresh := host.hook(xml, "prepare", "begin")).rc != 0:
        # lldpad's VDP22 takes requests once EVB is negotiated with the peer again (EPROTONOSUPPORT before)
        assert "EPROTONOSUPPORT" in fresh.stderr and time.monotonic() < deadline, fresh
        time.sleep(0.5)
    assert set(insts) <= set(_switch_holds(sw))
    assert host.hook(xml, "release", "end").rc == 0
    assert not set(insts) & set(_switch_holds(sw)) and host.journal(guest) is None


def _restart_lldpad(sw: SwitchLab) -> None:
    """Restart the station's lldpad, and reset the switch ports' ECP receive state as a link flap would:
    the new lldpad numbers its frames from 1 again, and a switch that last received frame 1 from the old
    one takes the new frame 1 for a retransmission (acknowledged, dropped; lldpad's bridge does the same)."""
    sw.lab.stop_lldpad()
    resets = len(sw.peer.events("reset-ecp"))
    sw.peer.control({"commands": [{"id": str(uuid.uuid4()), "reset_ecp": True}]})
    _wait(lambda: len(sw.peer.events("reset-ecp")) > resets, 5, "ECP reset at the switch")
    sw.lab.start_lldpad(wait_evb=True, timeout=20)
    _wait_vdp(sw.lab, None, ["up0", "up1"])


def test_silent_switch_vetoes_an_incoming_migration_within_the_exchange_timeout(sw: SwitchLab, tmp_path: Path) -> None:
    """The same silence for an incoming migration, whose reservations go through lldpad's client interface
    with the migration hint: both uplinks wait side by side, so the veto still comes after one exchange
    timeout; the port never sent leaves no record, the two sent stay journaled for teardown."""
    host = _host(sw, tmp_path, exchange_timeout=2)
    ports, insts = _three_ports()
    sw.peer.control({"default": {"status": "silence"}})
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    assert host.hook(xml, "migrate", "begin").rc == 0
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1, result
    assert 2.0 <= result.seconds < 3.5, result.seconds
    assert result.stderr.count("\n") == 1 and "no VDP answer from the switch" in result.stderr, result.stderr
    assert [_seen(sw, i) for i in insts] == [[("preassoc-rr", "silence")], [], [("preassoc-rr", "silence")]]
    assert {r[0] for r in _records(host, guest)} == {MACS[0], MACS[2]}
    assert not set(insts) & set(_switch_holds(sw))
    # The migration is retried at once: lldpad's client interface refuses the reservation ("busy" or
    # "invalid parameters"); the veto says why -- lldpad still waits for the switch -- and since when.
    assert host.hook(xml, "migrate", "begin").rc == 0
    retry = host.hook(xml, "prepare", "begin")
    assert retry.rc == 1, retry
    assert "PREASSOCIATE_RR on up" in retry.stderr, retry.stderr
    assert "holds an unanswered request from the switch for this VSI since" in retry.stderr, retry.stderr
    assert "check the port's MAC" not in retry.stderr and "retry in a moment" not in retry.stderr
    assert [_seen(sw, i) for i in (insts[0], insts[2])] == [[("preassoc-rr", "silence")]] * 2
    # lldpad keeps the two sent VSIs until it restarts (see the test above); start the next test clean.
    sw.peer.control({})
    _restart_lldpad(sw)
    deadline = time.monotonic() + 20
    while host.journal(guest) is not None:  # lldpad's VDP22 refuses requests until EVB is negotiated again
        assert host.hook(xml, "release", "end").rc == 0
        assert time.monotonic() < deadline, _records(host, guest)
        time.sleep(0.5)
    while (fresh := host.hook(xml, "prepare", "begin")).rc != 0:
        assert "EVB" in fresh.stderr and time.monotonic() < deadline, fresh
        time.sleep(0.5)
    assert host.hook(xml, "release", "end").rc == 0
    assert not set(insts) & set(_switch_holds(sw)) and host.journal(guest) is None


def _requests(sw: SwitchLab, inst: str) -> list[tuple[str, str, int, bool, bool]]:
    """(switch port, mode, VLAN, M, S) of every non-keep-alive request the switch received for ``inst``."""
    return [(r["iface"], r["mode"], r["vlan"], r["hints"]["M"], r["hints"]["S"])
            for r in sw.peer.requests(inst) if not r["keepalive"]]


@pytest.mark.parametrize("hints", ["auto", "never"])
def test_incoming_migration_reserves_at_prepare_and_associates_at_started(
    sw: SwitchLab, tmp_path: Path, hints: str
) -> None:
    """As the switch sees it: PREASSOCIATE_RR per port at ``prepare begin``, nothing at ``start begin``,
    ASSOCIATE at ``started begin``.  With ``hints = auto`` (the uplinks run VDP22) every request carries
    the M bit (migration target); lldpad repeats the hints of a VSI's first request, so the destination's
    later DISASSOCIATE (``release end``) carries M as well, and never S.  ``hints = never``: no hint bits
    (netlink requests)."""
    host = _host(sw, tmp_path, extra=f"[vdp]\nhints = {hints}\n")
    ports, insts = _three_ports()
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    m = hints == "auto"
    where = {insts[0]: ("s0p0", 100), insts[1]: ("s0p0", 101), insts[2]: ("s0p1", 102)}

    def expect(*modes: str) -> dict[str, list[tuple[str, str, int, bool, bool]]]:
        return {i: [(port, mode, vlan, m, False) for mode in modes] for i, (port, vlan) in where.items()}

    assert host.hook(xml, "migrate", "begin").rc == 0
    assert {i: _requests(sw, i) for i in insts} == expect()
    assert host.hook(xml, "prepare", "begin").rc == 0
    assert {i: _requests(sw, i) for i in insts} == expect("preassoc-rr")
    assert {i: sw.peer.table()[p][i]["mode"] for i, (p, _) in where.items()} == dict.fromkeys(insts, "preassoc-rr")
    assert _records(host, guest) == [(mac, "reserve", "done") for mac in MACS]
    assert host.hook(xml, "start", "begin").rc == 0
    assert {i: _requests(sw, i) for i in insts} == expect("preassoc-rr")
    assert host.hook(xml, "started", "begin").rc == 0
    assert {i: _requests(sw, i) for i in insts} == expect("preassoc-rr", "assoc")
    assert {i: sw.peer.table()[p][i]["mode"] for i, (p, _) in where.items()} == dict.fromkeys(insts, "assoc")
    assert _records(host, guest) == [(mac, "associate", "done") for mac in MACS]
    assert {i: r["mode"] for i, r in _lldpad_holds(sw).items() if i in insts} == dict.fromkeys(insts, "assoc")
    assert host.hook(xml, "release", "end").rc == 0
    assert {i: _requests(sw, i) for i in insts} == expect("preassoc-rr", "assoc", "deassoc")
    assert not set(insts) & set(_switch_holds(sw)) and host.journal(guest) is None


def _vlan0_port(inst: str) -> list[Port]:
    params = {"managerid": "11", "typeid": "1193047", "typeidversion": "2", "instanceid": inst}
    return [Port(MACS[0], "fabric-a", params=params)]  # no vlan: the switch assigns


@pytest.mark.parametrize("hints", ["auto", "never"])
def test_switch_assigned_vlan_is_journaled_and_used_for_teardown(sw: SwitchLab, tmp_path: Path, hints: str) -> None:
    """Fact c end to end: a port without VLAN, the switch assigns 222.  The journal records 222 (from
    VsiResult.vlan) and ``release end`` de-associates with 222 (with VLAN 0 lldpad would refuse it)."""
    host = _host(sw, tmp_path, extra=f"[vdp]\nhints = {hints}\n")
    inst = str(uuid.uuid4())
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=_vlan0_port(inst))
    sw.peer.control({"vlan": 222})
    assert host.hook(xml, "prepare", "begin").rc == 0
    journal = host.journal(guest)
    assert journal is not None and journal["records"][0]["data"]["vlan"] == 222, journal
    assert sw.peer.table()["s0p0"][inst]["filters"][0]["vlan"] == 222
    assert host.hook(xml, "release", "end").rc == 0
    assert [(mode, vlan) for _, mode, vlan, _, _ in _requests(sw, inst)] == [("assoc", 0), ("deassoc", 222)]
    assert inst not in _switch_holds(sw) and host.journal(guest) is None


@pytest.mark.parametrize("hints", ["auto", "never"])
def test_incoming_migration_with_a_switch_assigned_vlan(sw: SwitchLab, tmp_path: Path, hints: str) -> None:
    """A port without VLAN on an incoming migration: the reservation learns the switch's VLAN (222) and
    the association at ``started begin`` must carry it (with VLAN 0 lldpad refuses it locally: EINVAL over
    netlink, 'invalid parameters' through liblldp_clif).  Failed until 176215b."""
    host = _host(sw, tmp_path, extra=f"[vdp]\nhints = {hints}\n")
    inst = str(uuid.uuid4())
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=_vlan0_port(inst))
    sw.peer.control({"vlan": 222})
    try:
        for op in ("migrate", "prepare", "start"):
            assert host.hook(xml, op, "begin").rc == 0
        journal = host.journal(guest)
        assert journal is not None and journal["records"][0]["data"]["vlan"] == 222, journal  # learnt
        started = host.hook(xml, "started", "begin")
        assert started.rc == 0, started.stderr
        assert sw.peer.table()["s0p0"][inst]["mode"] == "assoc"
    finally:
        assert host.hook(xml, "release", "end").rc == 0
        assert inst not in _switch_holds(sw) and host.journal(guest) is None
    assert [(mode, vlan) for _, mode, vlan, _, _ in _requests(sw, inst)] == [
        ("preassoc-rr", 0), ("assoc", 222), ("deassoc", 222)]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("hints", ["auto", "never"])
def test_one_port_switch_source_during_a_failed_incoming_migration(tmp_path: Path, hints: str) -> None:
    """Two hosts on a switch where a VSI lives at one port at a time (switch peer ``one-port``, migration
    hold 5 s).  The guest (ports i1 on fabric-a, i2 on fabric-b) runs on A.  B receives it: migrate,
    prepare, start and started begin with the same instance ids; B's switch port for fabric-b refuses
    the association, so ``started begin`` vetoes; B rolls back and runs ``release end``.  What A's ports
    look like at each step, at the switch and in A's lldpad:

    * B's reservations (PREASSOCIATE_RR at prepare) never touch A.
    * ``hints = never`` (netlink, no M bit): B's ASSOCIATE of i1 succeeds at ``started begin`` and the
      switch de-associates i1 at A at once; B's veto and rollback cannot give it back.  **The running
      source guest loses port i1** for good, while A's journal still says "associated" (drift; only a
      later ``reconnect begin`` on A re-associates it, shown at the end).
    * ``hints = auto`` (the VDP22 uplinks get the M bit through liblldp_clif): the switch keeps i1 at A,
      marked migrating, through B's failure; B's rollback DISASSOCIATE carries M, not S (lldpad repeats
      a VSI's first hints), and does not end the hold: when the hold times out the switch de-associates
      i1 at A anyway.  **The source loses i1 too, only later.**

    This is the product's current behaviour, asserted as is; the lead decides what to change (e.g. not
    associating at ``started begin`` on such switches, or a long-lived listener on the source).
    """
    with VdpLab(tmp_path / "lab", hosts={"a": ["up0", "up1"], "b": ["up0", "up1"]}, switch="none") as lab:
        assert lab.switch is not None
        names = lab.switch_ifnames()
        peer = SwitchPeer(lab.switch, list(names.values()), tmp_path / "peer", model="one-port",
                          migration_timeout=5.0)
        try:
            for h in ("a", "b"):
                for u in ("up0", "up1"):
                    lab.lldpad(h).wait_evb(u, timeout=15)
            time.sleep(1.5)  # VDP22 starts once EVB is negotiated
            extra = f"[vdp]\nhints = {hints}\n"
            a = HookHost(lab, "a", tmp_path, uplinks=UPLINKS, extra=extra)
            b = HookHost(lab, "b", tmp_path, uplinks=UPLINKS, extra=extra)
            three, insts3 = _three_ports()
            ports = [three[0], Port(MACS[2], "fabric-b", vlan=102, params=three[2].params)]
            i1, i2 = insts3[0], insts3[2]
            guest = str(uuid.uuid4())
            xml = domain_xml("vm", guest, ports=ports)

            def lldpad_a() -> dict[str, int | None]:
                env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(ROOT)}
                cmd = {"steps": [{"op": "table", "ifname": "up0"}, {"op": "table", "ifname": "up1"}]}
                out = lab.run_in_host("a", [sys.executable, "-c", DRIVER, json.dumps(cmd)], env=env)
                return {row[0]: row[2] for st in json.loads(out.stdout)["steps"] for row in st["table"]}

            def view() -> tuple[dict[str, tuple[str, bool]], dict[str, str], dict[str, int | None]]:
                """(A's ports at the switch: mode, migrating), (B's ports at the switch), A's lldpad."""
                t = peer.table()
                at_a = {i: (t[names[("a", u)]][i]["mode"], t[names[("a", u)]][i]["migrating"])
                        for u in ("up0", "up1") for i in (i1, i2) if i in t[names[("a", u)]]}
                at_b = {i: t[names[("b", u)]][i]["mode"] for u in ("up0", "up1") for i in (i1, i2)
                        if i in t[names[("b", u)]]}
                return at_a, at_b, lldpad_a()

            full = ({i1: ("assoc", False), i2: ("assoc", False)}, {}, {i1: 0, i2: 0})
            reserved = (full[0], {i1: "preassoc-rr", i2: "preassoc-rr"}, full[2])
            for op in ("prepare", "start", "started"):
                assert a.hook(xml, op, "begin").rc == 0
            assert view() == full
            peer.control({"ifaces": {names[("b", "up1")]: {"status": "insufficient-resources", "modes": ["assoc"]}}})
            assert b.hook(xml, "migrate", "begin").rc == 0
            assert view() == full
            assert b.hook(xml, "prepare", "begin").rc == 0
            assert view() == reserved
            assert b.hook(xml, "start", "begin").rc == 0
            assert view() == reserved
            started = b.hook(xml, "started", "begin")
            assert started.rc == 1 and MACS[2] in started.stderr and "insufficient resources" in started.stderr
            if hints == "never":
                lost = ({i2: ("assoc", False)}, {}, {i2: 0})
                _wait(lambda: i1 not in lldpad_a(), 3, "A's lldpad drops i1 after the switch's de-associate")
                assert view() == lost
            else:
                held = ({i1: ("assoc", True), i2: ("assoc", False)}, {}, {i1: 0, i2: 0})
                assert view() == held
            assert b.hook(xml, "release", "end").rc == 0
            assert b.journal(guest) is None
            if hints == "auto":
                assert view() == held
                ev = peer.wait_event(lambda e: e["event"] == "switch-deassoc", 8, "hold timeout")
                assert (ev["iface"], ev["instance"], ev["reason"]) == (names[("a", "up0")], i1, "migration-timeout")
                _wait(lambda: i1 not in lldpad_a(), 3, "A's lldpad drops i1 after the hold timed out")
            else:
                (ev,) = peer.events("switch-deassoc")
                assert (ev["iface"], ev["instance"], ev["reason"]) == (names[("a", "up0")], i1, "moved")
            assert view() == ({i2: ("assoc", False)}, {}, {i2: 0})
            # A's journal still claims both ports: drift the source does not notice by itself.
            assert _records(a, guest) == [(MACS[0], "associate", "done"), (MACS[2], "associate", "done")]
            m = hints == "auto"
            assert [(r["iface"], r["mode"], r["hints"]["M"], r["hints"]["S"]) for r in peer.requests(i1)
                    if not r["keepalive"]] == [
                (names[("a", "up0")], "assoc", False, False),
                (names[("b", "up0")], "preassoc-rr", m, False),
                (names[("b", "up0")], "assoc", m, False),
                (names[("b", "up0")], "deassoc", m, False),
            ]
            # The way back today: reconnect begin on A (e.g. after a libvirtd restart) re-associates i1.
            assert a.hook(xml, "reconnect", "begin").rc == 0
            _wait(lambda: lldpad_a().get(i1) == 0, 3, "A re-associated i1")
            assert view() == full
            assert a.hook(xml, "release", "end").rc == 0
            assert view() == ({}, {}, {})
        finally:
            peer.stop()


REASONS = ["-", "unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot", "daemon"]


@pytest.mark.parametrize("how", ["start", "incoming"])
@pytest.mark.parametrize("reason", REASONS)
def test_release_with_every_reason_leaves_nothing(sw: SwitchLab, tmp_path: Path, how: str, reason: str) -> None:
    """``release end`` as libvirt 9.0 (``-``) and 10.5+ (the shutoff reason) call it, for VSIs made over
    netlink (a fresh start) and through lldpad's client interface (an incoming migration: hint "to").
    Every reason tears down over the VSI's own transport, answered by the switch (no exchange timeout
    waited out), and leaves nothing at the switch, in lldpad or in the journal; the reason is logged."""
    host = _host(sw, tmp_path)
    ports, insts = _three_ports()
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    ops = ("migrate", "prepare", "start", "started") if how == "incoming" else ("prepare", "start", "started")
    for op in ops:
        assert host.hook(xml, op, "begin").rc == 0
    journal = host.journal(guest)
    assert journal is not None
    via = "clif" if how == "incoming" else "netlink"
    assert [r["data"]["via"] for r in journal["records"]] == [via] * 3, journal
    assert set(insts) <= set(_switch_holds(sw))
    assert host.hook(xml, "stopped", "end", reason).rc == 0
    result = host.hook(xml, "release", "end", reason)
    assert (result.rc, result.stderr, result.stdout) == (0, "", b""), result
    assert result.seconds < 5  # exchange_timeout: nothing was waited out
    assert host.journal(guest) is None, host.journal(guest)
    assert not set(insts) & set(_switch_holds(sw)), sw.peer.table()
    assert not set(insts) & set(_lldpad_holds(sw)) and not set(insts) & set(_netlink_table(sw))
    assert [m for m, _ in _seen(sw, insts[0])][-1] == "deassoc"
    last = host.log_file.read_text().rstrip().splitlines()[-1]
    assert last.endswith(f"released (libvirt's reason: {reason})"), last
    print(f"release end {reason!r} after {how}: {result.seconds * 1000:.0f} ms")


@pytest.mark.parametrize("hints", ["auto", "never"])
@pytest.mark.parametrize("refusal", [{"status": "keep", "code": 2}, {"status": "insufficient-resources", "hard": True}],
                         ids=["keep", "hard"])
def test_refused_association_after_a_reservation_vetoes_at_once(
    sw: SwitchLab, tmp_path: Path, hints: str, refusal: dict[str, object]
) -> None:
    """An incoming migration: PREASSOCIATE_RR accepted at ``prepare begin``, then the switch refuses the
    ASSOCIATE at ``started begin`` (the modify path of a VSI lldpad holds) with KEEP or a hard error.
    lldpad knows at once (its table; through liblldp_clif it sends no event for a KEEP, its VSI listing
    shows it): the veto comes in a fraction of the exchange timeout (10 s here), names the request and the
    cause, and says the port's MAC and uplink once each; the guest never resumes.  Rollback and
    ``release end failed`` leave nothing anywhere."""
    host = _host(sw, tmp_path, exchange_timeout=10, extra=f"[vdp]\nhints = {hints}\n")
    ports, insts = _three_ports()
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports[:1])
    for op in ("migrate", "prepare", "start"):
        assert host.hook(xml, op, "begin").rc == 0
    sw.peer.control({"instances": {insts[0]: {**refusal, "modes": ["assoc"]}}})
    started = host.hook(xml, "started", "begin")
    assert started.rc == 1, started
    assert started.seconds < 5, started  # not the exchange timeout
    line = started.stderr
    assert line.count("\n") == 1, line
    assert ": ASSOCIATE on up0: " in line, line
    assert line.count(MACS[0]) == 1 and line.count("up0") == 1, line
    words = ("keep", "insufficient resources") if refusal["status"] == "keep" else ("hard error",)
    assert all(w in line for w in words), line
    assert "check EVB" not in line and "no VDP answer" not in line, line
    assert _seen(sw, insts[0])[:2] == [("preassoc-rr", "success"), ("assoc", str(refusal["status"]))]
    assert host.hook(xml, "release", "end", "failed").rc == 0
    assert host.journal(guest) is None, host.journal(guest)
    assert insts[0] not in _switch_holds(sw) and insts[0] not in _netlink_table(sw)
    print(f"{hints} {refusal['status']}: {started.seconds * 1000:.0f} ms: {line}")


@pytest.mark.parametrize("how", ["start", "incoming"])
def test_late_success_after_a_veto_is_drift_and_withdrawn_by_the_next_teardown(
    sw: SwitchLab, tmp_path: Path, how: str
) -> None:
    """A slow switch: it holds its answer (switch peer ``hold``) until the test releases it.  The hook
    vetoes after the exchange timeout; the rollback's DISASSOCIATE is refused (lldpad still waits: EBUSY),
    so the records stay pending, saying so.  A retry meanwhile is vetoed naming that cause, since when,
    not "retry in a moment".  Then the switch's SUCCESS arrives, late: the switch holds a VSI for a guest
    that never ran.  ``vdp-hooks status`` flags it (exit 1), and the next ``release end`` withdraws it:
    nothing is left at the switch, in lldpad or in the journal."""
    host = _host(sw, tmp_path, exchange_timeout=2)
    ports, insts = _three_ports()
    ports, insts = [ports[0], ports[2]], [insts[0], insts[2]]  # one port per uplink
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    sw.peer.control({"default": {"status": "hold"}})
    begin = ("migrate", "prepare") if how == "incoming" else ("prepare",)
    mode = "preassoc-rr" if how == "incoming" else "assoc"
    for op in begin[:-1]:
        assert host.hook(xml, op, "begin").rc == 0
    vetoed = host.hook(xml, begin[-1], "begin")
    assert vetoed.rc == 1 and "no " in vetoed.stderr and "answer" in vetoed.stderr, vetoed
    print(f"\n{how}: veto after {vetoed.seconds * 1000:.0f} ms: {vetoed.stderr.strip()}")
    assert [_seen(sw, i) for i in insts] == [[(mode, "hold")]] * 2
    assert [r[2] for r in _records(host, guest)] == ["pending", "pending"]
    journal = host.journal(guest)
    assert journal is not None
    assert all("holds an unanswered request" in r["error"] for r in journal["records"]), journal
    since = time.strftime("%H:%M:%S", time.localtime(min(r["created"] for r in journal["records"])))

    for op in begin[:-1]:
        assert host.hook(xml, op, "begin").rc == 0
    retry = host.hook(xml, begin[-1], "begin")
    assert retry.rc == 1, retry
    print(f"{how}: retry vetoed after {retry.seconds * 1000:.0f} ms: {retry.stderr.strip()}")
    assert "holds an unanswered request from the switch for this VSI since" in retry.stderr, retry.stderr
    assert since in retry.stderr, (since, retry.stderr)
    assert "retry in a moment" not in retry.stderr and "check the port's MAC" not in retry.stderr, retry.stderr
    assert [_seen(sw, i) for i in insts] == [[(mode, "hold")]] * 2  # lldpad sent nothing more

    sw.peer.control({"commands": [{"id": f"late-{i}", "release": i} for i in insts]})
    _wait(lambda: set(insts) <= set(_switch_holds(sw)), 5, "the switch took the late requests")
    _wait(lambda: all(_netlink_table(sw).get(i) == 0 for i in insts), 5, "lldpad heard the late SUCCESS")
    status = host.cli("status", "--json")
    assert status.returncode == 1, status
    doc = json.loads(status.stdout)
    assert doc["drift"] is True
    (mine,) = [g for g in doc["guests"] if g["uuid"] == guest]
    assert {r["state"] for r in mine["records"]} == {"pending"}
    assert all(r["drift"] and "teardown is pending" in r["live"] for r in mine["records"]), mine

    sw.peer.control({})
    release = host.hook(xml, "release", "end", "failed" if how == "incoming" else "-")
    assert (release.rc, release.stderr) == (0, ""), release
    print(f"{how}: status exit {status.returncode}; release end after the late SUCCESS {release.seconds * 1000:.0f} ms")
    assert host.journal(guest) is None, host.journal(guest)
    assert not set(insts) & set(_switch_holds(sw)), sw.peer.table()
    assert not set(insts) & set(_netlink_table(sw)) and not set(insts) & set(_lldpad_holds(sw))
    assert [_seen(sw, i)[-1] for i in insts] == [("deassoc", "success")] * 2


def test_unanswered_disassociate_stays_pending_through_lldpads_enodev(sw: SwitchLab, tmp_path: Path) -> None:
    """The switch took the association, then holds its answer to the DISASSOCIATE (``hold``).
    ``release end`` waits one exchange timeout and keeps the record pending; later ones get EBUSY (lldpad
    still waits), then, once lldpad has given up on the switch (~16 s), ENODEV.  None of these is the
    switch letting go -- it still holds the VSI -- so the record stays pending, saying so.  When the
    switch finally answers, lldpad forgets the VSI: the next ``release end`` is done."""
    host = _host(sw, tmp_path, exchange_timeout=2)
    ports, insts = _three_ports()
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports[:1])
    assert host.hook(xml, "prepare", "begin").rc == 0
    assert insts[0] in _switch_holds(sw)
    sw.peer.control({"default": {"status": "hold", "modes": ["deassoc"]}})
    started = time.monotonic()
    first = host.hook(xml, "release", "end", "destroyed")
    assert (first.rc, first.stderr) == (0, ""), first
    assert first.seconds >= 2  # the exchange timeout, waited once
    assert _records(host, guest) == [(MACS[0], "associate", "pending")]

    def cause() -> str:
        journal = host.journal(guest)
        assert journal is not None, "the record was dropped"
        (record,) = journal["records"]
        assert record["state"] == "pending", record
        return str(record["error"])

    assert "DISASSOCIATE on up0: no answer within 2.0 s" in cause(), cause()
    print(f"\nrelease end, switch silent on DISASSOCIATE: {first.seconds * 1000:.0f} ms, pending: {cause()}")
    causes = set()
    while "gave up waiting" not in cause():
        assert time.monotonic() - started < 40, cause()
        later = host.hook(xml, "release", "end", "destroyed")
        assert later.rc == 0
        if cause() not in causes:
            took = f"{time.monotonic() - started:.1f} s: {later.seconds * 1000:.0f} ms"
            print(f"release end after {took}, pending: {cause()}")
        causes.add(cause())
        time.sleep(1.0)
    assert "ENODEV" in cause() and "whether the switch holds the VSI is unknown" in cause()
    assert any("lldpad waits about 16 s" in c for c in causes), causes  # EBUSY on the way
    # Since when: the unanswered request is the first release end's DISASSOCIATE, not the association.
    journal = host.journal(guest)
    assert journal is not None
    at, op = journal["records"][0]["data"]["unanswered"]
    assert op == "release end" and at > journal["records"][0]["created"]
    assert f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} (release end)" in cause(), cause()
    assert insts[0] in _switch_holds(sw)  # it does
    assert [m for m, _ in _seen(sw, insts[0])] == ["assoc", "deassoc"]
    # The switch answers at last: lldpad takes the late answer to the withdrawal it had given up on and
    # forgets the VSI (measured); the next teardown finds nothing held and is done.
    sw.peer.control({"commands": [{"id": "late-deassoc", "release": insts[0]}]})
    _wait(lambda: insts[0] not in _switch_holds(sw), 5, "the switch let go")
    _wait(lambda: insts[0] not in _netlink_table(sw), 5, "lldpad forgot the VSI")
    last = host.hook(xml, "release", "end", "destroyed")
    assert (last.rc, last.stderr) == (0, ""), last
    print(f"release end after the switch's late answer: {last.seconds * 1000:.0f} ms, done")
    assert host.journal(guest) is None, host.journal(guest)
    assert insts[0] not in _netlink_table(sw) and insts[0] not in _switch_holds(sw)


@pytest.mark.parametrize("how", ["start", "incoming"])
def test_journal_without_the_transport_is_torn_down_the_way_the_vsi_was_made(
    sw: SwitchLab, tmp_path: Path, how: str
) -> None:
    """A journal written before records carried ``via`` (an upgrade with guests running): a record that
    learnt a migration ``hint`` was made through lldpad's client interface, any other over netlink.
    ``release end migrated`` (libvirt >= 10.5 on a migration's source) takes that way, without waiting."""
    host = _host(sw, tmp_path)
    ports, insts = _three_ports()
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    for op in ("migrate", "prepare", "start", "started") if how == "incoming" else ("prepare",):
        assert host.hook(xml, op, "begin").rc == 0
    path = host.state_dir / f"{guest}.json"
    doc = json.loads(path.read_text())
    for record in doc["records"]:
        del record["data"]["via"]
        assert ("hint" in record["data"]) == (how == "incoming"), record
    path.write_text(json.dumps(doc))
    result = host.hook(xml, "release", "end", "migrated")
    assert (result.rc, result.stderr) == (0, ""), result
    assert result.seconds < 5, result.seconds  # exchange_timeout: nothing waited out
    assert host.journal(guest) is None, host.journal(guest)
    assert not set(insts) & set(_switch_holds(sw)) and not set(insts) & set(_netlink_table(sw))
