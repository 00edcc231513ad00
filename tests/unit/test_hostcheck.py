"""hooks/hostcheck.py: the report announces each check before its probe runs; the confinement probes read
AppArmor's and SELinux's files under a root of the test's making."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hooks.feature import CheckResult
from hooks.hostcheck import Probe, Report


# --- the report: "Checking X :" before X runs, virt-host-validate style ------------------------------------
def test_each_line_is_announced_before_its_probe_runs() -> None:
    out = io.StringIO()
    report = Report(quiet=False, out=out)
    seen: list[str] = []

    def probe(verdict: str, what: str = "") -> CheckResult:
        seen.append(out.getvalue())
        return CheckResult(what, verdict, "do this")

    report.check("HOOKS", "first thing", lambda: probe("PASS", "first thing (detail)"))
    report.items("VDP", [Probe("second thing", lambda: probe("FAIL", "second thing")), CheckResult("third", "WARN")])
    lines = out.getvalue().splitlines()
    assert seen[0].endswith("Checking " + "first thing".ljust(60) + " : "), seen
    assert seen[1].splitlines()[-1].endswith("Checking " + "second thing".ljust(60) + " : "), seen
    assert lines[0].endswith(": PASS (detail)"), "a PASS shows what the probe added, not the hint"
    assert lines[1].endswith(": FAIL (do this)") and lines[1].startswith("     VDP: Checking second thing")
    assert lines[2].startswith("     VDP: Checking third") and lines[2].endswith(": WARN")
    assert report.failed and len(lines) == 3


def test_quiet_prints_only_what_did_not_pass_as_whole_lines() -> None:
    out = io.StringIO()
    report = Report(quiet=True, out=out)
    report.check("HOOKS", "passes", lambda: CheckResult("passes", "PASS"))
    report.check("HOOKS", "warns", lambda: CheckResult("warns", "WARN", "hint"))
    report.line("HOOKS", CheckResult("fine", "PASS"))
    (line,) = out.getvalue().splitlines()
    assert line.startswith("   HOOKS: Checking warns") and line.endswith(": WARN (hint)")
    assert not report.failed


def test_a_probe_that_raises_leaves_its_line_ended() -> None:
    out = io.StringIO()

    def broken() -> CheckResult:
        raise RuntimeError("probe bug")

    with pytest.raises(RuntimeError):
        Report(quiet=False, out=out).check("HOOKS", "breaks", broken)
    assert out.getvalue().endswith(" : \n")


# --- AppArmor: a confined libvirtd or virtqemud may not execute the hook unless the abstraction is included --
LIBVIRTD_LOCAL = "etc/apparmor.d/local/usr.sbin.libvirtd"
VIRTQEMUD_LOCAL = "etc/apparmor.d/local/usr.sbin.virtqemud"
INCLUDE = "include if exists <abstractions/libvirt-vdp-hooks>\n"


def _write_tree(root: Path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


def _apparmor_root(tmp_path: Path, *, enabled: str, profiles: str, local: dict[str, str]) -> str:
    files = {
        "sys/module/apparmor/parameters/enabled": enabled,
        "sys/kernel/security/apparmor/profiles": profiles,
        **local,
    }
    return _write_tree(tmp_path, files)


@pytest.mark.parametrize(
    ("enabled", "profiles", "local", "needs"),
    [
        ("Y\n", "libvirtd (enforce)\n", {LIBVIRTD_LOCAL: ""}, ["usr.sbin.libvirtd"]),
        ("Y\n", "libvirtd (enforce)\n", {}, ["usr.sbin.libvirtd"]),
        ("Y\n", "/usr/sbin/libvirtd (enforce)\n", {}, ["usr.sbin.libvirtd"]),  # the profile's older name
        ("Y\n", "libvirtd (enforce)\n", {LIBVIRTD_LOCAL: INCLUDE}, []),
        ("Y\n", "libvirtd (enforce)\n", {LIBVIRTD_LOCAL: "#include <abstractions/libvirt-vdp-hooks>\n"}, []),
        ("Y\n", "libvirtd (enforce)\n", {LIBVIRTD_LOCAL: "# " + INCLUDE}, ["usr.sbin.libvirtd"]),  # commented out
        ("Y\n", "libvirtd (enforce)\n", {LIBVIRTD_LOCAL: "#\t" + INCLUDE}, ["usr.sbin.libvirtd"]),
        ("Y\n", "libvirtd (enforce)\n", {VIRTQEMUD_LOCAL: INCLUDE}, ["usr.sbin.libvirtd"]),  # the other profile's
        # upstream's modular layout: virtqemud has its own profile and local file
        ("Y\n", "virtqemud (enforce)\n", {LIBVIRTD_LOCAL: INCLUDE}, ["usr.sbin.virtqemud"]),
        ("Y\n", "virtqemud (enforce)\n", {VIRTQEMUD_LOCAL: INCLUDE}, []),
        ("Y\n", "libvirtd (enforce)\nvirtqemud (enforce)\n", {}, ["usr.sbin.libvirtd", "usr.sbin.virtqemud"]),
        ("Y\n", "libvirtd (complain)\n", {}, []),
        ("Y\n", "/usr/sbin/dnsmasq (enforce)\n", {}, []),
        ("N\n", "libvirtd (enforce)\n", {}, []),
    ],
)
def test_apparmor_problem(tmp_path: Path, enabled: str, profiles: str, local: dict[str, str], needs: list[str]) -> None:
    from hooks.hostcheck import apparmor_problem

    found = apparmor_problem(_apparmor_root(tmp_path, enabled=enabled, profiles=profiles, local=local))
    if not needs:
        assert found is None
        return
    assert found is not None
    for profile in needs:
        assert f"echo '{INCLUDE.strip()}' >> /etc/apparmor.d/local/{profile}" in found
        assert f"apparmor_parser -r /etc/apparmor.d/{profile}" in found
    assert found.count("apparmor_parser -r") == len(needs)


def test_apparmor_absent_is_no_problem(tmp_path: Path) -> None:
    from hooks.hostcheck import apparmor_problem

    assert apparmor_problem(str(tmp_path)) is None


# --- SELinux: virtqemud_t needs the shipped policy module, libvirtd's virtd_t nothing -----------------------
def _selinux_root(tmp_path: Path, enforce: str | None, module: bool) -> str:
    files = {"etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=targeted\n"}
    if enforce is not None:
        files["sys/fs/selinux/enforce"] = enforce
    if module:
        files["var/lib/selinux/targeted/active/modules/400/libvirt_vdp_hooks/cil"] = "(x)"
    else:
        files["var/lib/selinux/targeted/active/modules/100/virt/cil"] = "(x)"
    return _write_tree(tmp_path, files)


@pytest.mark.parametrize(
    ("enforce", "daemon", "module", "verdict", "shown"),
    [
        (None, "virtqemud", False, "PASS", "SELinux is off"),
        ("1", "libvirtd", False, "PASS", "enforcing; libvirtd runs unconfined"),
        ("1", "virtqemud", True, "PASS", "enforcing; module libvirt_vdp_hooks loaded"),
        ("1", "virtqemud", False, "FAIL", "enforcing"),
        ("0", "virtqemud", False, "WARN", "permissive"),
    ],
)
def test_selinux_check(
    tmp_path: Path, enforce: str | None, daemon: str, module: bool, verdict: str, shown: str
) -> None:
    from hooks.hostcheck import SELINUX_MODULE, selinux_check

    result = selinux_check(daemon, _selinux_root(tmp_path, enforce, module))
    assert result.verdict == verdict and shown in result.what, result
    if verdict != "PASS":
        assert f"semodule -i {SELINUX_MODULE}" in result.hint
