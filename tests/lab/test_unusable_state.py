"""Unusable state never means "do nothing" (issue 10, point 4), against a real lldpad station and the lab's
switch peer, the entry exec'd as libvirt does (HookHost).

A guest's ``prepare begin`` associates two ports (one per uplink); then the journal, the state directory
or the config is spoiled and ``release end`` runs.  Each case checks three independent views afterwards:
the switch peer's table (what the switch holds), lldpad's own VSI table (vdptool), and the state
directory.  Read-only and full state directories exist only for that one hook process: it runs in a
private mount namespace of its own (``unshare -m`` inside the lab host) with the state directory
re-mounted read-only, or replaced by a tiny tmpfs holding a copy of the journal and filled up.

Run with ``-s`` to see the case -> result -> time table the lead's closing note takes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import HookHost, HookResult
from tests.lab.harness.switchpeer import SwitchPeer
from tests.lab.harness.vdplab import VdpLab
from tests.lab.test_lldpad_client import drive

pytestmark = pytest.mark.lab

UPLINKS = {"fabric-a": "up0", "fabric-b": "up1"}
MACS = ["52:54:00:ab:20:02", "52:54:00:ab:20:03"]
TABLE: list[str] = []  # one line per case, printed at the end of the module


@dataclass
class Lab:
    lab: VdpLab
    peer: SwitchPeer


@pytest.fixture(scope="module")
def swlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("unusable")
    with VdpLab(workdir, uplinks=2, switch="none") as lab:
        assert lab.switch is not None
        peer = SwitchPeer(lab.switch, [lab.switch_ifname(None, u) for u in UPLINKS.values()], workdir / "peer")
        try:
            for uplink in UPLINKS.values():
                lab.lldpad().wait_evb(uplink, timeout=15)
            end = time.monotonic() + 10
            for uplink in UPLINKS.values():  # VDP22 answers GETLINK once it runs on the uplink
                while "error" in drive(lab, [{"op": "table", "ifname": uplink}]):
                    assert time.monotonic() < end, f"VDP did not start on {uplink}"
                    time.sleep(0.1)
            yield Lab(lab, peer)
        finally:
            peer.stop()
    if TABLE:
        print("\ncase | release end | time | switch / lldpad / state dir afterwards")
        print("\n".join(TABLE))


@pytest.fixture
def sw(swlab: Lab) -> Iterator[Lab]:
    swlab.peer.control({})
    yield swlab
    swlab.peer.control({})


@dataclass
class Guest:
    uuid: str
    instances: list[str]
    xml: str


def _guest() -> Guest:
    instances = [str(uuid.uuid4()) for _ in MACS]
    ports = [
        Port(mac, uplink, vlan=300 + i, params={"managerid": "11", "typeid": "1193047", "typeidversion": "2",
                                                 "instanceid": inst})
        for i, (mac, uplink, inst) in enumerate(zip(MACS, UPLINKS, instances))
    ]
    gid = str(uuid.uuid4())
    return Guest(gid, instances, domain_xml("vm", gid, ports=ports))


def _switch_holds(sw: Lab) -> set[str]:
    return {inst for vsis in sw.peer.table().values() for inst in vsis}


def _lldpad_holds(sw: Lab) -> set[str]:
    return {row["uuid"] for ifname in UPLINKS.values() for row in sw.lab.lldpad().vsi_table(ifname)}


def _started(sw: Lab, tmp_path: Path) -> tuple[HookHost, Guest]:
    host = HookHost(sw.lab, "host", tmp_path, uplinks=UPLINKS)
    guest = _guest()
    result = host.hook(guest.xml, "prepare", "begin")
    assert (result.rc, result.stderr) == (0, "")
    assert set(guest.instances) <= _switch_holds(sw) and set(guest.instances) <= _lldpad_holds(sw)
    return host, guest


def _private_mount(host: HookHost, script: str) -> None:
    """Run the next hooks in a mount namespace of their own, prepared by ``script`` (sh; $S = state dir)."""
    lab = host.lab
    assert lab is not None
    state = str(host.state_dir)

    def run(argv: list[str], **kw: Any) -> Any:
        wrapped = ["unshare", "-m", "--propagation", "private", "sh", "-euc", script, "sh", state, *argv]
        return lab.run_in_host("host", wrapped, **kw)

    host.runner = run


def _afterwards(sw: Lab, host: HookHost, guest: Guest, out: Path | None = None) -> str:
    state = out or host.state_dir
    files = sorted(p.name.replace(guest.uuid, "UUID") for p in state.iterdir()
                   if p.name.startswith(guest.uuid)) if state.exists() else []
    held = set(guest.instances)
    return (f"switch {len(held & _switch_holds(sw))}/2, lldpad {len(held & _lldpad_holds(sw))}/2, "
            f"state dir {files or 'empty'}")


def _record(case: str, result: HookResult, what: str, after: str) -> None:
    TABLE.append(f"{case} | exit {result.rc}, {what} | {result.seconds * 1000:.0f} ms | {after}")


def _prepare_works_again(sw: Lab, host: HookHost, guest: Guest) -> None:
    again = host.hook(guest.xml, "prepare", "begin")
    assert (again.rc, again.stderr) == (0, ""), again.stderr
    assert set(guest.instances) <= _switch_holds(sw)
    assert host.hook(guest.xml, "release", "end").rc == 0
    assert not set(guest.instances) & (_switch_holds(sw) | _lldpad_holds(sw))
    assert not [p for p in host.state_files() if p.startswith(guest.uuid) and ".quarantined." not in p]


# ------------------------------------------------------------------------------------------ malformed journals
def _doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _ids_as_strings(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "records": [{**r, "id": str(r["id"])} for r in doc["records"]]}


def _symlink(path: Path) -> None:
    target = path.with_name("elsewhere.json")
    target.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(target)


SPOILERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "corrupt": ("corrupt", lambda p: p.write_bytes(b"\x00\xffnot json")),
    "truncated": ("corrupt", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
    "unknown version": ("version", lambda p: p.write_text(json.dumps({**_doc(p), "version": 2}))),
    "a JSON list": ("shape", lambda p: p.write_text("[]")),
    "records are strings": ("shape", lambda p: p.write_text(json.dumps({**_doc(p), "records": ["a", "b"]}))),
    "field of the wrong type": ("shape", lambda p: p.write_text(json.dumps(_ids_as_strings(_doc(p))))),
    "symlink": ("symlink", _symlink),
    "owned by another uid": ("owner", lambda p: os.chown(p, 65534, 65534)),
}


def test_baseline_release_with_a_healthy_journal(sw: Lab, tmp_path: Path) -> None:
    """The reference for the table's times: the same guest, nothing spoiled."""
    host, guest = _started(sw, tmp_path)
    result = host.hook(guest.xml, "release", "end")
    assert (result.rc, result.stderr) == (0, "")
    assert not set(guest.instances) & (_switch_holds(sw) | _lldpad_holds(sw))
    _record("baseline: healthy journal", result, "tore down from the journal", _afterwards(sw, host, guest))


@pytest.mark.parametrize("case", list(SPOILERS))
def test_release_with_a_malformed_journal_tears_down_what_the_xml_declares(sw: Lab, tmp_path: Path, case: str) -> None:
    reason, spoil = SPOILERS[case]
    host, guest = _started(sw, tmp_path)
    path = host.state_dir / f"{guest.uuid}.json"
    spoil(path)
    result = host.hook(guest.xml, "release", "end")
    assert (result.rc, result.stderr) == (0, "")
    assert not set(guest.instances) & _switch_holds(sw), "the switch still holds a VSI"
    assert not set(guest.instances) & _lldpad_holds(sw), "lldpad still holds a VSI"
    (moved,) = host.state_dir.glob(f"{guest.uuid}.json.quarantined.{reason}.*")
    assert f"moved to {moved}" in host.log_file.read_text()
    _record(case, result, f"quarantined as .{reason}, tore down from the XML", _afterwards(sw, host, guest))
    _prepare_works_again(sw, host, guest)


def test_prepare_with_a_malformed_journal_vetoes_once_then_proceeds(sw: Lab, tmp_path: Path) -> None:
    host, guest = _started(sw, tmp_path)
    assert host.hook(guest.xml, "release", "end").rc == 0
    guest = _guest()
    host.state_dir.joinpath(f"{guest.uuid}.json").write_text('{"version": 1, "records": [1, 2]}')
    first = host.hook(guest.xml, "prepare", "begin")
    assert first.rc == 1 and first.stderr.count("\n") == 1
    assert "moved to" in first.stderr and "starting the guest again proceeds" in first.stderr
    assert not set(guest.instances) & _switch_holds(sw)  # vetoed before any request went out
    _record("prepare begin, malformed journal", first, "vetoed once, file quarantined", _afterwards(sw, host, guest))
    assert host.hook(guest.xml, "release", "end").rc == 0  # what libvirt runs after the veto
    _prepare_works_again(sw, host, guest)


# ------------------------------------------------------------------------------------------ read-only, full
READ_ONLY = 'mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; shift; exec "$@"'


def test_release_in_a_read_only_state_directory(sw: Lab, tmp_path: Path) -> None:
    host, guest = _started(sw, tmp_path)
    before = host.state_dir.joinpath(f"{guest.uuid}.json").read_text()
    _private_mount(host, READ_ONLY)
    result = host.hook(guest.xml, "release", "end")
    host.runner = lambda argv, **kw: sw.lab.run_in_host("host", argv, **kw)
    assert (result.rc, result.stderr) == (0, "")
    assert not set(guest.instances) & (_switch_holds(sw) | _lldpad_holds(sw))
    log = host.log_file.read_text()
    assert "could not journal" in log and "Read-only file system" in log
    assert host.state_dir.joinpath(f"{guest.uuid}.json").read_text() == before  # nothing could change it
    _record("read-only state dir", result, "tore down, logged 'could not journal'", _afterwards(sw, host, guest))
    # The stale journal is harmless: the next teardown finds nothing left and cleans up.
    assert host.hook(guest.xml, "release", "end").rc == 0
    _prepare_works_again(sw, host, guest)


def _full(out: Path) -> str:
    """A 1-inode-short tmpfs replaces the state directory, holding a copy of the journal only (no lock
    files: they cannot be created), then everything is copied out to ``out`` for the test to see."""
    return f"""
        state="$1"; shift
        snap=$(mktemp -d)
        for f in "$state"/*.json; do if [ -e "$f" ]; then cp -a "$f" "$snap"/; fi; done
        mount -t tmpfs -o size=64k,nr_inodes=16,mode=0700 tmpfs "$state"
        cp -a "$snap"/. "$state"/
        dd if=/dev/zero of="$state/filler" bs=4k 2>/dev/null || true
        i=0; while touch "$state/inode$i" 2>/dev/null; do i=$((i+1)); done
        rc=0; "$@" || rc=$?
        mkdir -p {out}; cp -a "$state"/. {out}/; rm -f {out}/filler {out}/inode*
        exit $rc
    """


def test_release_in_a_full_state_directory(sw: Lab, tmp_path: Path) -> None:
    host, guest = _started(sw, tmp_path)
    out = tmp_path / "full-after"
    _private_mount(host, _full(out))
    result = host.hook(guest.xml, "release", "end")
    host.runner = lambda argv, **kw: sw.lab.run_in_host("host", argv, **kw)
    assert (result.rc, result.stderr) == (0, "")
    assert not set(guest.instances) & (_switch_holds(sw) | _lldpad_holds(sw))
    assert "no lock file could be created" in host.log_file.read_text()
    assert not any(p.name.startswith(guest.uuid) for p in out.iterdir()), "the journal went with its records"
    _record("full state dir", result, "tore down unlocked", _afterwards(sw, host, guest, out))
    shutil.rmtree(out)
    assert host.hook(guest.xml, "release", "end").rc == 0  # the real directory still had the journal
    _prepare_works_again(sw, host, guest)


def test_full_state_directory_and_a_silent_switch_log_the_pending_record(sw: Lab, tmp_path: Path) -> None:
    """What cannot be torn down and cannot be journaled either is logged whole, with its cause."""
    host, guest = _started(sw, tmp_path)
    silent = guest.instances[1]
    sw.peer.control({"instances": {silent: {"status": "silence", "modes": ["deassoc"]}}})
    out = tmp_path / "full-after"
    _private_mount(host, _full(out))
    result = host.hook(guest.xml, "release", "end")
    host.runner = lambda argv, **kw: sw.lab.run_in_host("host", argv, **kw)
    assert (result.rc, result.stderr) == (0, "")
    assert guest.instances[0] not in _switch_holds(sw)
    log = host.log_file.read_text()
    (line,) = [x for x in log.splitlines() if "not journaled: record" in x]
    assert MACS[1] in line and "pending" in line and "up1" in line
    assert "could not journal" in log and "No space left on device" in log
    _record("full state dir + silent switch on one port", result,
            "tore down one, the other pending: logged whole ('not journaled')", _afterwards(sw, host, guest, out))
    sw.peer.control({})
    shutil.rmtree(out)
    # The real state directory kept the journal: the next teardown finishes (lldpad may hold the silent
    # VSI for its ~16 s give-up time; the withdrawal is journaled until the switch confirms).
    assert host.hook(guest.xml, "release", "end").rc == 0


# ------------------------------------------------------------------------------------------ broken config
def test_release_with_a_broken_config_uses_the_defaults_for_the_bad_lines(sw: Lab, tmp_path: Path) -> None:
    host, guest = _started(sw, tmp_path)
    good = host.config.read_text()
    host.config.write_text(good.replace("[hooks]\n", "[hooks]\nmarker_ttl = 1e300\nfrobnicate = yes\n", 1))
    begin = host.hook(guest.xml, "prepare", "begin")
    assert begin.rc == 1 and f"{host.config}:" in begin.stderr  # begin operations still refuse it
    # Journal gone too: teardown must come from the XML, whose logical uplinks the good lines still map.
    host.state_dir.joinpath(f"{guest.uuid}.json").write_text("{")
    result = host.hook(guest.xml, "release", "end")
    assert (result.rc, result.stderr) == (0, "")
    assert not set(guest.instances) & (_switch_holds(sw) | _lldpad_holds(sw))
    assert "1e300" in host.log_file.read_text() and "built-in default" in host.log_file.read_text()
    _record("broken config + corrupt journal", result, "defaults for the bad lines, tore down from the XML",
            _afterwards(sw, host, guest))
    host.config.write_text(good)
    _prepare_works_again(sw, host, guest)


def test_release_with_an_unreadable_config_tears_down_the_journal(sw: Lab, tmp_path: Path) -> None:
    """Nothing of the file is usable (no [uplinks]): the journal's records name the interfaces."""
    host, guest = _started(sw, tmp_path)
    good = host.config.read_text()
    host.config.write_bytes(b"\xff\xfe\x00")
    result = host.hook(guest.xml, "release", "end")
    assert (result.rc, result.stderr) == (0, "")
    assert not set(guest.instances) & (_switch_holds(sw) | _lldpad_holds(sw))
    assert host.journal(guest.uuid) is None
    _record("unreadable config", result, "built-in defaults, tore down from the journal", _afterwards(sw, host, guest))
    host.config.write_text(good)
    _prepare_works_again(sw, host, guest)


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_prepare_in_an_unusable_state_directory_vetoes_cleanly(sw: Lab, tmp_path: Path, kind: str) -> None:
    """A begin operation must journal intent before a request goes out: it vetoes, with a line that names
    the directory, and nothing reaches the switch."""
    host = HookHost(sw.lab, "host", tmp_path, uplinks=UPLINKS)
    host.state_dir.mkdir(mode=0o700)
    guest = _guest()
    _private_mount(host, READ_ONLY if kind == "read-only" else _full(tmp_path / "full-after"))
    result = host.hook(guest.xml, "prepare", "begin")
    host.runner = lambda argv, **kw: sw.lab.run_in_host("host", argv, **kw)
    assert result.rc == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("libvirt-vdp-hooks: guest vm: "), result.stderr
    assert str(host.state_dir) in result.stderr and "Error" not in result.stderr
    cause = "Read-only file system" if kind == "read-only" else "No space left on device"
    assert cause in result.stderr
    assert not set(guest.instances) & (_switch_holds(sw) | _lldpad_holds(sw))
    _record(f"prepare begin, {kind} state dir", result, f"vetoed: cannot create lock file: {cause}",
            _afterwards(sw, host, guest))
    _prepare_works_again(sw, host, guest)


def test_uplink_lock_that_is_a_symlink_is_moved_aside(sw: Lab, tmp_path: Path) -> None:
    host = HookHost(sw.lab, "host", tmp_path, uplinks=UPLINKS)
    host.state_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    host.state_dir.joinpath("uplink-up0.lock").symlink_to(victim)
    guest = _guest()
    result = host.hook(guest.xml, "prepare", "begin")
    assert (result.rc, result.stderr) == (0, ""), "no ELOOP veto"
    assert victim.read_text() == "untouched"
    assert list(host.state_dir.glob("uplink-up0.lock.quarantined.symlink.*"))
    assert host.hook(guest.xml, "release", "end").rc == 0
    assert not set(guest.instances) & (_switch_holds(sw) | _lldpad_holds(sw))
