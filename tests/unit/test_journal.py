"""The crash-safe journal: atomic writes and strict modes, the per-guest lock between real processes, a hook
SIGKILLed between intent and confirm, and the incoming-migration marker (consumed, bound to the UUID, expiring).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hooks.errors import JournalError
from hooks.journal import DONE, FORMAT_VERSION, INTENT, Journal
from tests.unit.conftest import MAC_A, MAC_B, REPO, HookEnv, domain_xml, hooks_md, port, wait_for

XML_MD = hooks_md(port(MAC_A), port(MAC_B))


def _xml(gid: uuid.UUID | str, name: str = "guest1") -> bytes:
    return domain_xml(name=name, guest_uuid=gid, metadata=XML_MD)


# ------------------------------------------------------------------------------------------ files and modes
def test_directory_created_with_strict_modes(tmp_path: Path) -> None:
    sdir = tmp_path / "run" / "libvirt" / "vdp-hooks"
    store = Journal(str(sdir))
    gid = uuid.uuid4()
    with store.open(gid, "g") as gj:
        gj.add("rec1", [(MAC_A, "assoc", {"vlan": 100})], op="prepare begin")
        path = Path(gj.path)
        assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        doc = json.loads(path.read_text())
        assert doc["version"] == FORMAT_VERSION and doc["records"][0]["state"] == INTENT
        gj.confirm(gj.records, {MAC_A: {"vlan": 101}})
        doc = json.loads(path.read_text())
        assert doc["records"][0]["state"] == DONE and doc["records"][0]["data"] == {"vlan": 101}
    assert [p.name for p in sdir.iterdir() if ".tmp." in p.name] == []
    assert store.guests() == [gid]


def test_loose_directory_is_tightened(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    sdir.mkdir(mode=0o777)
    os.chmod(sdir, 0o777)
    Journal(str(sdir)).ensure_dir()
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700


def test_hook_creates_the_state_directory(hookenv: HookEnv) -> None:
    assert not hookenv.state.exists()
    gid = uuid.uuid4()
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    assert stat.S_IMODE(hookenv.state.stat().st_mode) == 0o700
    assert stat.S_IMODE((hookenv.state / f"{gid}.json").stat().st_mode) == 0o600
    assert hookenv.run("release", "end", _xml(gid)).returncode == 0
    assert list(hookenv.state.iterdir()) == [], "a released guest leaves no file behind"


_HAMMER = """
import sys, uuid
sys.path.insert(0, sys.argv[1])
from hooks.journal import Journal
store = Journal(sys.argv[2])
gid = uuid.UUID(sys.argv[3])
n = 0
while True:
    with store.open(gid, "g") as gj:
        n += 1
        gj.add("rec1", [(f"k{n}", "assoc", {"pad": "x" * (n % 500)})], op="prepare begin")
        gj.confirm(gj.records[-1:], {})
        if len(gj.records) > 40:
            gj.remove(gj.records[:20])
"""


def test_journal_always_parses_while_written_and_killed(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    gid = uuid.uuid4()
    path = sdir / f"{gid}.json"
    for _round in range(3):
        writer = subprocess.Popen([sys.executable, "-c", _HAMMER, str(REPO), str(sdir), str(gid)])
        try:
            wait_for(path.exists, what="first journal write")
            reads = 0
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                doc = json.loads(path.read_bytes())  # never half-written
                assert doc["version"] == FORMAT_VERSION
                reads += 1
            assert reads > 50
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
        doc = json.loads(path.read_bytes())  # killed at a random point: still whole
        assert all(r["state"] in (INTENT, DONE) for r in doc["records"])
    # The next process takes the lock the killed one held (flock dies with its holder).
    with Journal(str(sdir)).open(gid, "g", timeout=2) as gj:
        assert gj.records


def test_unreadable_journal_is_quarantined_and_vetoes_begin_once(hookenv: HookEnv) -> None:
    gid = uuid.uuid4()
    hookenv.state.mkdir(mode=0o700)
    (hookenv.state / f"{gid}.json").write_text('{"version": 1, "records": [')
    result = hookenv.run("prepare", "begin", _xml(gid))
    assert result.returncode == 1 and "is not JSON" in result.err and "moved to" in result.err
    assert "starting the guest again proceeds" in result.err
    (moved,) = hookenv.state.glob(f"{gid}.json.quarantined.corrupt.*")
    assert moved.name in result.err and moved.read_text() == '{"version": 1, "records": ['
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0  # the retry proceeds
    assert hookenv.run("release", "end", _xml(gid)).returncode == 0


def test_journal_from_another_format_version(hookenv: HookEnv) -> None:
    gid = uuid.uuid4()
    hookenv.state.mkdir(mode=0o700)
    (hookenv.state / f"{gid}.json").write_text('{"version": 99, "records": []}')
    result = hookenv.run("prepare", "begin", _xml(gid))
    assert result.returncode == 1 and "format version 99" in result.err and "finish the upgrade" in result.err
    assert list(hookenv.state.glob(f"{gid}.json.quarantined.version.*"))
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    assert hookenv.run("release", "end", _xml(gid)).returncode == 0


# ------------------------------------------------------------------------------------------ two processes at once
def test_different_guests_do_not_wait(hookenv: HookEnv, procs: list[subprocess.Popen[bytes]]) -> None:
    hookenv.write_config(rec1={"sleep_after": "1.5"})
    gid, other = uuid.uuid4(), uuid.uuid4()
    first = hookenv.popen("prepare", "begin", _xml(gid))
    procs.append(first)
    wait_for(lambda: hookenv.events("intent"), what="first process journaling intent")
    different = hookenv.popen("prepare", "begin", _xml(other, "guest2"), name="guest2")
    procs.append(different)
    for proc in (first, different):
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out, err) == (0, b"", b"")
    firsts = [e["t"] for e in hookenv.events() if e["pid"] == first.pid]
    others = [e["t"] for e in hookenv.events() if e["pid"] == different.pid]
    # Both sleep 1.5 s between intent and confirm: the other guest started while the first one sat there.
    assert min(firsts) < min(others) < max(firsts)
    assert hookenv.records(gid) and hookenv.records(other)


def test_same_guest_waits_for_the_lock(hookenv: HookEnv, procs: list[subprocess.Popen[bytes]]) -> None:
    hookenv.write_config(rec1={"sleep_after": "1.0", "ops": "prepare, start"})
    gid = uuid.uuid4()
    first = hookenv.popen("prepare", "begin", _xml(gid))
    procs.append(first)
    wait_for(lambda: hookenv.events("intent"), what="first process journaling intent")
    second = hookenv.popen("start", "begin", _xml(gid))
    procs.append(second)
    for proc in (first, second):
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out, err) == (0, b"", b"")
    firsts = [e for e in hookenv.events() if e["pid"] == first.pid]
    seconds = [e for e in hookenv.events() if e["pid"] == second.pid]
    assert seconds and max(e["t"] for e in firsts) < min(e["t"] for e in seconds), "never interleaved"
    # The second one saw the first one's confirmed records when it got the lock.
    held = hookenv.records(gid)
    assert {r["op"] for r in held} == {"prepare begin", "start begin"}
    assert all(r["state"] == DONE for r in held)


def test_lock_wait_is_bounded(tmp_path: Path) -> None:
    store = Journal(str(tmp_path / "state"))
    gid = uuid.uuid4()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, uuid; sys.path.insert(0, sys.argv[1]); from hooks.journal import Journal\n"
            "with Journal(sys.argv[2]).open(uuid.UUID(sys.argv[3]), 'g') as gj:\n"
            "    gj.add('rec1', [('k', 'assoc', {})], op='x'); print('locked', flush=True); time.sleep(30)",
            str(REPO),
            str(tmp_path / "state"),
            str(gid),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        start = time.monotonic()
        with pytest.raises(JournalError, match="locked by another hook process"), store.open(gid, "g", timeout=0.3):
            pass
        assert time.monotonic() - start < 2
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


# ------------------------------------------------------------------------------------------ killed mid-request
def test_sigkill_between_intent_and_confirm_then_release(
    hookenv: HookEnv, procs: list[subprocess.Popen[bytes]]
) -> None:
    hookenv.write_config(rec1={"kinds": "reserve, assoc"}, rec2={"sleep_after": "30"})
    gid = uuid.uuid4()
    victim = hookenv.popen("prepare", "begin", _xml(gid))
    procs.append(victim)
    wait_for(lambda: any(e["feature"] == "rec2" for e in hookenv.events("intent")), what="rec2's intent")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    journal = hookenv.journal(gid)
    assert journal is not None
    states = {(r["feature"], r["key"], r["kind"]): r["state"] for r in journal["records"]}
    assert states[("rec2", MAC_A, "assoc")] == INTENT and states[("rec2", MAC_B, "assoc")] == INTENT
    assert states[("rec1", MAC_A, "assoc")] == DONE
    # libvirt's cleanup after the failed start: a clean release end with a fresh config.
    hookenv.write_config(rec1={"kinds": "reserve, assoc"})
    result = hookenv.run("release", "end", _xml(gid))
    assert result.returncode == 0
    assert hookenv.journal(gid) is None, "nothing left journaled"
    torn = [(e["feature"], e["key"], e["kind"], e["state"]) for e in hookenv.events("teardown")]
    assert torn == [
        ("rec2", MAC_B, "assoc", INTENT),
        ("rec2", MAC_A, "assoc", INTENT),
        ("rec1", MAC_B, "assoc", DONE),
        ("rec1", MAC_A, "assoc", DONE),
        ("rec1", MAC_B, "reserve", DONE),
        ("rec1", MAC_A, "reserve", DONE),
    ]
    leftovers = [p.name for p in hookenv.state.iterdir() if not p.name.endswith(f".tmp.{victim.pid}")]
    assert leftovers == []


# ------------------------------------------------------------------------------------------ incoming marker
def _incoming(hookenv: HookEnv) -> list[bool]:
    """What rec1 was told at each ``prepare begin``: is this the destination of a migration?"""
    setups = hookenv.events("setup")
    return [bool(e["incoming"]) for e in setups if (e["feature"], e["op"]) == ("rec1", "prepare begin")]


def test_marker_from_migrate_begin_is_consumed_by_prepare_begin(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"ops": "migrate, prepare, started"})
    gid = uuid.uuid4()
    assert hookenv.run("migrate", "begin", _xml(gid)).returncode == 0
    assert (hookenv.state / f"{gid}.incoming").exists()
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    assert not (hookenv.state / f"{gid}.incoming").exists(), "consumed"
    assert hookenv.run("started", "begin", _xml(gid)).returncode == 0
    setups = [(e["op"], e["incoming"]) for e in hookenv.events("setup") if e["feature"] == "rec1"]
    assert setups == [("migrate begin", False), ("prepare begin", True), ("started begin", True)]
    assert hookenv.journal(gid)["incoming"] is True  # type: ignore[index]
    assert hookenv.run("release", "end", _xml(gid)).returncode == 0
    assert hookenv.journal(gid) is None
    # The next fresh start of the same guest is not an incoming migration.
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    assert _incoming(hookenv) == [True, False]


def test_marker_is_bound_to_the_uuid(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"ops": "migrate, prepare"})
    mine, other = uuid.uuid4(), uuid.uuid4()
    assert hookenv.run("migrate", "begin", _xml(other, "other"), name="other").returncode == 0
    assert hookenv.run("prepare", "begin", _xml(mine)).returncode == 0
    assert hookenv.run("prepare", "begin", _xml(other, "other"), name="other").returncode == 0
    assert _incoming(hookenv) == [False, True]
    # A marker file whose content names another guest does not count either.
    hookenv.state.joinpath(f"{mine}.incoming").write_text(json.dumps({"uuid": str(other), "at": time.time()}))
    assert hookenv.run("prepare", "begin", _xml(mine)).returncode == 0
    assert _incoming(hookenv) == [False, True, False]


def test_marker_expires(hookenv: HookEnv) -> None:
    hookenv.write_config(hooks={"marker_ttl": "500ms"}, rec1={"ops": "migrate, prepare"})
    gid = uuid.uuid4()
    assert hookenv.run("migrate", "begin", _xml(gid)).returncode == 0
    time.sleep(0.8)
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    assert _incoming(hookenv) == [False]
    assert not (hookenv.state / f"{gid}.incoming").exists(), "an expired marker is removed too"


def test_failed_migrate_begin_writes_no_marker(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"ops": "migrate, prepare", "fail": MAC_A})
    gid = uuid.uuid4()
    assert hookenv.run("migrate", "begin", _xml(gid)).returncode == 1
    assert not (hookenv.state / f"{gid}.incoming").exists()
    hookenv.write_config(rec1={"ops": "migrate, prepare"})
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    assert _incoming(hookenv) == [False]


def test_state_directory_owned_by_someone_else_is_refused(hookenv: HookEnv) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the directory to another uid")
    hookenv.state.mkdir(mode=0o700)
    os.chown(hookenv.state, 65534, 65534)
    result = hookenv.run("prepare", "begin", _xml(uuid.uuid4()))
    assert result.returncode == 1 and "belongs to uid 65534, not to us" in result.err
    assert hookenv.run("release", "end", _xml(uuid.uuid4())).returncode == 0


def test_restore_discards_a_marker_left_by_a_failed_migration(hookenv: HookEnv) -> None:
    """migrate begin succeeded here, the migration died elsewhere; seconds later the guest is restored."""
    hookenv.write_config(rec1={"ops": "migrate, restore, prepare"})
    gid = uuid.uuid4()
    assert hookenv.run("migrate", "begin", _xml(gid)).returncode == 0
    assert hookenv.run("restore", "begin", _xml(gid)).returncode == 0
    assert not (hookenv.state / f"{gid}.incoming").exists()
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    assert _incoming(hookenv) == [False], "a restore is a fresh start, not the destination of a migration"


def test_lock_holds_while_each_holder_removes_the_lock_file(
    hookenv: HookEnv, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Every process vetoes and leaves nothing, so each one unlinks the lock file it holds: the waiters
    must notice they locked a stale file and start over, never two of them inside at once."""
    hookenv.write_config(rec1={"sleep_after": "0.3", "fail": MAC_A})
    gid = uuid.uuid4()
    started = [hookenv.popen("prepare", "begin", _xml(gid)) for _ in range(5)]
    procs.extend(started)
    for proc in started:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and out == b"" and len(err.splitlines()) == 1
    spans = []
    for proc in started:
        times = [e["t"] for e in hookenv.events() if e["pid"] == proc.pid]
        assert times, "every process got its turn"
        spans.append((min(times), max(times)))
    spans.sort()
    for (_, end), (begin, _) in zip(spans, spans[1:]):
        assert end < begin, f"two processes inside one guest's lock at once: {spans}"
    assert hookenv.journal(gid) is None
    assert not (hookenv.state / f"{gid}.lock").exists()


# ------------------------------------------------------------------------------------------ leftovers and bad state
def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_tmp_files_of_dead_writers_are_removed_on_open(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    gid, other = uuid.uuid4(), uuid.uuid4()
    store = Journal(str(sdir))
    store.ensure_dir()
    dead, alive = _dead_pid(), os.getpid()
    names = [f"{gid}.json.tmp.{dead}", f"{gid}.incoming.tmp.{dead}", f"{gid}.json.tmp.{alive}"]
    names.append(f"{other}.json.tmp.{dead}")
    for name in names:
        (sdir / name).write_text("{half")
    with store.open(gid, "g"):
        pass
    left = sorted(p.name for p in sdir.iterdir())
    # A live writer's file stays; another guest's is its own open's business.
    assert left == sorted([f"{gid}.json.tmp.{alive}", f"{other}.json.tmp.{dead}"])


def test_no_tmp_file_survives_a_killed_writer(tmp_path: Path) -> None:
    """SIGKILL a writer at random points, then open once: no *.tmp.PID of it is left."""
    sdir = tmp_path / "state"
    gid = uuid.uuid4()
    for _round in range(3):
        writer = subprocess.Popen([sys.executable, "-c", _HAMMER, str(REPO), str(sdir), str(gid)])
        wait_for((sdir / f"{gid}.json").exists, what="first journal write")
        time.sleep(0.2)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        (sdir / f"{gid}.json.tmp.{writer.pid}").write_text("{half")  # as if killed between write and rename
        with Journal(str(sdir)).open(gid, "g", timeout=2) as gj:
            assert gj.records
        assert [p.name for p in sdir.iterdir() if ".tmp." in p.name] == []


def test_lenient_journal_keeps_going_when_it_cannot_save(tmp_path: Path) -> None:
    from hooks.journal import GuestJournal

    gj = GuestJournal(str(tmp_path / "gone" / "x.json"), uuid.uuid4(), "g")
    with pytest.raises(JournalError):
        gj.add("rec1", [("k", "assoc", {})], op="x")
    gj.lenient = True
    gj.add("rec1", [("k2", "assoc", {})], op="x")
    assert "cannot write journal" in gj.unsaved and len(gj.records) == 2


def test_peek_never_moves_or_follows_a_bad_file(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    store = Journal(str(sdir))
    store.ensure_dir()
    gid = uuid.uuid4()
    (tmp_path / "target.json").write_text(json.dumps({"version": 1, "records": []}))
    (sdir / f"{gid}.json").symlink_to(tmp_path / "target.json")
    with pytest.raises(JournalError, match="is a symlink"):
        store.peek(gid)
    assert (sdir / f"{gid}.json").is_symlink()
