"""``vdp-hooks`` (``python -m hooks.cli``): check, status, enable/disable, emergency, replay - exit codes that
scripts can rely on (0 ok, 1 failed/refused, 2 usage, 3 broken config) and output an admin can act on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import DATA, ENTRY, MAC_A, MAC_B, PLUGINS, REPO, HookEnv, domain_xml, hooks_md, port

GID = "8f2e1a52-7c1d-4a57-9d0b-1b2c3d4e5f60"


def cli(hookenv: HookEnv, *args: str) -> subprocess.CompletedProcess[str]:
    env = hookenv.env(PYTHONPATH=f"{REPO}{os.pathsep}{PLUGINS}")
    return subprocess.run(
        [sys.executable, "-m", "hooks.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(hookenv.root),
        timeout=60,
        check=False,
    )


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    path = tmp_path / "etc-libvirt-hooks"
    path.mkdir()
    return path


# ------------------------------------------------------------------------------------------ usage
def test_help_and_usage_errors(hookenv: HookEnv) -> None:
    result = cli(hookenv, "--help")
    assert result.returncode == 0 and "Exit codes: 0 ok, 1 failed/refused" in result.stdout
    assert cli(hookenv).returncode == 2
    assert cli(hookenv, "frobnicate").returncode == 2


# ------------------------------------------------------------------------------------------ check
def test_check_passes_on_a_sane_host(hookenv: HookEnv, hooks_dir: Path) -> None:
    hookenv.write_config(features="rec1, links")
    result = cli(hookenv, "--hooks-dir", str(hooks_dir), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Checking config {hookenv.config}" in result.stdout
    assert "the hook's modules import (lxml, pyroute2)" in result.stdout and ": PASS" in result.stdout
    assert "WARN (run 'vdp-hooks enable')" in result.stdout
    assert hookenv.state.is_dir(), "check creates the state directory"
    quiet = cli(hookenv, "--hooks-dir", str(hooks_dir), "check", "-q")
    assert quiet.returncode == 0
    assert "PASS" not in quiet.stdout and "WARN" in quiet.stdout


def test_check_fails_on_a_down_link(hookenv: HookEnv, hooks_dir: Path) -> None:
    hookenv.write_config(features="links", extra="[links]\nrequire = vhnosuch0\n[uplinks]\nfabric-a = lo\n")
    result = cli(hookenv, "--hooks-dir", str(hooks_dir), "check", "--quiet")
    assert result.returncode == 1
    assert "required link vhnosuch0 is up" in result.stdout and "FAIL" in result.stdout
    assert "uplink fabric-a -> lo" not in result.stdout, "-q hides what passed"


def test_check_reports_a_broken_config(hookenv: HookEnv, hooks_dir: Path) -> None:
    hookenv.config.write_text("[hooks]\nfeatures = rec1\nretries = 3\n")
    result = cli(hookenv, "--hooks-dir", str(hooks_dir), "check")
    assert result.returncode == 3
    assert f"{hookenv.config}:3: [hooks] has no key 'retries'" in result.stdout and "FAIL" in result.stdout


def test_check_shows_the_emergency_override(hookenv: HookEnv, hooks_dir: Path) -> None:
    assert cli(hookenv, "emergency", "--for", "1h").returncode == 0
    result = cli(hookenv, "--hooks-dir", str(hooks_dir), "check", "-q")
    assert result.returncode == 0 and "emergency override" in result.stdout and "nothing is required" in result.stdout


# ------------------------------------------------------------------------------------------ status
def test_status_json(hookenv: HookEnv) -> None:
    empty = cli(hookenv, "status", "--json")
    assert empty.returncode == 0
    doc = json.loads(empty.stdout)
    assert doc["guests"] == [] and doc["emergency"] is None and doc["drift"] is False
    hookenv.write_config(rec1={"kinds": "reserve, assoc"})
    assert hookenv.run("prepare", "begin", domain_xml(metadata=hooks_md(port(MAC_A), port(MAC_B)))).returncode == 0
    doc = json.loads(cli(hookenv, "status", "--json").stdout)
    (guest,) = doc["guests"]
    assert (guest["guest"], guest["uuid"], guest["incoming"]) == ("guest1", GID, False)
    assert len(guest["records"]) == 6
    assert {(r["feature"], r["port"], r["state"], r["live"]) for r in guest["records"]} >= {
        ("rec1", MAC_A, "done", "ok"),
        ("rec2", MAC_B, "done", "ok"),
    }
    text = cli(hookenv, "status")
    assert text.returncode == 0 and "guest1" in text.stdout and MAC_A in text.stdout


def test_status_drift_exits_1(hookenv: HookEnv) -> None:
    assert hookenv.run("prepare", "begin", domain_xml(metadata=hooks_md(port(MAC_A), port(MAC_B)))).returncode == 0
    hookenv.write_config(rec2={"drift": MAC_B})
    result = cli(hookenv, "status", "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    drifted = [(r["feature"], r["port"]) for g in doc["guests"] for r in g["records"] if r["drift"]]
    assert doc["drift"] is True and drifted == [("rec2", MAC_B)]
    assert "DRIFT" in cli(hookenv, "status").stdout


def test_status_with_a_broken_config(hookenv: HookEnv) -> None:
    hookenv.config.write_text("[hooks\n")
    result = cli(hookenv, "status", "--json")
    assert result.returncode == 3 and f"{hookenv.config}:1: malformed section header" in result.stderr


# ------------------------------------------------------------------------------------------ enable / disable
def test_enable_links_the_entry_and_says_how_to_reload(hookenv: HookEnv, hooks_dir: Path) -> None:
    foreign = hooks_dir / "qemu"
    foreign.write_text("#!/bin/sh\nexit 0\n")
    other = hooks_dir / "qemu.d" / "10-someone-else"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    result = cli(hookenv, "--hooks-dir", str(hooks_dir), "enable")
    assert result.returncode == 0, result.stderr
    link = hooks_dir / "qemu.d" / "50-vdp-hooks"
    assert link.is_symlink() and os.path.realpath(link) == os.path.realpath(ENTRY)
    assert f"enabled: {link} -> " in result.stdout
    assert "reload" in result.stdout or "kill -HUP" in result.stdout
    assert "libvirt finds new hooks when it starts or reloads" in result.stdout
    again = cli(hookenv, "--hooks-dir", str(hooks_dir), "enable")
    assert again.returncode == 0 and "already enabled" in again.stdout
    # check now sees the hook enabled
    assert f"hook enabled ({link})" in cli(hookenv, "--hooks-dir", str(hooks_dir), "check").stdout
    result = cli(hookenv, "--hooks-dir", str(hooks_dir), "disable")
    assert result.returncode == 0 and f"disabled: removed {link}" in result.stdout
    assert not link.exists() and not link.is_symlink()
    assert foreign.read_text() == "#!/bin/sh\nexit 0\n" and other.exists(), "other hooks are left alone"
    again = cli(hookenv, "--hooks-dir", str(hooks_dir), "disable")
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_enable_leaves_a_foreign_file_alone(hookenv: HookEnv, hooks_dir: Path) -> None:
    (hooks_dir / "qemu.d").mkdir()
    squatter = hooks_dir / "qemu.d" / "50-vdp-hooks"
    squatter.write_text("#!/bin/sh\necho mine\n")
    result = cli(hookenv, "--hooks-dir", str(hooks_dir), "enable")
    assert result.returncode == 1
    assert "exists and is not ours" in result.stderr
    assert squatter.read_text() == "#!/bin/sh\necho mine\n" and not squatter.is_symlink()
    assert cli(hookenv, "--hooks-dir", str(hooks_dir), "disable").returncode == 0
    assert squatter.read_text() == "#!/bin/sh\necho mine\n", "disable never removes what is not ours"


def test_enable_refuses_a_broken_config(hookenv: HookEnv, hooks_dir: Path) -> None:
    hookenv.config.write_text("[hooks]\nfeatures = nosuchfeature\n")
    result = cli(hookenv, "--hooks-dir", str(hooks_dir), "enable")
    assert result.returncode == 3 and "not enabled, the config is broken" in result.stderr
    assert "nosuchfeature" in result.stderr
    assert not (hooks_dir / "qemu.d" / "50-vdp-hooks").exists()


# ------------------------------------------------------------------------------------------ emergency
def test_emergency_for_a_while_then_off(hookenv: HookEnv) -> None:
    """Active while it lasts, gone once it expired or was ended.  No step depends on how fast this machine
    is: the active part uses an hour, the expiry part waits until a one-second override has surely ended."""
    hookenv.write_config(rec1={"fail": MAC_A})
    xml = domain_xml(metadata=hooks_md(port(MAC_A)))
    assert hookenv.run("prepare", "begin", xml).returncode == 1
    result = cli(hookenv, "emergency", "--for", "1h", "--reason", "rack 4 on fire")
    assert result.returncode == 0 and "emergency override until" in result.stdout
    assert "active until" in cli(hookenv, "emergency").stdout
    assert json.loads(cli(hookenv, "status", "--json").stdout)["emergency"]["reason"] == "rack 4 on fire"
    assert hookenv.run("prepare", "begin", xml).returncode == 0
    assert "emergency override active (rack 4 on fire)" in hookenv.hook_log()
    assert cli(hookenv, "emergency", "--for", "1s").returncode == 0  # replaces the hour
    time.sleep(1.2)
    assert hookenv.run("prepare", "begin", xml).returncode == 1, "expired"
    assert "no emergency override" in cli(hookenv, "emergency").stdout
    assert cli(hookenv, "emergency", "--for", "1h").returncode == 0
    assert hookenv.run("prepare", "begin", xml).returncode == 0
    off = cli(hookenv, "emergency", "--off")
    assert off.returncode == 0 and "cleared" in off.stdout
    assert hookenv.run("prepare", "begin", xml).returncode == 1
    assert "no emergency override was set" in cli(hookenv, "emergency", "--off").stdout


def test_emergency_bad_duration_is_a_usage_error(hookenv: HookEnv) -> None:
    result = cli(hookenv, "emergency", "--for", "a while")
    assert result.returncode == 2 and "--for" in result.stderr


# ------------------------------------------------------------------------------------------ replay
def test_replay_dry_run_changes_nothing(hookenv: HookEnv) -> None:
    result = cli(hookenv, "replay", str(DATA / "guest-ports.xml"), "prepare", "begin", "--dry-run")
    out = result.stdout
    # This host runs only the test features: the hook vetoes the required 802.1Qbg port, so does the dry run.
    assert result.returncode == 1, result.stderr
    assert out.rstrip().splitlines()[-1].startswith("would veto: ") and "needs feature 'vdp'" in out
    assert "guest finance-db 09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f: prepare begin" in out
    assert "features that want this guest: rec1, rec2" in out
    assert "rec1: acts on prepare begin" in out
    assert f"port {MAC_A}: qbg uplink fabric-a -> fabric-a vlan 100; required (port {MAC_A})" in out
    assert f"port {MAC_B}: qbh uplink fabric-b -> fabric-b vlan switch-assigned; not required (port {MAC_B})" in out
    assert hookenv.events() == []
    assert not hookenv.state.exists() or not list(hookenv.state.glob("*.json"))


def test_replay_dry_run_of_a_plain_guest_and_of_a_broken_one(hookenv: HookEnv, tmp_path: Path) -> None:
    plain = cli(hookenv, "replay", str(DATA / "plain.xml"), "prepare", "begin", "--dry-run")
    assert plain.returncode == 0 and "none (fast path: exit 0)" in plain.stdout
    broken = tmp_path / "dup.xml"
    broken.write_bytes(domain_xml(metadata=hooks_md(port(MAC_A), port(MAC_A))))
    result = cli(hookenv, "replay", str(broken), "prepare", "begin", "--dry-run")
    assert result.returncode == 1 and "would veto" in result.stdout and "declared twice" in result.stdout


def test_replay_runs_the_hook_like_libvirt(hookenv: HookEnv, tmp_path: Path) -> None:
    saved = tmp_path / "guest1.xml"
    saved.write_bytes(domain_xml(metadata=hooks_md(port(MAC_A))))
    result = cli(hookenv, "replay", str(saved), "prepare", "begin")
    assert result.returncode == 0 and "guest1 prepare begin -: exit 0" in result.stdout
    assert hookenv.records(GID), "a real run journals"
    assert cli(hookenv, "replay", str(saved), "release", "end").returncode == 0
    assert hookenv.journal(GID) is None
    hookenv.write_config(rec1={"fail": MAC_A})
    result = cli(hookenv, "replay", str(saved), "prepare", "begin", "--name", "renamed")
    assert result.returncode == 1
    assert "renamed prepare begin -: exit 1" in result.stdout
    assert f"port {MAC_A}: feature rec1:" in result.stdout
    missing = cli(hookenv, "replay", str(tmp_path / "nope.xml"), "prepare", "begin")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_replay_uses_the_guest_uuid_from_the_file(hookenv: HookEnv, tmp_path: Path) -> None:
    gid = uuid.uuid4()
    saved = tmp_path / "g.xml"
    saved.write_bytes(domain_xml(guest_uuid=gid, metadata=hooks_md(port(MAC_A))))
    assert cli(hookenv, "replay", str(saved), "prepare", "begin").returncode == 0
    assert hookenv.journal(gid) is not None


def test_check_has_the_confinement_lines(hookenv: HookEnv, hooks_dir: Path) -> None:
    hookenv.write_config(features="rec1")
    out = cli(hookenv, "--hooks-dir", str(hooks_dir), "check").stdout
    assert "Checking AppArmor lets libvirt run the hook" in out
    assert "Checking SELinux lets the daemon run the hook" in out


# --- the reload that enable prints -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("daemon", "pid", "systemd", "hint"),
    [
        ("libvirtd", 1234, True, "run 'systemctl reload libvirtd'"),
        ("virtqemud", 99, True, "run 'systemctl reload virtqemud'"),
        ("libvirtd", 1234, False, "run 'kill -HUP 1234' (libvirtd)"),
        # socket-activated and exited when idle, or simply stopped: its next start reads the hook
        ("virtqemud", None, True, "nothing to reload: virtqemud is not running, and its next start reads the hook"),
        ("libvirtd", None, False, "nothing to reload: libvirtd is not running, and its next start reads the hook"),
    ],
)
def test_reload_hint(daemon: str, pid: int | None, systemd: bool, hint: str) -> None:
    from hooks.cli import _reload_hint

    assert _reload_hint(daemon, pid, systemd) == hint


# --- enable remembers the directories it created (the package's purge removes them) ------------------------
def test_enable_lists_only_the_directories_it_created(hookenv: HookEnv, tmp_path: Path) -> None:
    hooks_dir = tmp_path / "etc" / "hooks"
    assert cli(hookenv, "--hooks-dir", str(hooks_dir), "enable").returncode == 0
    record = hooks_dir / ".vdp-hooks-created"
    assert record.read_text().splitlines() == [str(hooks_dir), str(hooks_dir / "qemu.d")]
    assert cli(hookenv, "--hooks-dir", str(hooks_dir), "disable").returncode == 0
    assert cli(hookenv, "--hooks-dir", str(hooks_dir), "enable").returncode == 0
    assert record.read_text().splitlines() == [str(hooks_dir), str(hooks_dir / "qemu.d")], "nothing new created"

    existing = tmp_path / "other" / "hooks"
    (existing / "qemu.d").mkdir(parents=True)
    assert cli(hookenv, "--hooks-dir", str(existing), "enable").returncode == 0
    assert not (existing / ".vdp-hooks-created").exists(), "both directories were there before"


# --- lldpad missing: a failure where 802.1Qbg ports are required by default --------------------------------
def _check_without_lldpad(hookenv: HookEnv, hooks_dir: Path) -> subprocess.CompletedProcess[str]:
    """vdp-hooks check in a network namespace of its own, where no lldpad runs (its pid file is accepted
    only for an lldpad in our namespace, and its client socket is an abstract one: per namespace)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a network namespace without lldpad")
    env = hookenv.env(PYTHONPATH=f"{REPO}{os.pathsep}{PLUGINS}")
    return subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "hooks.cli", "--hooks-dir", str(hooks_dir), "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(hookenv.root),
        timeout=120,
        check=False,
    )


def test_check_fails_without_lldpad_when_ports_are_required(hookenv: HookEnv, hooks_dir: Path) -> None:
    hookenv.write_config(features="vdp", vdp_required=None)  # the default: required
    result = _check_without_lldpad(hookenv, hooks_dir)
    line = next((x for x in result.stdout.splitlines() if "lldpad is running" in x), "")
    assert ": FAIL" in line and "[vdp] required" in line, result.stdout + result.stderr
    assert result.returncode == 1


def test_check_warns_without_lldpad_when_ports_are_optional(hookenv: HookEnv, hooks_dir: Path) -> None:
    hookenv.write_config(features="vdp", vdp_required="no")
    result = _check_without_lldpad(hookenv, hooks_dir)
    line = next((x for x in result.stdout.splitlines() if "lldpad is running" in x), "")
    assert ": WARN" in line, result.stdout + result.stderr


# --- replay: libvirt's two styles of release end ----------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["-"], ["migrated"], ["destroyed"], ["from snapshot"]])
def test_replay_release_end_in_both_styles(hookenv: HookEnv, tmp_path: Path, extra: list[str]) -> None:
    """libvirt < 10.5 passes '-', 10.5+ the shutoff reason: either way the teardown runs."""
    saved = tmp_path / "guest1.xml"
    saved.write_bytes(domain_xml(metadata=hooks_md(port(MAC_A))))
    assert cli(hookenv, "replay", str(saved), "prepare", "begin").returncode == 0
    assert hookenv.records(GID)
    result = cli(hookenv, "replay", str(saved), "release", "end", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"guest1 release end {extra[0] if extra else '-'}: exit 0" in result.stdout
    assert hookenv.journal(GID) is None, "torn down"


# ------------------------------------------------------------------------------------------ dry run = the hook
_OURS_BROKEN = domain_xml(metadata=hooks_md(port(MAC_A), port(MAC_A)))  # the same port twice: unusable XML
_DECISIONS: dict[str, tuple[bytes, dict[str, Any]]] = {
    "guest requires a feature the host lacks": (
        domain_xml(metadata=hooks_md(port(MAC_A), features={"nosuch": "yes"})),
        {},
    ),
    "guest wants a feature the host lacks, not required": (
        domain_xml(metadata=hooks_md(port(MAC_A), features={"nosuch": "no"})),
        {},
    ),
    "required port with a broken declaration": (domain_xml(metadata=hooks_md(port(MAC_A, vlan="5000"))), {}),
    "broken port, not required": (
        domain_xml(metadata=hooks_md(port(MAC_A, vlan="5000", required="no"), port(MAC_B))),
        {},
    ),
    "two good ports": (domain_xml(metadata=hooks_md(port(MAC_A), port(MAC_B, required="no"))), {}),
    "unusable XML of a guest of ours": (_OURS_BROKEN, {}),
    "unusable XML of a guest not ours": (domain_xml().replace(b"</domain>", b"</domian>"), {}),
    "a feature's setting is broken": (
        domain_xml(metadata=hooks_md(port(MAC_A))),
        {"rec1": {"fail": "x=NoSuchError"}},
    ),
    "the host config is broken": (domain_xml(metadata=hooks_md(port(MAC_A))), {"hooks": {"marker_ttl": "soon"}}),
    "a feature setting is broken and the guest requires a missing feature": (
        domain_xml(metadata=hooks_md(port(MAC_A), features={"nosuch": "yes"})),
        {"rec1": {"fail": "x=NoSuchError"}},
    ),
    "emergency override, required port broken, required feature missing": (
        domain_xml(metadata=hooks_md(port(MAC_A, vlan="5000", required="yes"), features={"nosuch": "yes"})),
        {"emergency": True},
    ),
}


@pytest.mark.parametrize("case", list(_DECISIONS))
@pytest.mark.parametrize("hook", ["migrate begin", "prepare begin", "started begin", "reconnect begin", "release end"])
def test_replay_dry_run_and_the_hook_agree_on_every_veto(
    hookenv: HookEnv, tmp_path: Path, case: str, hook: str
) -> None:
    """The same XML and host through the hook (as libvirt runs it) and through replay --dry-run: the same
    verdict, and a veto is the same line."""
    xml, settings = _DECISIONS[case]
    host = dict(settings)
    if host.pop("emergency", False):
        from hooks.policy import set_emergency

        set_emergency(str(hookenv.state), 600, "evacuation test")
    if host:
        hookenv.write_config(**host)
    saved = tmp_path / "guest.xml"
    saved.write_bytes(xml)
    op, subop = hook.split()
    result = hookenv.run(op, subop, xml)
    dry = cli(hookenv, "replay", str(saved), op, subop, "--dry-run")
    assert (dry.returncode != 0) == (result.returncode != 0), (case, result.err, dry.stdout)
    if result.returncode:
        line = result.err.strip().splitlines()[-1]
        assert f"would veto: {line}" in dry.stdout, (line, dry.stdout)
    else:
        assert "would veto" not in dry.stdout, dry.stdout
