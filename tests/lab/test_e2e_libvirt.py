"""End to end, the way a sysadmin sees it: real libvirtd 9.0 + QEMU (TCG) on hosts A and B, a real
station lldpad on each, one switch (the lab's VDP22 switch peer, which says yes or, when told, no), and
this product as the hook libvirt runs (``qemu.d/50-vdp-hooks``, ``/usr/bin/python3``).

Every outcome is checked from outside the product as well: ``virsh`` (domain state with its reason,
lifecycle events), the station lldpad's own VSI table (``vdptool``) and the switch's table and request
log; the product's journal and ``vdp-hooks status`` are compared with those.

Timings (``virsh`` wall time and the hook's own share, from the ``ms=`` fields of its log) are printed
with ``-s`` and at the end of the module.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness.e2e import (
    ENTRY,
    HOOK_LINK,
    E2EHost,
    E2ELab,
    EventWatch,
    Guest,
    Timing,
    netns_exists,
    pids_alive,
    wait_until,
)
from tests.lab.harness.libvirt import LIBVIRTD, guest_xml

pytestmark = [
    pytest.mark.lab,
    pytest.mark.libvirt,
    pytest.mark.skipif(not os.access(LIBVIRTD, os.X_OK), reason="apt-get install libvirt-daemon-driver-qemu"),
]

TIMINGS: list[Timing] = []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ELab]:
    t0 = time.monotonic()
    with E2ELab(tmp_path_factory.mktemp("e2e")) as the_lab:
        print(f"\ne2e lab built in {time.monotonic() - t0:.1f} s")
        netns = the_lab.vdp.netns_names()
        pids = [*the_lab.vdp.all_pids(), the_lab.peer.daemon.pid]
        try:
            yield the_lab
        finally:
            pids += [h.libvirt.pid for h in the_lab.hosts.values() if h.libvirt.daemon is not None]
            pids += [p for h in the_lab.hosts.values() for p in h.libvirt.qemu_pids()]
    print("\ne2e timings:\n  " + "\n  ".join(t.line() for t in TIMINGS))
    # Torn down: every process the lab started is gone, every namespace deleted.
    assert not pids_alive(pids), pids_alive(pids)
    assert not [n for n in netns if netns_exists(n)]


@pytest.fixture(autouse=True)
def _switch_says_yes(lab: E2ELab) -> Iterator[None]:
    """Every test starts and ends with a switch that accepts everything."""
    lab.accept_all()
    yield
    lab.accept_all()


def _record(what: str, seconds: float, host: E2EHost, mark: int, guest: Guest) -> Timing:
    timing = Timing(what, seconds, E2ELab.hook_share(host.hook_lines(mark), guest))
    TIMINGS.append(timing)
    print("\n" + timing.line())
    return timing


def _start_on(lab: E2ELab, host: E2EHost, guest: Guest, what: str | None = None) -> None:
    mark = host.log_mark()
    r, seconds = host.create(guest)
    assert r.returncode == 0, r.stderr
    if what:
        _record(what, seconds, host, mark, guest)


def _assert_associated(lab: E2ELab, host: E2EHost, guest: Guest) -> None:
    """``host``'s ports of ``guest`` are associated: in its lldpad's table and in the switch's."""
    instances = set(guest.instances())
    assert instances <= host.vsi_uuids(), f"{host.name}'s lldpad: {host.vsi_table()}"
    table = host.switch_table()
    assert instances <= set(table), f"switch port of {host.name}: {table}"
    assert {table[i]["mode"] for i in instances} == {"assoc"}
    # The VLAN the guest asked for is the one the switch holds.
    assert sorted(table[i]["filters"][0]["vlan"] for i in instances) == sorted(p.vlan or 0 for p in guest.ports)


def _assert_nothing_left(lab: E2ELab, host: E2EHost, guest: Guest) -> None:
    """No domain, no association (lldpad and switch), no journal file for ``guest`` on ``host``."""
    instances = set(guest.instances())
    assert guest.name not in host.domains()
    assert not instances & host.vsi_uuids(), f"{host.name}'s lldpad: {host.vsi_table()}"
    assert not instances & set(host.switch_table()), f"switch port of {host.name}: {host.switch_table()}"
    leftovers = [p.name for p in host.state_dir.glob("*")] if host.state_dir.is_dir() else []
    assert not [n for n in leftovers if guest.uuid in n], leftovers


def _cleanup(lab: E2ELab, guest: Guest) -> None:
    for host in lab.hosts.values():
        host.destroy(guest.name)


def _one_line_reason(stderr: str) -> str:
    """The hook's stderr as libvirt quotes it: what follows ``unexpected exit status 1:``."""
    m = re.search(r"unexpected exit status 1: (.*)$", stderr.strip(), re.S)
    assert m, f"not a hook failure: {stderr!r}"
    return m.group(1).strip()


# -- 1. start ---------------------------------------------------------------------------------------


def test_start_on_a_associates(lab: E2ELab) -> None:
    guest = lab.guest("start")
    since = time.time()
    try:
        _start_on(lab, lab.a, guest, "start on A (2 hook ports of 3 NICs)")
        assert lab.a.domstate(guest.name) == "running (booted)"
        _assert_associated(lab, lab.a, guest)
        # The switch saw exactly one associate per port, from A, and nothing from B.
        reqs = lab.switch_requests(since=since, instances=guest.instances())
        assert sorted((r["iface"], r["mode"], r["mac"]) for r in reqs) == sorted(
            (lab.a.switch_port(), "assoc", p.mac) for p in guest.ports
        )
        journal = lab.a.journal(guest.uuid)
        assert journal is not None
        assert sorted((r["key"], r["kind"], r["state"]) for r in journal["records"] if r["feature"] == "vdp") == [
            (p.mac, "associate", "done") for p in guest.ports
        ]
    finally:
        _cleanup(lab, guest)
    _assert_nothing_left(lab, lab.a, guest)
    # The hook's processes as a whole (interpreter start, imports, work), exec'd as this libvirtd does.
    walls = {}
    for op, subop in (("prepare", "begin"), ("start", "begin"), ("started", "begin"), ("release", "end")):
        rc, stderr, walls[f"{op} {subop}"] = lab.a.exec_hook(guest, op, subop)
        assert (rc, stderr) == (0, "")
    _assert_nothing_left(lab, lab.a, guest)
    print("  hook processes, wall: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in walls.items()))
    # For comparison: the same guest without our metadata (the hook's fast path; nothing is logged).
    plain = lab.guest("plain", managed=0)
    mark = lab.a.log_mark()
    r, seconds = lab.a.create(plain, xml=guest_xml(plain.name, plain.uuid, plain.macs))
    try:
        assert r.returncode == 0, r.stderr
        _record("start on A, no hook-managed port (fast path)", seconds, lab.a, mark, plain)
        assert lab.a.hook_lines(mark) == []
    finally:
        _cleanup(lab, plain)


# -- 2. live migration --------------------------------------------------------------------------------


#: ``release end``'s last argument: what libvirt 9.0 (Debian 12) passes, and what libvirt >= 10.5 passes
#: (Debian 13). Both are forced through the lab's hook wrapper (E2EHost.fake_release_reason), whatever the
#: lab's own libvirtd would pass.
STYLES = ["libvirt-9.0", "libvirt-10.5"]


def _reason(style: str, reason: str) -> str:
    return reason if style == "libvirt-10.5" else "-"


def _released_with(host: E2EHost, mark: int, guest: Guest, reason: str) -> list[float]:
    """The ``release end`` lines of ``guest`` on ``host`` since ``mark``: each says libvirt's reason and
    nothing was left pending; their ``ms`` (the hook's own time)."""
    lines = [x for x in host.hook_lines(mark) if x.fields.get("uuid") == guest.uuid
             and x.fields.get("op") == "release end" and x.message.startswith("released")]
    assert lines, f"no release end for {guest.name} on {host.name}"
    assert [x.message for x in lines] == [f"released (libvirt's reason: {reason})"] * len(lines), lines
    return [x.ms or 0.0 for x in lines]


@pytest.mark.parametrize("style", STYLES)
def test_live_migration_a_to_b(lab: E2ELab, style: str) -> None:
    """Also as libvirt >= 10.5 runs it: ``release end migrated`` on A (the source) after the migration,
    ``release end destroyed`` on B at the end -- each tears down over the transport its VSIs were made
    with, in about the time of libvirt 9.0's ``release end -`` (far below the 10 s exchange timeout)."""
    guest = lab.guest(f"mig{style[-2:].replace('.', '')}")
    lab.a.fake_release_reason(guest.name, _reason(style, "migrated"))
    lab.b.fake_release_reason(guest.name, _reason(style, "destroyed"))
    try:
        _start_on(lab, lab.a, guest)
        since = time.time()
        mark_a, mark_b = lab.a.log_mark(), lab.b.log_mark()
        with EventWatch(lab.b) as events_b:
            r, seconds = lab.migrate(lab.a, lab.b, guest.name)
            assert r.returncode == 0, r.stderr
            wait_until(lambda: any("Resumed" in e[2] for e in events_b.events(guest.name)), 10, "Resumed on B")
        _record("live migration A->B", seconds, lab.b, mark_b, guest)
        print("  source side (A): " + ", ".join(
            f"{k} {v:.0f} ms" for k, v in E2ELab.hook_share(lab.a.hook_lines(mark_a), guest).items()))
        assert guest.name not in lab.a.domains()
        assert lab.b.domstate(guest.name) == "running (migrated)"

        resumed = min(t for t, _, text in events_b.events(guest.name) if text.startswith("Resumed"))
        on_b = lab.switch_requests(lab.b, since=since, instances=guest.instances())
        for instance in guest.instances():
            modes = [(e["mode"], e["answer"]) for e in on_b if e["instance"] == instance]
            # B reserved (pre-associate with resource reservation) and then associated, both accepted.
            assert modes == [("preassoc-rr", "success"), ("assoc", "success")], modes
        # ... before the guest resumed on B (the switch's clock and libvirt's are the same machine's).
        assert max(e["time"] for e in on_b) < resumed
        # VDP22 migration hint (M: "migrating to") on B's requests.
        assert all(e["hints"]["M"] for e in on_b), on_b

        # A has disassociated; B holds the association.
        on_a = lab.switch_requests(lab.a, since=since, instances=guest.instances())
        assert sorted(e["mode"] for e in on_a) == ["deassoc"] * len(guest.ports)
        _assert_nothing_left(lab, lab.a, guest)
        _assert_associated(lab, lab.b, guest)
        (ms,) = _released_with(lab.a, mark_a, guest, _reason(style, "migrated") or "-")
        assert ms < 5000, ms  # no exchange timeout waited out
        print(f"  A's release end ({style}): {ms:.0f} ms")

        # vdp-hooks status on both hosts agrees with the switch.
        status_a, status_b = lab.a.status(), lab.b.status()
        assert status_a["rc"] == 0 and status_b["rc"] == 0
        assert not [g for g in status_a["guests"] if g["uuid"] == guest.uuid]
        (entry,) = [g for g in status_b["guests"] if g["uuid"] == guest.uuid]
        records = [r for r in entry["records"] if r["feature"] == "vdp"]
        assert {r["data"]["instance"] for r in records} == set(lab.b.switch_table()) & set(guest.instances())
        assert {(r["kind"], r["state"], r["drift"]) for r in records} == {("associate", "done", False)}
        assert all(str(r["live"]).startswith("ok") for r in records)
        mark_b = lab.b.log_mark()
    finally:
        _cleanup(lab, guest)
        lab.a.fake_release_reason(guest.name, None)
        lab.b.fake_release_reason(guest.name, None)
    _assert_nothing_left(lab, lab.b, guest)
    (ms,) = _released_with(lab.b, mark_b, guest, _reason(style, "destroyed") or "-")
    print(f"  B's release end after virsh destroy ({style}): {ms:.0f} ms")


# -- 3. veto at B -------------------------------------------------------------------------------------


def _break_b(lab: E2ELab, how: str) -> None:
    if how == "switch-refuses":
        lab.refuse(lab.b, "insufficient-resources")
    elif how == "lldpad-down":
        lab.vdp.stop_lldpad("b")
    elif how == "uplink-down":
        lab.vdp.set_link("b", lab.b.uplink, False)
    elif how == "evb-off":
        lldpad = lab.vdp.lldpad("b")
        lldpad.ifaces[lab.b.uplink] = "evb-off"
        lldpad.restart()
    else:
        raise ValueError(how)


def _repair_b(lab: E2ELab, how: str) -> None:
    if how == "switch-refuses":
        lab.accept_all()
        return
    if how == "lldpad-down":
        lab.vdp.start_lldpad("b")
    elif how == "uplink-down":
        lab.vdp.set_link("b", lab.b.uplink, True)
    elif how == "evb-off":
        lldpad = lab.vdp.lldpad("b")
        lldpad.ifaces[lab.b.uplink] = "station"
        lldpad.restart()
    lab.wait_ready("b", timeout=30)


# What the hook's one line must say, per cause (lower case).
VETO_WORDS = {
    "switch-refuses": ("eth7", "insufficient resources"),
    "lldpad-down": ("lldpad",),
    "uplink-down": ("eth7", "down"),
    "evb-off": ("eth7", "evb"),
}


@pytest.mark.parametrize("how", list(VETO_WORDS))
def test_veto_at_b_leaves_a_untouched(lab: E2ELab, how: str) -> None:
    guest = lab.guest(f"veto{how[:6]}")
    try:
        _start_on(lab, lab.a, guest)
        _assert_associated(lab, lab.a, guest)
        since = time.time()
        _break_b(lab, how)
        try:
            mark = lab.b.log_mark()
            with EventWatch(lab.a) as events_a:
                r, seconds = lab.migrate(lab.a, lab.b, guest.name)
                time.sleep(0.3)  # let a late event arrive, if any
                assert events_a.proc.poll() is None, "the event watch on A died"
        finally:
            _repair_b(lab, how)
        timing = _record(f"vetoed migration ({how})", seconds, lab.b, mark, guest)
        print(f"  virsh: {r.stderr.strip()}")
        assert r.returncode != 0
        reason = _one_line_reason(r.stderr)
        assert "\n" not in reason and reason.startswith("libvirt-vdp-hooks:"), reason
        assert f"guest {guest.name}" in reason
        for word in VETO_WORDS[how]:
            assert word in reason.lower(), (word, reason)
        assert HOOK_LINK.split("/")[1] in r.stderr  # libvirt names our hook script
        assert timing.hook_ms, "the hook logged nothing on B"

        # The guest keeps running on A and was never paused.
        assert lab.a.domstate(guest.name) == "running (booted)"
        assert events_a.events(guest.name) == []
        _assert_associated(lab, lab.a, guest)
        # B has nothing left: no domain, no association, no journal; the switch saw nothing stay.
        _assert_nothing_left(lab, lab.b, guest)
        if how == "switch-refuses":
            refused = lab.switch_requests(lab.b, since=since, instances=guest.instances())
            assert refused and {e["answer"] for e in refused} <= {"insufficient-resources", "success"}
        else:
            assert lab.switch_requests(lab.b, since=since, instances=guest.instances()) == []
    finally:
        _cleanup(lab, guest)
    _assert_nothing_left(lab, lab.a, guest)


# -- 4. the same refusal, not required ---------------------------------------------------------------


def _relaxed_xml(lab: E2ELab, guest: Guest) -> Path:
    """The guest's migratable XML from A with only its metadata changed: the guest's VDP policy 'no'."""
    xml = lab.a.virsh("dumpxml", "--migratable", guest.name).stdout
    relaxed = guest.metadata(policy={"vdp": False})
    new, n = re.subn(r"<(\w+):hooks\b.*?</\1:hooks>", lambda _m: relaxed, xml, flags=re.S)
    assert n == 1, xml
    path = lab.workdir / f"{guest.name}-relaxed.xml"
    path.write_text(new)
    return path


@pytest.mark.parametrize("how", ["port-not-required", "migrate-xml", "emergency"])
def test_refusal_not_required_lets_the_guest_move(lab: E2ELab, how: str) -> None:
    guest = lab.guest(f"opt{how[:5]}", required=False if how == "port-not-required" else None)
    try:
        _start_on(lab, lab.a, guest)
        xml_file = _relaxed_xml(lab, guest) if how == "migrate-xml" else None
        if how == "emergency":
            r = lab.b.cli("emergency", "--for", "10m", "--reason", "e2e evacuation")
            assert r.returncode == 0, r.stderr
        lab.refuse(lab.b, "insufficient-resources")
        mark = lab.b.log_mark()
        try:
            r, seconds = lab.migrate(lab.a, lab.b, guest.name, xml_file=xml_file)
        finally:
            lab.accept_all()
            if how == "emergency":
                off = lab.b.cli("emergency", "--off")
                assert off.returncode == 0, off.stderr
        _record(f"migration with refusal, not required ({how})", seconds, lab.b, mark, guest)
        assert r.returncode == 0, r.stderr
        assert lab.b.domstate(guest.name) == "running (migrated)"
        lines = [x for x in lab.b.hook_lines(mark) if x.fields.get("uuid") == guest.uuid]
        warnings = [x.text for x in lines if x.level == "WARNING"]
        assert warnings, "\n".join(x.text for x in lines)
        print("  warning on B: " + warnings[0])
        if how == "emergency":
            assert any("emergency" in w for w in warnings)
        # The refused ports are not associated on B; A has let go of them.
        assert not set(guest.instances()) & lab.b.vsi_uuids()
        _assert_nothing_left(lab, lab.a, guest)
    finally:
        _cleanup(lab, guest)
    _assert_nothing_left(lab, lab.b, guest)


# -- 5. libvirtd restarted on B -----------------------------------------------------------------------


@pytest.mark.parametrize("lldpad_lost_them", [False, True], ids=["kept", "lldpad-restarted"])
def test_libvirtd_restart_keeps_guest_and_ports(lab: E2ELab, lldpad_lost_them: bool) -> None:
    guest = lab.guest(f"rc{int(lldpad_lost_them)}")
    try:
        _start_on(lab, lab.b, guest)
        _assert_associated(lab, lab.b, guest)
        qemu_before = lab.b.libvirt.qemu_pids()
        mark = lab.b.log_mark()

        def lldpad_restart() -> None:
            lab.vdp.lldpad("b").restart()
            lab.wait_ready("b", timeout=30)
            assert not set(guest.instances()) & lab.b.vsi_uuids()  # lldpad forgot them

        lab.b.restart_libvirtd(between=lldpad_restart if lldpad_lost_them else None)
        wait_until(
            lambda: any(x.fields.get("op") == "reconnect begin" for x in lab.b.hook_lines(mark)), 20,
            "reconnect begin logged on B",
        )
        assert lab.b.domstate(guest.name) == "running (booted)"
        assert lab.b.libvirt.qemu_pids() == qemu_before
        wait_until(lambda: set(guest.instances()) <= lab.b.vsi_uuids(), 10, "ports associated on B again")
        _assert_associated(lab, lab.b, guest)
        lines = [x for x in lab.b.hook_lines(mark) if x.fields.get("uuid") == guest.uuid]
        print("\n  " + "\n  ".join(x.text for x in lines))
        assert all(x.fields.get("op") == "reconnect begin" for x in lines)
        status = lab.b.status()
        assert status["rc"] == 0 and status["drift"] is False
    finally:
        _cleanup(lab, guest)
    _assert_nothing_left(lab, lab.b, guest)


# -- 6. migration fails after the hooks succeeded -----------------------------------------------------


def _fail_after_hooks(lab: E2ELab, guest: Guest) -> tuple[str, int, float]:
    """Migrate ``guest`` A -> B and make it fail after B's hooks all succeeded: the migration link is cut
    while B's last hook (started begin) waits for the switch (B's associate is answered 1.5 s late),
    then the job is aborted on A.  Returns virsh's stderr, B's log mark and the start time."""
    since = time.time()
    mark = lab.b.log_mark()
    lab.peer.control({"ifaces": {lab.b.switch_port(): {"status": "success", "delay_ms": 1500, "modes": ["assoc"]}}})
    proc = subprocess.Popen(lab.migrate_argv(lab.a, lab.b, guest.name), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lab.peer.wait_event(lambda e: e["event"] == "request" and e["mode"] == "assoc"
                            and e["iface"] == lab.b.switch_port() and e["time"] >= since, 30, "assoc at B")
        lab.set_migration_link(False)
        wait_until(lambda: any(x.fields.get("op") == "started begin" and x.message == "proceed"
                               and x.fields.get("uuid") == guest.uuid for x in lab.b.hook_lines(mark)),
                   20, "B's started begin succeeded")
        time.sleep(0.5)
        if proc.poll() is None:
            lab.a.virsh("domjobabort", guest.name, check=False, timeout=30)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lab.set_migration_link(True)
        lab.accept_all()
    print(f"\n  virsh: {stderr.strip()}")
    assert proc.returncode != 0
    # B's hooks all succeeded (no veto) ...
    ops_b = [x.fields.get("op") for x in lab.b.hook_lines(mark) if x.fields.get("uuid") == guest.uuid]
    assert "started begin" in ops_b and "release end" in ops_b
    assert not [x for x in lab.b.hook_lines(mark) if x.fields.get("uuid") == guest.uuid and x.level == "ERROR"]
    # ... and release end left B clean.
    wait_until(lambda: guest.name not in lab.b.domains(), 20, "domain gone from B")
    _assert_nothing_left(lab, lab.b, guest)
    on_b = lab.switch_requests(lab.b, since=since, instances=guest.instances())
    assert [e["mode"] for e in on_b] .count("deassoc") == len(guest.ports)
    state = lab.a.domstate(guest.name)
    print(f"  guest on A: {state}")
    assert state.startswith("running")
    return stderr, mark, since


@pytest.mark.parametrize("style", STYLES)
def test_migration_failing_after_hooks_leaves_b_clean(lab: E2ELab, style: str) -> None:
    """Per-port switch: B is cleaned up by release end (libvirt >= 10.5: ``release end failed``, VSIs made
    through lldpad's client interface with the migration hint); A's ports were never touched."""
    guest = lab.guest(f"abort{style[-2:].replace('.', '')}")
    lab.b.fake_release_reason(guest.name, _reason(style, "failed"))
    try:
        _start_on(lab, lab.a, guest)
        _, mark, since = _fail_after_hooks(lab, guest)
        _assert_associated(lab, lab.a, guest)
        assert lab.switch_requests(lab.a, since=since, instances=guest.instances()) == []
        assert lab.peer.events("switch-deassoc") == []
        (ms,) = _released_with(lab.b, mark, guest, _reason(style, "failed") or "-")
        assert ms < 5000, ms
    finally:
        _cleanup(lab, guest)
        lab.b.fake_release_reason(guest.name, None)
    _assert_nothing_left(lab, lab.a, guest)


# -- 2b/6b. a switch where a VSI lives at one port at a time ------------------------------------------

ONE_PORT_HOLD = 3.0  # the switch's migration timeout: how long it keeps the source's VSI after an M-hinted associate


@pytest.fixture(scope="module")
def lab1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ELab]:
    with E2ELab(tmp_path_factory.mktemp("e2e-one-port"), model="one-port", migration_timeout=ONE_PORT_HOLD) as lab:
        lab.accept_all()
        yield lab


def _switch_events(lab: E2ELab, kind: str, guest: Guest, since: float) -> list[dict[str, Any]]:
    return [e for e in lab.peer.events(kind) if e["instance"] in guest.instances() and e["time"] >= since]


def test_one_port_switch_migration_source_lets_go(lab1: E2ELab) -> None:
    """B's associate carries the M hint, so the switch holds A's VSIs until A de-associates them itself
    (release end on A), before the hold expires: no switch-initiated de-associate anywhere."""
    lab = lab1
    guest = lab.guest("mig1")
    try:
        _start_on(lab, lab.a, guest)
        since = time.time()
        r, _ = lab.migrate(lab.a, lab.b, guest.name)
        assert r.returncode == 0, r.stderr
        holds = _switch_events(lab, "migration-hold", guest, since)
        assert sorted(e["iface"] for e in holds) == [lab.a.switch_port()] * len(guest.ports)
        _assert_nothing_left(lab, lab.a, guest)
        _assert_associated(lab, lab.b, guest)
        time.sleep(ONE_PORT_HOLD + 0.5)
        assert _switch_events(lab, "switch-deassoc", guest, since) == []
        _assert_associated(lab, lab.b, guest)
    finally:
        _cleanup(lab, guest)
    _assert_nothing_left(lab, lab.b, guest)


def test_one_port_switch_failed_migration_costs_the_source_its_ports(lab1: E2ELab) -> None:
    """What the source keeps when a migration fails after the hooks succeeded, with a switch where a VSI
    lives at one port at a time: B's M-hinted associate put A's VSIs on hold; B's release end
    de-associates at B, and nothing tells the switch that A keeps the guest, so when the hold expires the
    switch de-associates A's VSIs while the guest runs on A.  ``vdp-hooks status`` on A shows the drift.
    (libvirt 9.0 runs no hook on the source after a failed outgoing migration; see the report.)"""
    lab = lab1
    guest = lab.guest("abort1")
    try:
        _start_on(lab, lab.a, guest)
        _, _, since = _fail_after_hooks(lab, guest)
        holds = _switch_events(lab, "migration-hold", guest, since)
        assert sorted(e["iface"] for e in holds) == [lab.a.switch_port()] * len(guest.ports)
        wait_until(lambda: len(_switch_events(lab, "switch-deassoc", guest, since)) == len(guest.ports),
                   ONE_PORT_HOLD + 5, "the switch de-associates A's VSIs when the hold expires")
        assert {(e["iface"], e["reason"]) for e in _switch_events(lab, "switch-deassoc", guest, since)} == {
            (lab.a.switch_port(), "migration-timeout")
        }
        assert not set(guest.instances()) & set(lab.a.switch_table())
        assert lab.a.domstate(guest.name).startswith("running")
        wait_until(lambda: not set(guest.instances()) & lab.a.vsi_uuids(), 10, "A's lldpad drops the VSIs")
        status = lab.a.status()
        print(f"  vdp-hooks status on A: rc {status['rc']}, drift {status['drift']}")
        assert status["rc"] == 1 and status["drift"] is True
    finally:
        _cleanup(lab, guest)
    _assert_nothing_left(lab, lab.a, guest)


# -- 7. enabling the hook while libvirtd runs ---------------------------------------------------------


def test_enable_while_libvirtd_runs(lab: E2ELab) -> None:
    """Runs last in this module: B's daemon is restarted with no hook, then the hook is enabled."""
    b = lab.b
    link = b.hooks_dir / HOOK_LINK
    assert not b.domains()
    try:
        link.unlink()
        b.restart_libvirtd()  # now libvirtd found no hook at start

        r = b.cli("--hooks-dir", "/etc/libvirt/hooks", "enable")
        print(f"\n  vdp-hooks enable: {r.stdout.strip()}")
        assert r.returncode == 0, r.stderr
        assert link.is_symlink() and link.resolve() == ENTRY
        # It says which reload is needed: no systemd here, so a SIGHUP to a libvirtd by pid.
        m = re.search(r"run 'kill -HUP (\d+)'", r.stdout)
        assert m, r.stdout
        if int(m.group(1)) != b.libvirt.pid:
            # Several libvirtds run on this machine (the lab's two, maybe other labs'): the CLI names
            # the first it finds in /proc.  On a real host there is one.
            print(f"  (named pid {m.group(1)}; B's libvirtd is {b.libvirt.pid})")

        # Not reloaded yet: libvirt does not run the hook.
        before = lab.guest("enable0")
        mark = b.log_mark()
        _start_on(lab, b, before)
        assert not set(before.instances()) & b.vsi_uuids()
        assert not [x for x in b.hook_lines(mark) if x.fields.get("uuid") == before.uuid]
        b.destroy(before.name)

        b.libvirt.reload()
        after = lab.guest("enable1")
        try:
            _start_on(lab, b, after)
            _assert_associated(lab, b, after)
        finally:
            b.destroy(after.name)
        _assert_nothing_left(lab, b, after)
    finally:
        if not link.is_symlink():
            link.symlink_to(ENTRY)
