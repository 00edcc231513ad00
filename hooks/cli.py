"""``vdp-hooks``: the admin's command.  Exit codes: 0 ok, 1 a check failed or the action was refused,
2 usage error, 3 the host config is broken.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence

from hooks import __version__
from hooks.config import CONFIG_PATH, Config, load_config, parse_seconds
from hooks.errors import ConfigError, HookError, XmlError
from hooks.feature import BEGIN_OPS, CheckResult, Feature, feature_class, is_known_feature
from hooks.journal import Journal
from hooks.policy import clear_emergency, read_emergency, set_emergency
from hooks.runner import declaration_veto, state_dir

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3
HOOK_NAME = "50-vdp-hooks"
INSTALLED_ENTRY = "/usr/libexec/libvirt-vdp-hooks/qemu"
_SOURCE_ENTRY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc-libvirt-hooks", "qemu")


def entry_path() -> str:
    """The hook entry this CLI belongs to: the source tree's when run from it, else the packaged one."""
    if os.environ.get("VDP_HOOKS_ENTRY"):
        return os.environ["VDP_HOOKS_ENTRY"]
    return _SOURCE_ENTRY if os.path.isfile(_SOURCE_ENTRY) else INSTALLED_ENTRY


# ----------------------------------------------------------------------------------------------- output
class _Report:
    """virt-host-validate style lines; colour only on a terminal."""

    COLOURS = {"PASS": "\033[32m", "WARN": "\033[33m", "FAIL": "\033[31m"}

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.failed = False
        self.colour = sys.stdout.isatty()

    def line(self, area: str, result: CheckResult) -> None:
        if result.verdict == "FAIL":
            self.failed = True
        if self.quiet and result.verdict == "PASS":
            return
        verdict = result.verdict
        if self.colour:
            verdict = f"{self.COLOURS.get(verdict, '')}{verdict}\033[0m"
        hint = f" ({result.hint})" if result.hint and result.verdict != "PASS" else ""
        print(f"{area:>8}: Checking {result.what:<60} : {verdict}{hint}")


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _daemon() -> tuple[str, int | None]:
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


def _reload_hint(daemon: str, pid: int | None, systemd: bool | None = None) -> str:
    """What to do so that the daemon sees a newly enabled hook.

    libvirt looks for hooks when it starts and when it reloads (SIGHUP).  A daemon that is not running
    (a socket-activated one exits when idle) has nothing to reload: its next start reads the hook."""
    if pid is None:
        return f"nothing to reload: {daemon} is not running, and its next start reads the hook"
    if systemd is None:
        systemd = os.path.isdir("/run/systemd/system")
    return f"run 'systemctl reload {daemon}'" if systemd else f"run 'kill -HUP {pid}' ({daemon})"


def _libvirt_has_qemu_d() -> bool:
    """hooks/qemu.d/ exists since libvirt 6.5; assume it when the version cannot be read."""
    for daemon in ("virtqemud", "libvirtd"):
        try:
            out = subprocess.run([daemon, "--version"], check=False, capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        match = re.search(r"(\d+)\.(\d+)", out)
        if match:
            return (int(match.group(1)), int(match.group(2))) >= (6, 5)
    return True


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


#: What the hook imports for a Qbg/Qbh port, the way its entry does (``python3 -S``, site-packages added
#: without .pth files, hooks/leanimport.py); prints the dependencies that had to be imported the ordinary way.
HOOK_IMPORTS = """
import json, site, sys
sys.path.extend(site.getsitepackages())
sys.path.insert(0, {lib!r})
from hooks.leanimport import fallbacks, import_lean
import_lean("uuid")
import hooks.runner, vdp.feature, vdp.lldpad, vdp.clif
import_lean("lxml.etree")
print(json.dumps(fallbacks))
"""


def _hook_imports() -> CheckResult:
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


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, known_features=is_known_feature)


def _instances(config: Config, names: Sequence[str]) -> list[Feature]:
    return [feature_class(n)(config, config.feature_settings(n, feature_class(n).options)) for n in names]


def _agent_check(sdir: str) -> CheckResult:
    from hooks.agentfile import agent_info, stalled

    doc, why = agent_info(sdir)
    if doc is not None:
        stuck = stalled(doc)
        return CheckResult(f"agent {why}", "WARN" if stuck else "PASS", stuck or "")
    hint = "systemctl enable --now libvirt-vdp-hooks-agent (nobody repairs ports after the hook exits)"
    return CheckResult(f"agent {why}", "WARN", hint)


# ----------------------------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    report = _Report(args.quiet)
    try:
        config = _load(args)
        features = _instances(config, config.features)
        report.line("HOOKS", CheckResult(f"config {config.path or CONFIG_PATH + ' (absent: defaults)'}", "PASS"))
    except ConfigError as exc:
        report.line("HOOKS", CheckResult("config is valid", "FAIL", exc.one_line()))
        return EXIT_CONFIG
    report.line("HOOKS", _hook_imports())
    sdir = state_dir()
    try:
        Journal(sdir).ensure_dir()
        report.line("HOOKS", CheckResult(f"state directory {sdir}", "PASS"))
    except HookError as exc:
        report.line("HOOKS", CheckResult(f"state directory {sdir}", "FAIL", exc.one_line()))
    report.line("HOOKS", _agent_check(sdir))
    link = _hook_link(args.hooks_dir)
    entry = entry_path()
    if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(entry):
        report.line("HOOKS", CheckResult(f"hook enabled ({link})", "PASS"))
    else:
        report.line("HOOKS", CheckResult(f"hook enabled ({link})", "WARN", "run 'vdp-hooks enable'"))
    confinement = apparmor_problem()
    report.line(
        "HOOKS",
        CheckResult("AppArmor lets libvirt run the hook", "FAIL" if confinement else "PASS", confinement or ""),
    )
    report.line("HOOKS", selinux_check(_daemon()[0]))
    emergency = read_emergency(sdir)
    if emergency is not None:
        left = int(emergency.until - time.time())
        report.line(
            "HOOKS", CheckResult("emergency override", "WARN", f"active for {left} s more: nothing is required")
        )
    for feature in features:
        try:
            results = feature.check()
        except HookError as exc:
            results = [CheckResult(feature.describe(), "FAIL", exc.one_line())]
        for result in results:
            report.line(feature.name.upper(), result)
    return EXIT_FAIL if report.failed else EXIT_OK


# ----------------------------------------------------------------------------------------------- status
def _agent_status(sdir: str) -> dict[str, Any]:
    from hooks.agentfile import agent_info

    doc, why = agent_info(sdir)
    return {"running": doc is not None, "state": why, **(doc or {})}


def cmd_status(args: argparse.Namespace) -> int:
    from hooks.agentfile import status_lines

    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"vdp-hooks: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONFIG
    store = Journal(state_dir())
    guests: list[dict[str, Any]] = []
    drift = False
    for guest_uuid in store.guests():
        try:
            journal = store.peek(guest_uuid)
        except HookError as exc:
            guests.append({"uuid": str(guest_uuid), "error": exc.one_line()})
            continue
        if journal is None:
            continue
        records = []
        by_feature: dict[str, list[Any]] = {}
        for record in journal.records:
            by_feature.setdefault(record.feature, []).append(record)
        for name, recs in by_feature.items():
            try:
                live = _instances(config, [name])[0].live_state(recs)
            except HookError as exc:
                live = {r.key: f"unknown ({exc.one_line()})" for r in recs}
            for record in recs:
                entry = {
                    "feature": record.feature,
                    "port": record.key,
                    "kind": record.kind,
                    "state": record.state,
                    "data": record.data,
                    "error": record.error,
                    "live": live.get(record.key, ""),
                }
                entry["drift"] = bool(entry["live"]) and not str(entry["live"]).startswith(("ok", "unknown"))
                drift = drift or entry["drift"]
                records.append(entry)
        guests.append(
            {"guest": journal.guest, "uuid": str(guest_uuid), "incoming": journal.incoming, "records": records}
        )
    emergency = read_emergency(store.state_dir)
    agent = _agent_status(store.state_dir)
    doc = {
        "state_dir": store.state_dir,
        "emergency": {"until": emergency.until, "reason": emergency.reason} if emergency else None,
        "guests": guests,
        "drift": drift,
        "agent": agent,
    }
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"agent: {agent['state']}")
        print("".join(f"{line}\n" for line in status_lines(agent)), end="")
        if emergency:
            print(f"EMERGENCY override until {time.ctime(emergency.until)}: {emergency.reason}")
        if not guests:
            print(f"no guest has anything set up by the hooks ({store.state_dir})")
        for g in guests:
            print(f"{g.get('guest', '?')} {g['uuid']}{' (incoming migration)' if g.get('incoming') else ''}")
            if "error" in g:
                print(f"  ERROR {g['error']}")
            for r in g.get("records", []):
                summary = ", ".join(
                    f"{k}={v}" for k, v in sorted(r["data"].items()) if k in ("uplink", "vlan", "request")
                )
                flag = "  DRIFT" if r["drift"] else ""
                live_text = f" live: {r['live']}" if r["live"] else ""
                err = f" error: {r['error']}" if r["error"] else ""
                head = f"  {r['feature']:<6} {r['port']:<18} {r['kind']:<14} {r['state']:<8}"
                print(f"{head} {summary}{live_text}{err}{flag}")
    return EXIT_FAIL if drift else EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    from hooks import agent

    if args.config:
        os.environ["VDP_HOOKS_CONFIG"] = args.config
    return agent.main()


# ----------------------------------------------------------------------------------------------- enable / disable
def _hook_link(hooks_dir: str) -> str:
    return os.path.join(hooks_dir, "qemu.d", HOOK_NAME)


#: In the hooks directory: the directories that ``enable`` created, one absolute path a line, so that the
#: package's purge (DEB postrm, RPM %postun) removes them when empty and leaves the ones that were there.
CREATED_RECORD = ".vdp-hooks-created"


def _make_dirs(hooks_dir: str, target: str) -> None:
    """Create target (hooks_dir or below it) and its missing parents, noting each one created."""
    missing = []
    path = os.path.abspath(target)
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for path in reversed(missing):
        os.mkdir(path, 0o755)
    hooks_dir = os.path.abspath(hooks_dir)
    ours = [p for p in reversed(missing) if p == hooks_dir or p.startswith(hooks_dir + os.sep)]
    if ours:
        with open(os.path.join(hooks_dir, CREATED_RECORD), "a", encoding="utf-8") as fh:
            fh.write("".join(p + "\n" for p in ours))


def cmd_enable(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
        _instances(config, config.features)
    except ConfigError as exc:
        print(f"vdp-hooks: not enabled, the config is broken: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONFIG
    entry = entry_path()
    if not os.access(entry, os.X_OK):
        print(f"vdp-hooks: not enabled: the hook entry {entry} is missing or not executable", file=sys.stderr)
        return EXIT_FAIL
    confinement = apparmor_problem()
    if confinement:
        print(f"vdp-hooks: not enabled: {confinement}", file=sys.stderr)
        return EXIT_FAIL
    link = _hook_link(args.hooks_dir) if _libvirt_has_qemu_d() else os.path.join(args.hooks_dir, "qemu")
    if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(entry):
        print(f"already enabled: {link} -> {entry}")
        return _agent_unit(True)
    if os.path.lexists(link):
        print(f"vdp-hooks: not enabled: {link} exists and is not ours; move it aside or merge by hand", file=sys.stderr)
        return EXIT_FAIL
    _make_dirs(args.hooks_dir, os.path.dirname(link))
    os.symlink(entry, link)
    daemon, pid = _daemon()
    print(f"enabled: {link} -> {entry}")
    hint = _reload_hint(daemon, pid)
    print(f"libvirt finds new hooks when it starts or reloads: {hint} (running guests are not affected)")
    return _agent_unit(True)


def _agent_unit(enable: bool) -> int:
    from hooks.agentfile import manage_unit

    ok, what = manage_unit(enable)
    print(what, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAIL


def cmd_disable(args: argparse.Namespace) -> int:
    entry = entry_path()
    removed = False
    for link in (_hook_link(args.hooks_dir), os.path.join(args.hooks_dir, "qemu")):
        if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(entry):
            os.unlink(link)
            print(f"disabled: removed {link}")
            removed = True
    if not removed:
        print("not enabled: nothing to remove")
    print("associations of running guests stay as they are; 'vdp-hooks status' lists them")
    return _agent_unit(False)


# ----------------------------------------------------------------------------------------------- emergency
def cmd_emergency(args: argparse.Namespace) -> int:
    sdir = state_dir()
    if args.off:
        print("emergency override cleared" if clear_emergency(sdir) else "no emergency override was set")
        return EXIT_OK
    if args.duration:
        try:
            seconds = parse_seconds(args.duration)
        except ValueError as exc:
            print(f"vdp-hooks: --for {exc}", file=sys.stderr)
            return EXIT_USAGE
        found = set_emergency(sdir, seconds, args.reason or "evacuation")
        print(
            f"emergency override until {time.ctime(found.until)}: no feature is required on this host; "
            "guests start and migrate in even when their ports cannot be set up (warnings are logged)"
        )
        return EXIT_OK
    current = read_emergency(sdir)
    print(
        f"emergency override active until {time.ctime(current.until)}: {current.reason}"
        if current
        else "no emergency override"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------------- replay
def cmd_replay(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        print(f"vdp-hooks: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    name = args.name or _guest_name(raw) or "guest"
    argv = [name, args.op, args.subop, args.extra]
    if args.dry_run:
        return _dry_run(args, argv, raw)
    proc = subprocess.run([sys.executable, entry_path(), *argv], input=raw, capture_output=True, check=False)
    print(f"{' '.join(argv)}: exit {proc.returncode}")
    if proc.stderr:
        print(proc.stderr.decode(errors="replace").rstrip())
    return EXIT_OK if proc.returncode == 0 else EXIT_FAIL


def _guest_name(raw: bytes) -> str | None:
    match = re.search(rb"<name>([^<]{1,200})</name>", raw)
    return match.group(1).decode(errors="replace").strip() if match else None


def _dry_run(args: argparse.Namespace, argv: list[str], raw: bytes) -> int:
    from hooks.event import PORT_FEATURE, parse_event
    from hooks.policy import Policy

    try:
        config = _load(args)
        wanting = [f for f in _instances(config, config.features) if f.wants(raw)]
        event = parse_event(argv, raw)
    except XmlError as exc:
        # As the hook: unusable XML vetoes only a guest that an enabled feature wants.
        if not wanting:
            print(f"would proceed: {exc.one_line()}; ignored: nothing in this guest is for libvirt-vdp-hooks")
            return EXIT_OK
        print(f"would veto: {exc.one_line()}")
        return EXIT_FAIL
    except HookError as exc:
        print(f"would veto: {exc.one_line()}")
        return EXIT_FAIL
    policy = Policy(config, event, read_emergency(state_dir()))
    print(f"guest {event.guest} {event.uuid}: {event.op} {event.subop}")
    print(f"features that want this guest: {', '.join(f.name for f in wanting) or 'none (fast path: exit 0)'}")
    declared = {p.key for p in event.ports}
    for feature in wanting:
        acts = event.hook in feature.handles
        print(f"  {feature.name}: {'acts on' if acts else 'ignores'} {event.op} {event.subop}")
        if acts:
            for key in feature.targets(event):
                if key not in declared:  # libvirt's own port profiles: checked before, never set up by us
                    print(f"  port {key}: managed by libvirt; {feature.name} preflights it")
    for port in event.ports:
        owner = PORT_FEATURE.get(port.kind, "vdp")
        required = "required" if policy.required(owner, port) else "not required"
        if port.error:
            state = f"INVALID: {port.error}"
        else:
            vlan = port.vlan or "switch-assigned"
            state = f"{port.kind} uplink {port.uplink} -> {config.uplink(port.uplink or '')} vlan {vlan}"
        print(f"  port {port.key}: {state}; {required} ({policy.source(owner, port)})")
    for warning in event.warnings:
        print(f"  warning: {warning}")
    # The hook's own decision on the declaration (a feature the guest requires but the host lacks, a
    # broken required port): the same function, so the two cannot drift apart.
    veto = declaration_veto(event, config, policy) if event.hook in BEGIN_OPS else None
    if veto is not None:
        print(f"would veto: {veto.line()}")
        return EXIT_FAIL
    return EXIT_OK


# ----------------------------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vdp-hooks",
        description="Manage libvirt-vdp-hooks on this host: 802.1Qbg/802.1Qbh port profiles for guests, "
        "with a veto on starts and incoming migrations whose required ports cannot be set up.",
        epilog="Exit codes: 0 ok, 1 failed/refused (check: a FAIL), 2 usage, 3 broken config. "
        f"Config: {CONFIG_PATH} (VDP_HOOKS_CONFIG overrides). See vdp-hooks(8).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="config file to use instead of the default")
    parser.add_argument(
        "--hooks-dir", default="/etc/libvirt/hooks", help="libvirt's hooks directory (default %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("check", help="check this host: config, state directory, hook, lldpad, uplinks")
    p.add_argument("-q", "--quiet", action="store_true", help="print only what did not pass")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("status", help="what is set up for which guest, next to what lldpad/the kernel says")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("enable", help=f"link the hook into HOOKS_DIR/qemu.d/{HOOK_NAME}; says which reload is needed")
    p.set_defaults(func=cmd_enable)
    p = sub.add_parser("disable", help="remove our hook link (running guests and their ports are untouched)")
    p.set_defaults(func=cmd_disable)
    p = sub.add_parser("emergency", help="host-wide evacuation override: nothing is required until it expires")
    p.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 30m, 1h")
    p.add_argument("--reason", help="logged with every warning while the override is active")
    p.add_argument("--off", action="store_true", help="end the override now")
    p.set_defaults(func=cmd_emergency)
    p = sub.add_parser("agent", help="run the agent in the foreground (systemd: libvirt-vdp-hooks-agent.service)")
    p.set_defaults(func=cmd_agent)
    p = sub.add_parser("replay", help="run the hook on a saved domain XML exactly as libvirt would")
    p.add_argument("file", help="domain XML (virsh dumpxml GUEST > FILE)")
    p.add_argument("op", help="operation, e.g. prepare, release, migrate")
    p.add_argument("subop", help="sub-operation, e.g. begin, end")
    p.add_argument(
        "extra",
        nargs="?",
        default="-",
        help="libvirt's last argument: '-' (the default, as libvirt < 10.5 passes it) or the shutoff reason "
        "libvirt >= 10.5 passes to release end, e.g. migrated, destroyed, shutdown",
    )
    p.add_argument("--name", help="guest name (default: <name> from the XML)")
    p.add_argument(
        "--dry-run", action="store_true", help="show what would be done and what is required; change nothing"
    )
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HookError as exc:
        print(f"vdp-hooks: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
