"""One hook invocation past the entry's fast path: config, event, journal, features, verdict.

Returns the exit code and writes at most one line to ``stderr`` (the veto reason libvirt shows).  For the
operations after which libvirt would kill or abandon a running guest (``reconnect begin``, ``stopped end``,
``release end``) every failure is logged and the result is 0.

Unusable state never means "do nothing" for those operations: a broken config counts line by line (bad
lines take the built-in defaults, good ``[uplinks]`` lines still map), and the journal is opened leniently
(a malformed file is quarantined, a read-only or full state directory only costs the journaling, which is
logged), so ``release end`` still tears down every port the XML declares.  A begin operation that finds a
malformed journal vetoes once, saying where the file went; the retry starts from a fresh journal.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid

from hooks import STATE_DIR_DEFAULT
from hooks.config import Config, load_config
from hooks.deadline import Deadline
from hooks.errors import ConfigError, HookError, JournalError, XmlError
from hooks.event import Event, parse_event
from hooks.feature import instances, is_known_feature
from hooks.journal import GuestJournal, Journal
from hooks.log import EventLog, setup_logging
from hooks.ops import BEGIN, RELEASE, VERIFY, Op, op_for
from hooks.plan import Plan, Veto, make_plan, unusable_xml
from hooks.policy import Policy, read_emergency
from hooks.transaction import release, release_reason, run_setup, run_verify

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing import IO

__all__ = ["run", "state_dir"]

_UUID_RE = re.compile(rb"<uuid>\s*([0-9a-fA-F-]{32,36})\s*</uuid>")


def state_dir() -> str:
    """Fixed in production (the fast path and the packages rely on it); tests and labs may override."""
    return os.environ.get("VDP_HOOKS_STATE_DIR") or STATE_DIR_DEFAULT


def _log_plan(plan: Plan, elog: EventLog) -> None:
    """What the plan leaves out, for the admin: warnings, and each broken port (not required, or we vetoed)."""
    for text in plan.event.warnings:
        elog.warning("%s", text, outcome="warning")
    for port, decision in plan.ignored:
        elog.warning(
            "%s; port ignored (not required: %s)", port.error, decision.source, port=port.key, outcome="warning"
        )


def _fallback_uuid(raw: bytes) -> uuid.UUID | None:
    match = _UUID_RE.search(raw)
    try:
        return uuid.UUID(match.group(1).decode()) if match else None
    except ValueError:
        return None


def run(argv: list[str], raw: bytes, *, stderr: IO[str] = sys.stderr, started: float | None = None) -> int:
    """The hook's decision for ``argv`` (NAME OP SUBOP EXTRA) and the domain XML ``raw``.

    ``started``: ``time.monotonic()`` when the process started (the entry takes it first thing): the
    invocation deadline counts from there, so imports and reading stdin are inside it.
    """
    started = time.monotonic() if started is None else started
    hook = (argv[1], argv[2]) if len(argv) >= 3 else ("", "")
    op = op_for(hook)
    never_fail = op.never_fail
    config_problems: list[ConfigError] = []
    try:
        # Operations that must not fail take what is usable in a broken file (bad lines -> defaults).
        lenient = config_problems if never_fail else None
        config: Config | None = load_config(known_features=is_known_feature, errors=lenient)
    except ConfigError as exc:
        config = None
        config_error: ConfigError | None = exc
    else:
        config_error = None
    base = config or Config()
    try:
        sink = setup_logging(syslog=base.syslog, log_file=base.log_file, debug=base.debug)
    except OSError:  # an unwritable log file must not become a veto
        sink = setup_logging(syslog=base.syslog, log_file="", debug=base.debug)
    guest = argv[0] if argv else "?"
    elog = EventLog(sink, guest=guest, uuid=str(_fallback_uuid(raw) or "-"), op=" ".join(hook))
    for problem in config_problems:
        elog.error("%s; going on with the built-in default there", problem.one_line(), outcome="error")
    try:
        if config is None:
            assert config_error is not None
            raise config_error
        return _run(argv, raw, op, config, elog, stderr, started)
    except HookError as exc:
        if not op.may_veto:
            elog.error("%s (ignored: this operation must not fail)", exc.one_line(), outcome="error")
            if op.phase == RELEASE and config is not None:
                _release_by_uuid(raw, config, elog, started)
            return 0
        elog.error("%s", exc.one_line(), outcome="veto")
        print(Veto(guest, exc.one_line()).line(), file=stderr)
        return 1
    except Exception as exc:
        elog.exception("unexpected error: %s", exc, outcome="error")
        if not op.may_veto:
            if op.phase == RELEASE and config is not None:
                _release_by_uuid(raw, config, elog, started)
            return 0
        cause = f"internal error {type(exc).__name__}: {exc} -- see the hook's log (syslog) and report it"
        print(Veto(guest, cause).line(), file=stderr)
        return 1


def _release_by_uuid(raw: bytes, config: Config, elog: EventLog, started: float) -> None:
    """``release end`` that failed before teardown (unparsable XML, ...): still tear down what the journal
    holds for this UUID."""
    guest_uuid = _fallback_uuid(raw)
    if guest_uuid is None:
        return
    event = Event(guest="?", uuid=guest_uuid, op="release", subop="end", extra="-", raw=raw)
    deadline = Deadline(0, at=started + config.invocation_timeout)
    try:
        with Journal(state_dir()).open(guest_uuid, "?", timeout=deadline.remaining(), lenient=True) as gj:
            _report_opened(gj, elog)
            names = tuple(sorted({r.feature for r in gj.records}))
            features = [f for f in instances(config, raw, names, elog) if f.name in names]
            release(event, features, config=config, journal=gj, log=elog, deadline=deadline)
            _report_unsaved(gj, elog)
    except Exception as exc:  # the last resort of an operation that must not fail
        text = exc.one_line() if isinstance(exc, HookError) else f"{type(exc).__name__}: {exc}"
        elog.error("release from journal failed: %s", text, outcome="pending")


def _report_opened(gj: GuestJournal, elog: EventLog) -> None:
    """Say what a lenient open had to give up (never-fail operations go on regardless)."""
    if gj.quarantined:
        elog.error("%s; going on without it (teardown from the XML)", gj.quarantined, outcome="error")
    if not gj.locked:
        elog.warning("state directory %s: no lock file could be created; going on unlocked", os.path.dirname(gj.path))


def _report_unsaved(gj: GuestJournal, elog: EventLog) -> None:
    """What the journal file could not be told: each record left, logged whole for the admin or agent."""
    if not gj.unsaved:
        return
    elog.error(
        "could not journal (%s): %d record(s) are held only in this log", gj.unsaved, len(gj.records), outcome="pending"
    )
    for r in gj.records:
        elog.error(
            "not journaled: record %s %s %s (%s%s) %s",
            r.id,
            r.kind,
            r.key,
            r.state,
            f": {r.error}" if r.error else "",
            json.dumps(r.data, sort_keys=True),
            feature=r.feature,
            port=r.key,
            outcome="pending",
        )


def _run(argv: list[str], raw: bytes, op: Op, config: Config, elog: EventLog, stderr: IO[str], started: float) -> int:
    # One deadline for the whole invocation, from process start: imports, stdin and the lock wait count too.
    deadline = Deadline(0, at=started + config.invocation_timeout)
    try:
        event = parse_event(argv, raw)
    except XmlError as exc:
        if op.phase == BEGIN and unusable_xml(op, argv[0] if argv else "?", exc, instances(config, raw)) is None:
            elog.warning("%s; ignored: nothing in this guest is for libvirt-vdp-hooks", exc.one_line(), outcome="ok")
            return 0
        raise  # a veto, or logged and ignored by an operation that must not fail
    elog = EventLog(elog.sink, guest=event.guest, uuid=str(event.uuid), op=" ".join(op.hook))
    store = Journal(state_dir())
    policy = Policy(config, event, read_emergency(store.state_dir))
    if policy.emergency is not None:
        elog.warning("emergency override active (%s): nothing is required on this host", policy.emergency.reason)

    plan = make_plan(event, config, policy)
    refused = plan.veto
    if refused is not None:
        elog.error("%s", refused.cause, feature=refused.feature or "-", port=refused.port or "-", outcome="veto")
        print(refused.line(), file=stderr)
        return 1
    event = plan.event

    if op.phase == BEGIN:
        _log_plan(plan, elog)
        features = plan.acting(instances(config, raw))
        with store.open(event.uuid, event.guest, timeout=deadline.remaining()) as gj:
            if gj.quarantined:
                _malformed_at_begin(gj, elog, policy)
            incoming = store.arrive(gj, op.marker, config.marker_ttl)
            veto = run_setup(
                event,
                features,
                config=config,
                policy=policy,
                journal=gj,
                incoming=incoming,
                log=elog,
                deadline=deadline,
            )
        if veto is not None:
            print(veto.line(), file=stderr)
            return 1
        store.proceeded(event.uuid, op.marker)
        elog.info("proceed", outcome="ok")
        return 0

    if op.phase == VERIFY:
        _log_plan(plan, elog)
        with store.open(event.uuid, event.guest, timeout=deadline.remaining(), lenient=True) as gj:
            _report_opened(gj, elog)
            features = plan.acting(instances(config, raw, log=elog))
            run_verify(event, features, config=config, journal=gj, log=elog, deadline=deadline)
        return 0

    if op.phase == RELEASE:
        _log_plan(plan, elog)
        with store.open(event.uuid, event.guest, timeout=deadline.remaining(), lenient=True) as gj:
            _report_opened(gj, elog)
            leftover = tuple(sorted({r.feature for r in gj.records}))
            features = plan.acting(instances(config, raw, leftover, elog))
            problems = release(event, features, config=config, journal=gj, log=elog, deadline=deadline)
            _report_unsaved(gj, elog)
        elog.info(
            "released (libvirt's reason: %s)%s",
            release_reason(event.extra),
            f" with {len(problems)} problem(s) left pending" if problems else "",
            outcome="pending" if problems else "ok",
        )
        return 0
    return 0  # stopped end and every operation we have nothing to do for


def _malformed_at_begin(gj: GuestJournal, elog: EventLog, policy: Policy) -> None:
    """A begin operation found the guest's journal unusable (and it is moved aside by now).

    It vetoes once: the file may have listed associations that are still held at the switch (pending
    teardowns, ports since removed from the XML), and nothing else would ever tell the admin; a start
    that fails with the file's new name is noticed, a syslog line is not.  The veto costs nothing on the
    guest's side (it never ran), and the retry proceeds with a fresh journal -- so no guest is locked
    out.  Under an emergency override the guest comes first: a warning only.
    """
    if policy.emergency is not None:
        elog.warning("%s; proceeding (emergency override)", gj.quarantined, outcome="warning")
        return
    raise JournalError(
        f"{gj.quarantined}; it may have listed associations still held at the switch",
        hint="see 'vdp-hooks status' and the moved file; starting the guest again proceeds with a fresh journal",
    )


def main(argv: list[str] | None = None, raw: bytes | None = None) -> int:
    """For ``python -m hooks.runner NAME OP SUBOP EXTRA < xml`` (the entry script is the real front door)."""
    args = sys.argv[1:] if argv is None else argv
    data = sys.stdin.buffer.read() if raw is None else raw
    return run(args, data)


if __name__ == "__main__":
    raise SystemExit(main())
