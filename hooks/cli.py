"""``vdp-hooks``: the admin's command.  Exit codes: 0 ok, 1 a check failed or the action was refused,
2 usage error, 3 the host config is broken.

Just over 400 lines: argparse and one short function per sub-command; the work they call lives elsewhere
(hooks.hostcheck, hooks.statusview, hooks.plan, hooks.agent).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence

from hooks import __version__, statusview
from hooks.config import CONFIG_PATH, Config, load_config, parse_seconds
from hooks.errors import ConfigError, HookError, XmlError
from hooks.feature import CheckResult, Feature, feature_class, is_known_feature
from hooks.hostcheck import (
    Report,
    apparmor_check,
    apparmor_problem,
    hook_imports,
    hook_link_check,
    selinux_check,
    state_dir_check,
)
from hooks.hostcheck import daemon as _daemon
from hooks.journal import Journal
from hooks.policy import clear_emergency, read_emergency, set_emergency
from hooks.runner import state_dir

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
# Any: the agent's status is a JSON document.
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
    """Each line is printed before its probe runs (hooks/hostcheck.py); the features' own checks last."""
    report = Report(args.quiet)
    loaded: list[Feature] = []

    def config_check() -> CheckResult:
        config = _load(args)
        loaded.extend(_instances(config, config.features))
        return CheckResult(f"config {config.path or CONFIG_PATH + ' (absent: defaults)'}", "PASS")

    path = args.config or os.environ.get("VDP_HOOKS_CONFIG") or CONFIG_PATH
    try:
        report.check("HOOKS", f"config {path}", config_check)
    except ConfigError as exc:
        report.line("HOOKS", CheckResult("config is valid", "FAIL", exc.one_line()))
        return EXIT_CONFIG
    report.check("HOOKS", "the hook's modules import (lxml, pyroute2)", hook_imports)
    sdir = state_dir()
    report.check("HOOKS", f"state directory {sdir}", lambda: state_dir_check(sdir))
    report.line("HOOKS", _agent_check(sdir))
    link = _hook_link(args.hooks_dir)
    report.check("HOOKS", f"hook enabled ({link})", lambda: hook_link_check(link, entry_path()))
    report.check("HOOKS", "AppArmor lets libvirt run the hook", apparmor_check)
    report.check("HOOKS", "SELinux lets the daemon run the hook", lambda: selinux_check(_daemon()[0]))
    emergency = read_emergency(sdir)
    if emergency is not None:
        left = int(emergency.until - time.time())
        report.line(
            "HOOKS", CheckResult("emergency override", "WARN", f"active for {left} s more: nothing is required")
        )
    for feature in loaded:
        try:
            report.items(feature.name.upper(), feature.check())
        except HookError as exc:
            report.line(feature.name.upper(), CheckResult(feature.describe(), "FAIL", exc.one_line()))
    return EXIT_FAIL if report.failed else EXIT_OK


# ----------------------------------------------------------------------------------------------- status
def _agent_status(sdir: str) -> dict[str, Any]:
    from hooks.agentfile import agent_info

    doc, why = agent_info(sdir)
    return {"running": doc is not None, "state": why, **(doc or {})}


def cmd_status(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"vdp-hooks: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONFIG
    store = Journal(state_dir())
    doc = statusview.collect(store, lambda name: _instances(config, [name])[0], _agent_status(store.state_dir))
    print(statusview.to_json(doc) if args.json else statusview.to_text(doc))
    return EXIT_FAIL if doc["drift"] else EXIT_OK


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
    """What the hook would decide, through the hook's own plan (hooks/plan.py), changing nothing."""
    from hooks.event import parse_event
    from hooks.feature import instances
    from hooks.ops import BEGIN, op_for
    from hooks.plan import Veto, make_plan, unusable_xml
    from hooks.policy import Policy

    op = op_for((argv[1], argv[2]))

    def verdict(veto: Veto | None) -> int:
        """The last line: the hook's own veto line, as libvirt would show it."""
        if veto is None:
            return EXIT_OK
        if not op.may_veto:
            print(f"would proceed: {veto.cause}; ignored: this operation must not fail")
            return EXIT_OK
        print(f"would veto: {veto.line()}")
        return EXIT_FAIL

    try:
        config = _load(args)
        try:
            event = parse_event(argv, raw)
        except XmlError as exc:
            if op.phase == BEGIN and unusable_xml(op, argv[0], exc, instances(config, raw)) is None:
                print(f"would proceed: {exc.one_line()}; ignored: nothing in this guest is for libvirt-vdp-hooks")
                return EXIT_OK
            raise
        plan = make_plan(event, config, Policy(config, event, read_emergency(state_dir())))
        try:
            wanting = instances(config, raw)
        except HookError:
            if plan.veto is None:
                raise
            wanting = []  # the hook vetoes on the declaration before it loads the features
    except HookError as exc:
        return verdict(Veto(argv[0], exc.one_line()))
    print(f"guest {event.guest} {event.uuid}: {event.op} {event.subop}")
    print(f"features that want this guest: {', '.join(f.name for f in wanting) or 'none (fast path: exit 0)'}")
    declared = {p.key for p in event.ports}
    acting = plan.acting(wanting)
    for feature in wanting:
        acts = feature in acting
        print(f"  {feature.name}: {'acts on' if acts else 'ignores'} {event.op} {event.subop}")
        if acts:
            for key in feature.targets(event):
                if key not in declared:  # libvirt's own port profiles: checked before, never set up by us
                    print(f"  port {key}: managed by libvirt; {feature.name} preflights it")
    for port, decision in plan.ports:
        required = "required" if decision.required else "not required"
        if port.error:
            state = f"INVALID: {port.error}"
        else:
            vlan = port.vlan or "switch-assigned"
            state = f"{port.kind} uplink {port.uplink} -> {config.uplink(port.uplink or '')} vlan {vlan}"
        print(f"  port {port.key}: {state}; {required} ({decision.source})")
    for warning in event.warnings:
        print(f"  warning: {warning}")
    return verdict(plan.veto)


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
