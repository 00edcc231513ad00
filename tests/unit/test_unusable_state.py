"""Unusable state never means "do nothing" (issue 10, point 4), through the real entry with the test plugin
features: ``release end`` with a journal that is corrupt, truncated, of another version, of the wrong JSON
shape, a symlink or somebody else's, or with a broken config, still tears down every port the XML declares;
the bad file is quarantined and no later ``prepare begin`` is vetoed because of it.

Read-only and full state directories need a private mount namespace: tests/lab/test_unusable_state.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.unit.conftest import ENTRY, MAC_A, MAC_B, HookEnv, domain_xml, hooks_md, port

XML_MD = hooks_md(port(MAC_A), port(MAC_B))
DECLARED = {"declare": "yes"}


def _xml(gid: uuid.UUID, name: str = "guest1") -> bytes:
    return domain_xml(name=name, guest_uuid=gid, metadata=XML_MD)


def _started(hookenv: HookEnv) -> tuple[uuid.UUID, Path]:
    """A guest whose prepare begin journaled one record per recorder and port."""
    hookenv.write_config(rec1=DECLARED, rec2=DECLARED)
    gid = uuid.uuid4()
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    path = hookenv.state / f"{gid}.json"
    assert len(json.loads(path.read_text())["records"]) == 4
    return gid, path


def _torn_down(hookenv: HookEnv) -> set[tuple[str, str]]:
    return {(f, k) for f, k, _kind in hookenv.teardowns()}


EVERY_PORT = {(f, k) for f in ("rec1", "rec2") for k in (MAC_A, MAC_B)}


def _valid_doc(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())


def _one_record(**fields: object) -> str:
    record = {"id": 1, "feature": "rec1", "key": MAC_A, "kind": "a", "data": {}, **fields}
    return json.dumps({"version": 1, "records": [record]})


#: name -> (quarantine reason, how to spoil the journal file)
SPOILERS = {
    "corrupt": ("corrupt", lambda p: p.write_bytes(b"\x00\xff garbage \x1b")),
    "truncated": ("corrupt", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
    "empty": ("corrupt", lambda p: p.write_bytes(b"")),
    "version": ("version", lambda p: p.write_text(json.dumps({**_valid_doc(p), "version": 99}))),
    "version-true": ("version", lambda p: p.write_text(json.dumps({**_valid_doc(p), "version": True}))),
    "list": ("shape", lambda p: p.write_text("[]")),
    "records-strings": ("shape", lambda p: p.write_text(json.dumps({"version": 1, "records": ["x", "y"]}))),
    "records-not-list": ("shape", lambda p: p.write_text(json.dumps({"version": 1, "records": {"a": 1}}))),
    "id-string": ("shape", lambda p: p.write_text(_one_record(id="1"))),
    "id-bool": ("shape", lambda p: p.write_text(_one_record(id=True))),
    "data-list": ("shape", lambda p: p.write_text(_one_record(data=[]))),
    "unknown-field": ("shape", lambda p: p.write_text(_one_record(x=1))),
    "unknown-state": ("shape", lambda p: p.write_text(_one_record(state="maybe"))),
    "missing-key": ("shape", lambda p: p.write_text(json.dumps({"version": 1, "records": [{"id": 1}]}))),
    "next-id-string": ("shape", lambda p: p.write_text(json.dumps({**_valid_doc(p), "next_id": "7"}))),
    "incoming-string": ("shape", lambda p: p.write_text(json.dumps({**_valid_doc(p), "incoming": "yes"}))),
}


def _symlink(path: Path) -> None:
    target = path.with_name("elsewhere.json")
    target.write_bytes(path.read_bytes())  # a valid journal: only the link itself is wrong
    path.unlink()
    path.symlink_to(target)


def _foreign(path: Path) -> None:
    os.chown(path, 65534, 65534)


@pytest.mark.parametrize("case", sorted(SPOILERS))
def test_release_with_a_malformed_journal_tears_down_the_declared_ports(hookenv: HookEnv, case: str) -> None:
    reason, spoil = SPOILERS[case]
    gid, path = _started(hookenv)
    spoil(path)
    result = hookenv.run("release", "end", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")
    assert _torn_down(hookenv) == EVERY_PORT
    (moved,) = hookenv.state.glob(f"{gid}.json.quarantined.{reason}.*")
    assert f"moved to {moved}" in hookenv.hook_log()
    assert sorted(p.name for p in hookenv.state.iterdir() if p.name.startswith(str(gid))) == [moved.name]
    # Nothing locks the guest out afterwards.
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    assert hookenv.run("release", "end", _xml(gid)).returncode == 0


@pytest.mark.parametrize("spoil", [_symlink, _foreign], ids=["symlink", "other-uid"])
def test_release_with_a_journal_that_is_not_ours(hookenv: HookEnv, spoil: object) -> None:
    if os.geteuid() != 0 and spoil is _foreign:
        pytest.skip("chown needs root")
    gid, path = _started(hookenv)
    spoil(path)  # type: ignore[operator]
    result = hookenv.run("release", "end", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")
    assert _torn_down(hookenv) == EVERY_PORT
    reason = "symlink" if spoil is _symlink else "owner"
    assert list(hookenv.state.glob(f"{gid}.json.quarantined.{reason}.*"))
    if spoil is _symlink:
        assert (hookenv.state / "elsewhere.json").exists()  # the link moved, never its target
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0


def test_prepare_with_a_malformed_journal_vetoes_once_then_proceeds(hookenv: HookEnv) -> None:
    gid, path = _started(hookenv)
    path.write_text('{"version": 1, "records": ["x"]}')
    first = hookenv.run("prepare", "begin", _xml(gid))
    assert first.returncode == 1
    assert "record 0 that is a JSON str" in first.err and "moved to" in first.err
    assert "still held at the switch" in first.err and "starting the guest again proceeds" in first.err
    assert "TypeError" not in first.err and "AttributeError" not in first.err
    second = hookenv.run("prepare", "begin", _xml(gid))
    assert (second.returncode, second.stderr) == (0, b"")


def test_emergency_override_proceeds_past_a_malformed_journal(hookenv: HookEnv) -> None:
    gid, path = _started(hookenv)
    path.write_text("[]")
    code = f"import sys; sys.path.insert(0, {str(ENTRY.parents[1])!r}); from hooks.cli import main; sys.exit(main())"
    cli = [sys.executable, "-c", code, "emergency", "--for", "1h"]
    subprocess.run(cli, env=hookenv.env(), check=True, capture_output=True)
    result = hookenv.run("prepare", "begin", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")
    assert "proceeding (emergency override)" in hookenv.hook_log()


def test_lock_file_that_is_a_symlink_is_moved_aside(hookenv: HookEnv, tmp_path: Path) -> None:
    hookenv.write_config(rec1=DECLARED, rec2=DECLARED)
    gid = uuid.uuid4()
    hookenv.state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (hookenv.state / f"{gid}.lock").symlink_to(victim)
    result = hookenv.run("prepare", "begin", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b""), "no ELOOP veto"
    assert victim.read_text() == "untouched"
    assert list(hookenv.state.glob(f"{gid}.lock.quarantined.symlink.*"))
    assert hookenv.run("release", "end", _xml(gid)).returncode == 0


def test_malformed_incoming_marker_does_not_lock_the_guest_out(hookenv: HookEnv) -> None:
    gid = uuid.uuid4()
    hookenv.state.mkdir(mode=0o700)
    (hookenv.state / f"{gid}.incoming").write_text("[1, 2]")
    result = hookenv.run("prepare", "begin", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")
    assert not (hookenv.state / f"{gid}.incoming").exists()
    assert hookenv.run("release", "end", _xml(gid)).returncode == 0


# ------------------------------------------------------------------------------------------ broken config
BROKEN_LINES = [
    "marker_ttl = 1e300",
    "marker_ttl = nan",
    "no_such_key = 1",
    "this line has no equals sign",
]


@pytest.mark.parametrize("bad", BROKEN_LINES)
def test_release_with_a_broken_config_tears_down_with_defaults(hookenv: HookEnv, bad: str) -> None:
    gid, _path = _started(hookenv)
    text = hookenv.config.read_text().replace("[hooks]\n", f"[hooks]\n{bad}\n", 1)
    hookenv.config.write_text(text)
    begin = hookenv.run("prepare", "begin", _xml(gid))
    assert begin.returncode == 1 and f"{hookenv.config}:2:" in begin.err  # begin ops still refuse it
    result = hookenv.run("release", "end", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")
    assert _torn_down(hookenv) == EVERY_PORT
    assert hookenv.journal(gid) is None
    assert f"{hookenv.config}:2:" in hookenv.hook_log() and "built-in default" in hookenv.hook_log()


def test_release_with_a_bad_feature_key_still_tears_down(hookenv: HookEnv) -> None:
    gid, _path = _started(hookenv)
    hookenv.write_config(rec1={**DECLARED, "teardown_sleep": "-3"}, rec2=DECLARED)
    result = hookenv.run("release", "end", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")
    assert _torn_down(hookenv) == EVERY_PORT
    assert "teardown_sleep" in hookenv.hook_log()


def test_release_with_an_unreadable_config_uses_the_defaults(hookenv: HookEnv) -> None:
    """Nothing of the file counts: the built-in defaults, and the features that made the journal's records
    (installed, no longer enabled) tear those down with their own defaults."""
    gid, path = _started(hookenv)
    hookenv.config.write_bytes(b"\xff\xfe not utf-8")
    result = hookenv.run("release", "end", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")
    assert not path.exists()  # the recorders' records are still there for the next teardown


# ------------------------------------------------------------------------------------------ guest names
def test_guest_name_with_newlines_cannot_forge_log_lines(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"fail": MAC_A})
    gid = uuid.uuid4()
    forged = "2026-01-01 00:00:00,000 [1] INFO guest=forged: proceed"
    name = f"vm\n{forged}\r\x1b[2K"
    xml_name = f"vm&#10;{forged}&#13;"  # libvirt would hand the hook such a name as it is in the XML
    result = hookenv.run("prepare", "begin", _xml(gid, xml_name), name=name)
    assert result.returncode == 1 and len(result.err.splitlines()) == 1
    lines = hookenv.hook_log().splitlines()
    assert lines and all(line[:4].isdigit() and " [" in line for line in lines), lines
    assert not any("guest=forged" in line and "guest=vm\\n" not in line for line in lines)
    assert any("guest=vm\\n2026" in line for line in lines)


def test_reconnect_with_a_malformed_journal_quarantines_and_verifies_from_the_xml(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"ops": "prepare, reconnect"}, rec2={"ops": "prepare, reconnect"})
    gid = uuid.uuid4()
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 0
    (hookenv.state / f"{gid}.json").write_text("{not json")
    result = hookenv.run("reconnect", "begin", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")  # a failing reconnect would kill the guest
    assert list(hookenv.state.glob(f"{gid}.json.quarantined.corrupt.*"))
    assert [e["op"] for e in hookenv.events("setup")] == ["prepare begin", "prepare begin"] + ["reconnect begin"] * 2
    assert len(hookenv.records(gid)) == 4  # journaled afresh from the XML
    assert hookenv.run("release", "end", _xml(gid)).returncode == 0


def test_release_with_a_feature_that_cannot_be_loaded_tears_down_the_others(hookenv: HookEnv) -> None:
    gid, _path = _started(hookenv)
    hookenv.write_config(features="rec1, nosuchfeature, rec2", rec1=DECLARED, rec2=DECLARED)
    assert hookenv.run("prepare", "begin", _xml(gid)).returncode == 1  # begin ops refuse the config
    result = hookenv.run("release", "end", _xml(gid))
    assert (result.returncode, result.stderr) == (0, b"")
    assert _torn_down(hookenv) == EVERY_PORT
    assert "nosuchfeature" in hookenv.hook_log()
