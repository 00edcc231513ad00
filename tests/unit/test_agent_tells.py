"""What the agent tells: its view in ``vdp-hooks status`` (from agent.json), ``check``'s warning when it
stalls, and ``enable``/``disable`` handling its systemd unit.

systemd does not run on this machine (nor in CI's), so the unit's handling runs against a stand-in
``systemctl`` (a script that records its arguments and answers like systemctl) and a stand-in for
``/run/systemd/system``; where systemd is absent, the real path is tested through the CLI."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hooks import agentfile
from tests.unit.conftest import HookEnv
from tests.unit.test_cli import cli


def _systemctl(tmp_path: Path, load_state: str, rc: int = 0) -> tuple[str, Path]:
    calls = tmp_path / "calls"
    script = tmp_path / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'if [ "$1" = show ]; then echo {load_state}; exit 0; fi\n'
        f'[ {rc} = 0 ] || echo "Failed to enable unit: Access denied" >&2\n'
        f"exit {rc}\n"
    )
    script.chmod(0o755)
    return str(script), calls


@pytest.mark.parametrize("enable", [True, False])
def test_unit_is_enabled_and_started_or_stopped_and_disabled(tmp_path: Path, enable: bool) -> None:
    systemctl, calls = _systemctl(tmp_path, "loaded")
    ok, what = agentfile.manage_unit(enable, run_dir=str(tmp_path), systemctl=systemctl)
    verb = "enable" if enable else "disable"
    assert ok and ("enabled and started" if enable else "stopped and disabled") in what
    assert calls.read_text().splitlines() == [
        f"show --property=LoadState --value {agentfile.UNIT}",
        f"{verb} --now {agentfile.UNIT}",
    ]


def test_unit_not_installed_is_left_alone(tmp_path: Path) -> None:
    systemctl, calls = _systemctl(tmp_path, "not-found")
    ok, what = agentfile.manage_unit(True, run_dir=str(tmp_path), systemctl=systemctl)
    assert ok and "not installed" in what
    assert len(calls.read_text().splitlines()) == 1, "only asked, nothing enabled"


def test_systemctl_failure_is_reported(tmp_path: Path) -> None:
    systemctl, _calls = _systemctl(tmp_path, "loaded", rc=1)
    ok, what = agentfile.manage_unit(True, run_dir=str(tmp_path), systemctl=systemctl)
    assert not ok and "Access denied" in what


def test_without_systemd_nothing_is_run(tmp_path: Path) -> None:
    systemctl, calls = _systemctl(tmp_path, "loaded")
    ok, what = agentfile.manage_unit(True, run_dir=str(tmp_path / "absent"), systemctl=systemctl)
    assert ok and "systemd is not running" in what and not calls.exists()


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd runs here: enable would start the unit")
def test_cli_enable_and_disable_say_what_became_of_the_agent(hookenv: HookEnv, tmp_path: Path) -> None:
    hooks_dir = tmp_path / "etc-libvirt-hooks"
    hooks_dir.mkdir()
    for verb in ("enable", "disable"):
        out = cli(hookenv, "--hooks-dir", str(hooks_dir), verb)
        assert out.returncode == 0, out
        assert "agent: systemd is not running here" in out.stdout, out.stdout


def _doc(**status: object) -> dict[str, object]:
    return {"pid": 1, "port_id": 2, "status": {"reconcile_interval": 60.0, "jobs": 0, "work": [], **status}}


def test_status_lines_show_the_last_reconcile_and_the_work() -> None:
    now = time.time()
    doc = _doc(
        reconcile={
            "at": now - 12,
            "ports": {"ok": 3, "lost": 1},
            "pending": {"teardown_unfinished": 1, "unconfirmed": 0},
            "drift": ["guest 1234: 1 port(s) not held by lldpad: 52:54:00:aa:20:02"],
        },
        jobs=21,
        work=[{"guest": "vm", "uuid": "1234", "why": ["deassoc"], "failures": 2, "next_in": 1.6}],
    )
    lines = agentfile.status_lines(doc, now=now)
    assert lines[0] == "  last reconcile: 12 s ago (1 lost, 3 ok); every 60 s"
    assert "  drift: guest 1234: 1 port(s) not held by lldpad: 52:54:00:aa:20:02" in lines
    assert "  pending records: 1 teardown unfinished" in lines
    assert "  working on vm 1234: deassoc, 2 failed attempt(s), next in 1.6 s" in lines
    assert lines[-1] == "  ... and 20 more guest(s)"
    assert agentfile.status_lines({"pid": 1}) == []  # an agent of before: only its first line


def test_stalled_agent_is_told_apart() -> None:
    now = time.time()
    assert agentfile.stalled(_doc(reconcile={"at": now - 100}), now=now) is None
    why = agentfile.stalled(_doc(reconcile={"at": now - 600}), now=now)
    assert why is not None and "10 min ago" in why


def test_every_agent_key_is_documented_in_the_man_page_and_the_example() -> None:
    import re

    from hooks.agent import AGENT_OPTIONS

    root = Path(__file__).resolve().parents[2]
    page = (root / "packaging/man/vdp-hooks.conf.5").read_text()
    section = page[page.index(".SH [agent]") : page.index(".SH FILES")]
    missing = [k for k in AGENT_OPTIONS if not re.search(rf"^\.BR {re.escape(k)}\b", section, re.M)]
    assert not missing, f"vdp-hooks.conf(5) [agent] lacks: {missing}"
    example = (root / "etc-libvirt-hooks/vdp-hooks.conf").read_text()
    assert "\n[agent]\n" in example and "#reconcile_interval = 60" in example and "#metrics_file = " in example


def test_the_unit_is_ordered_after_lldpad_and_libvirt_and_restarts_on_failure() -> None:
    unit = (Path(__file__).resolve().parents[2] / "packaging/systemd/libvirt-vdp-hooks-agent.service").read_text()
    lines = [line.strip() for line in unit.splitlines()]
    after = next(line for line in lines if line.startswith("After=")).split("=", 1)[1].split()
    assert {"lldpad.service", "libvirtd.service", "virtqemud.service"} <= set(after)
    assert "Restart=on-failure" in lines and "Type=notify" in lines
    assert "RestartPreventExitStatus=3" in lines  # a broken config: restarting cannot help
    assert not [line for line in lines if line.startswith(("Requires=", "BindsTo="))], "the agent outlives both"
