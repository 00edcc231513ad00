"""``vdp-hooks check``: the host probes and the report that prints them, virt-host-validate style.

Each line is announced (``HOOKS: Checking the hook's modules import ... :``) before its probe runs and
completed with PASS / WARN / FAIL when it returns, so a probe that hangs (a wedged lldpad, a slow
``libvirtd --version``) shows which one it is.  With ``-q`` only what did not pass is printed, whole
lines once the verdict is known.  The probes only read (sysfs, /proc, pid files, the local policy files);
they never signal a daemon nor load a policy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable

from hooks.errors import HookError
from hooks.feature import CheckResult
from hooks.journal import Journal

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Callable, TextIO

__all__ = [
    "APPARMOR_INCLUDE",
    "APPARMOR_PROFILES",
    "HOOK_IMPORTS",
    "SELINUX_MODULE",
    "Probe",
    "Report",
    "apparmor_check",
    "apparmor_problem",
    "daemon",
    "hook_imports",
    "hook_link_check",
    "selinux_check",
    "state_dir_check",
]


# ----------------------------------------------------------------------------------------------- report
class Probe:
    """A check announced before it runs: what it checks, and the function that finds out.

    A feature's ``check()`` may yield these instead of finished :class:`CheckResult` objects; then its
    lines, too, are announced before each probe runs."""

    __slots__ = ("run", "what")

    def __init__(self, what: str, run: Callable[[], CheckResult]) -> None:
        self.what = what
        self.run = run


class Report:
    """Lines ``AREA: Checking WHAT : VERDICT (note)``; colour only on a terminal.

    A probe's result may name more than was announced (``lldpad is running (pid 812)``): what it adds
    to the announced text is shown after the verdict."""

    COLOURS = {"PASS": "\033[32m", "WARN": "\033[33m", "FAIL": "\033[31m"}

    def __init__(self, quiet: bool, out: TextIO | None = None) -> None:
        self.quiet = quiet
        self.failed = False
        self.out = out or sys.stdout
        self.colour = self.out.isatty()

    def check(self, area: str, what: str, probe: Callable[[], CheckResult]) -> CheckResult:
        """Announce ``what``, run the probe, complete the line; returns the probe's result."""
        head = f"{area:>8}: Checking {what:<60} : "
        if not self.quiet:
            self.out.write(head)
            self.out.flush()
        try:
            result = probe()
        except BaseException:
            if not self.quiet:
                self.out.write("\n")  # the traceback starts on a line of its own
            raise
        detail = result.what[len(what) :].strip() if result.what.startswith(what) else result.what
        if detail.startswith("(") and detail.endswith(")"):
            detail = detail[1:-1]
        self._finish(head, result, detail)
        return result

    def line(self, area: str, result: CheckResult) -> None:
        """A line whose check has already run (announced and completed at once)."""
        self._finish(f"{area:>8}: Checking {result.what:<60} : ", result, "", announced=False)

    def items(self, area: str, items: Iterable[CheckResult | Probe]) -> None:
        """A feature's checks, as it yields them: finished results, or probes announced before they run."""
        for item in items:
            if isinstance(item, Probe):
                self.check(area, item.what, item.run)
            else:
                self.line(area, item)

    def _finish(self, head: str, result: CheckResult, detail: str, announced: bool = True) -> None:
        if result.verdict == "FAIL":
            self.failed = True
        notes = [n for n in (detail, result.hint if result.verdict != "PASS" else "") if n]
        note = "".join(f" ({n})" for n in notes)
        verdict = result.verdict
        if self.colour:
            verdict = f"{self.COLOURS.get(verdict, '')}{verdict}\033[0m"
        if self.quiet:
            if result.verdict != "PASS":
                self.out.write(f"{head}{verdict}{note}\n")
        else:
            self.out.write(f"{head if not announced else ''}{verdict}{note}\n")
        self.out.flush()


# ----------------------------------------------------------------------------------------------- daemon
def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def daemon() -> tuple[str, int | None]:
    """Which libvirt daemon runs the qemu driver here (pid files, then /proc; never signalling)."""
    for name, pid_file in (("virtqemud", "/run/libvirt/virtqemud.pid"), ("libvirtd", "/run/libvirtd.pid")):
        try:
            with open(pid_file) as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if _comm(pid) == name:
            return name, pid
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            comm = _comm(int(entry))
            if comm in ("virtqemud", "libvirtd"):
                found.setdefault(comm, int(entry))
    for name in ("virtqemud", "libvirtd"):
        if name in found:
            return name, found[name]
    return ("libvirtd", None)


# ----------------------------------------------------------------------------------------------- confinement
APPARMOR_INCLUDE = "include if exists <abstractions/libvirt-vdp-hooks>"
#: libvirt's daemon profiles and their files: Debian's monolithic libvirtd (profile "libvirtd", named
#: "/usr/sbin/libvirtd" before libvirt 7.x) and the modular virtqemud profile that libvirt upstream ships.
APPARMOR_PROFILES = (
    (("libvirtd", "/usr/sbin/libvirtd"), "usr.sbin.libvirtd"),
    (("virtqemud", "/usr/sbin/virtqemud"), "usr.sbin.virtqemud"),
)
# An include of our abstraction that AppArmor acts on: "#include" is its old include syntax, but
# "# include" (or anything after a "#" that is not "#include") is a comment.
_APPARMOR_INCLUDES_US = re.compile(
    r"^[ \t]*#?include[ \t]+(?:if[ \t]+exists[ \t]+)?<abstractions/libvirt-vdp-hooks>", re.MULTILINE
)


def _read(root: str, path: str) -> str:
    try:
        with open(os.path.join(root, path.lstrip("/")), encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def apparmor_problem(root: str = "/") -> str | None:
    """Why an AppArmor-confined libvirtd or virtqemud could not run the hook, or None.

    Their profiles may execute only what lies under /etc/libvirt/hooks/, and AppArmor checks the target
    of our enable link (/usr/libexec/...): without the shipped abstraction included in the profile's
    local file, every guest start would fail.  Reads sysfs and the local files only."""
    if _read(root, "/sys/module/apparmor/parameters/enabled").strip() != "Y":
        return None
    enforced = {
        line.split(" ")[0]
        for line in _read(root, "/sys/kernel/security/apparmor/profiles").splitlines()
        if line.endswith("(enforce)")
    }
    missing = []
    for names, profile in APPARMOR_PROFILES:
        local = f"/etc/apparmor.d/local/{profile}"
        if enforced.intersection(names) and not _APPARMOR_INCLUDES_US.search(_read(root, local)):
            missing.append(f"echo '{APPARMOR_INCLUDE}' >> {local}; apparmor_parser -r /etc/apparmor.d/{profile}")
    if not missing:
        return None
    return "libvirt's daemon is confined by AppArmor and may not execute the hook: " + "; ".join(missing)


def apparmor_check() -> CheckResult:
    confinement = apparmor_problem()
    return CheckResult("AppArmor lets libvirt run the hook", "FAIL" if confinement else "PASS", confinement or "")


SELINUX_MODULE = "/usr/share/selinux/packages/libvirt-vdp-hooks/libvirt_vdp_hooks.pp"


def selinux_check(daemon: str, root: str = "/") -> CheckResult:
    """Whether SELinux lets the daemon's domain run the hook fully (packaging/selinux/).

    Monolithic libvirtd runs as virtd_t, an unconfined domain in Fedora's policy; virtqemud runs as
    virtqemud_t, which may not talk to lldpad's client socket nor manage the admin's journal files
    without our module.  Reads selinuxfs, /etc/selinux/config and the module store only."""
    what = "SELinux lets the daemon run the hook"
    enforce = _read(root, "/sys/fs/selinux/enforce").strip()
    if enforce not in ("0", "1"):
        return CheckResult(f"{what} (SELinux is off)", "PASS")
    mode = "enforcing" if enforce == "1" else "permissive"
    if daemon != "virtqemud":
        return CheckResult(f"{what} ({mode}; {daemon} runs unconfined: nothing needed)", "PASS")
    policy = re.search(r"^SELINUXTYPE=(\S+)", _read(root, "/etc/selinux/config"), re.MULTILINE)
    store = os.path.join(root, "var/lib/selinux", policy.group(1) if policy else "targeted", "active/modules")
    try:
        loaded = any(os.path.isdir(os.path.join(store, p, "libvirt_vdp_hooks")) for p in os.listdir(store))
    except OSError:
        loaded = False
    if loaded:
        return CheckResult(f"{what} ({mode}; module libvirt_vdp_hooks loaded)", "PASS")
    return CheckResult(
        f"{what} ({mode}; module libvirt_vdp_hooks loaded)",
        "FAIL" if mode == "enforcing" else "WARN",
        f"virtqemud_t may not talk to lldpad's client socket: semodule -i {SELINUX_MODULE}",
    )


# ----------------------------------------------------------------------------------------------- imports
#: What the hook imports for a Qbg/Qbh port, the way its entry does (``python3 -S``, then hooks/boot.py's
#: start-up); prints the dependencies that had to be imported the ordinary way.
HOOK_IMPORTS = """
import json, sys
sys.path.insert(0, {lib!r})
from hooks import boot
boot.start()
import hooks.runner, vdp.feature, vdp.qbg.session, vdp.qbg.preflight, vdp.profiles, vdp.qbg.clif
boot.import_lean("lxml.etree")
print(json.dumps(boot.fallbacks))
"""


def hook_imports() -> CheckResult:
    """Whether the hook's modules import in a fresh interpreter started like the entry's (this one)."""
    what = "the hook's modules import (lxml, pyroute2)"
    lib = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        proc = subprocess.run(
            [sys.executable, "-S", "-c", HOOK_IMPORTS.format(lib=lib)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return CheckResult(what, "FAIL", f"cannot run {sys.executable}: {exc}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        return CheckResult(what, "FAIL", f"{last} -- install python3-lxml and python3-pyroute2 (>= 0.7)")
    try:
        fallbacks = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return CheckResult(what, "FAIL", f"unexpected output: {proc.stdout[-200:]!r}")
    if fallbacks:
        names = ", ".join(f"{k} ({v})" for k, v in sorted(fallbacks.items()))
        return CheckResult(
            what,
            "WARN",
            f"imported the ordinary way: {names}; the hook works, but each guest event costs ~15 ms more "
            "-- report it with the lxml/pyroute2 versions",
        )
    return CheckResult(what, "PASS")


# ----------------------------------------------------------------------------------------------- host
def state_dir_check(sdir: str) -> CheckResult:
    """The journal directory exists (created if not) and is ours to write."""
    try:
        Journal(sdir).ensure_dir()
    except HookError as exc:
        return CheckResult(f"state directory {sdir}", "FAIL", exc.one_line())
    return CheckResult(f"state directory {sdir}", "PASS")


def hook_link_check(link: str, entry: str) -> CheckResult:
    """libvirt's hooks directory holds our link to this entry."""
    if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(entry):
        return CheckResult(f"hook enabled ({link})", "PASS")
    return CheckResult(f"hook enabled ({link})", "WARN", "run 'vdp-hooks enable'")
