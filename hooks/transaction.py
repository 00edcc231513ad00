"""Setup with rollback, and teardown: the part that decides veto or proceed.

Setup runs the enabled features in config order.  Each reports one Outcome per port; a failed port that
is required stops the run, and everything this invocation journaled is torn down in reverse (last
feature first, last record first), partial states included, inside the invocation deadline.  A failed port
that is not required costs a warning and its own partial state; the guest proceeds.

Teardown (``release end``, and rollback) takes records to the feature that made them.  What cannot be torn
down in time stays journaled as ``pending`` and the next teardown retries it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from hooks.config import Config
from hooks.deadline import Deadline
from hooks.errors import DeadlineExceeded, FeatureError, HookError
from hooks.event import Event, PortSpec
from hooks.feature import Context, Feature, Outcome
from hooks.journal import GuestJournal, Record
from hooks.log import INFO, WARNING, EventLog
from hooks.plain import field, plain, replace
from hooks.plan import Veto
from hooks.policy import Decision, Policy

__all__ = ["RELEASE_REASONS", "release", "release_reason", "run_setup", "run_teardown", "run_verify"]

#: What libvirt >= 10.5 passes as the last argument of ``release end`` (the domain's shutoff reason,
#: virDomainShutoffReason as a string; docs/hooks.rst): why the guest is gone from this host.  Before 10.5
#: it passed ``-``.  Teardown is the same for every reason (what this host set up goes); the reason is
#: logged and tells a feature what else it may know (``migrated``: the guest runs on another host now).
RELEASE_REASONS = frozenset(
    {"unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot", "daemon"}
)


def release_reason(extra: str) -> str:
    """libvirt's shutoff reason from ``release end``'s last argument: one of RELEASE_REASONS, ``-`` when
    libvirt gave none (< 10.5), ``unknown`` for anything a later libvirt may add."""
    reason = " ".join(extra.split()).lower()
    if reason in ("", "-"):
        return "-"
    return reason if reason in RELEASE_REASONS else "unknown"


@plain
class _Run:
    event: Event
    config: Config
    journal: GuestJournal
    log: EventLog
    incoming: bool = False
    contexts: list[tuple[Feature, Context]] = field(default_factory=list)

    def context(self, feature: Feature, deadline: Deadline, event: Event | None = None) -> Context:
        ctx = Context(
            feature=feature.name,
            event=event or self.event,
            config=self.config,
            settings=feature.settings,
            deadline=deadline,
            journal=self.journal,
            incoming=self.incoming,
            log=self.log.bind(feature.name),
        )
        self.contexts.append((feature, ctx))
        return ctx

    def with_deadline(self, ctx: Context, deadline: Deadline) -> Context:
        """The same context (same records) with another deadline, for what comes after setup; it replaces
        ``ctx`` for the rollback too."""
        later = replace(ctx, deadline=deadline)
        self.contexts = [(f, later if c is ctx else c) for f, c in self.contexts]
        return later


def _port(event: Event, key: str | None) -> PortSpec | None:
    return next((p for p in event.ports if p.key == key), None) if key else None


def _guarded(
    call: str, feature: Feature, log: EventLog, fn: Callable[..., Iterable[Outcome]], *args: object
) -> list[Outcome]:
    """Run a feature method; every exception becomes one admin-facing Outcome (traceback to the log)."""
    try:
        return list(fn(*args))
    except HookError as exc:
        return [Outcome(None, exc)]
    except Exception as exc:
        log.exception("%s of feature %s crashed", call, feature.name, feature=feature.name)
        return [
            Outcome(
                None,
                FeatureError(
                    f"internal error in {call}: {type(exc).__name__}: {exc}",
                    hint="see the hook's log; please report it",
                ),
            )
        ]


def _decision(policy: Policy, feature: Feature, event: Event, key: str | None) -> Decision:
    if key is None:  # a failure of the feature as a whole concerns every port it serves
        ports = [p for p in (_port(event, k) for k in feature.targets(event)) if p is not None]
        return policy.decide_all(feature.name, ports)
    return policy.decide(feature.name, _port(event, key))


def run_teardown(
    pairs: Sequence[tuple[Feature, Sequence[Record]]],
    journal: GuestJournal,
    contexts: dict[str, Context],
    log: EventLog,
) -> list[str]:
    """Tear down each feature's records (in the order given); returns the problems, journaled as pending."""
    problems = []
    for feature, records in pairs:
        if not records:
            continue
        ctx = contexts[feature.name]
        if ctx.deadline.expired():
            journal.mark_pending(records, {r.id: "invocation deadline reached before teardown" for r in records})
            problems.append(f"{feature.name}: {len(records)} record(s) left pending (deadline)")
            continue
        outcomes = _guarded("teardown", feature, log, feature.teardown, records, ctx)
        by_key = {o.key: o for o in outcomes}
        whole = by_key.get(None)
        gone, failed, errors = [], [], {}
        for record in records:
            outcome = by_key.get(record.key, whole)
            if outcome is not None and outcome.ok:
                gone.append(record)
                log.info(
                    "torn down %s%s",
                    record.kind,
                    f": {outcome.note}" if outcome.note else "",
                    feature=feature.name,
                    port=record.key,
                    outcome="ok",
                )
            else:
                cause = outcome.error.one_line() if outcome and outcome.error else "no outcome reported"
                failed.append(record)
                errors[record.id] = cause
                problems.append(f"{feature.name} {record.key}: {cause}")
                log.error(
                    "teardown of %s failed, kept as pending: %s",
                    record.kind,
                    cause,
                    feature=feature.name,
                    port=record.key,
                    outcome="pending",
                )
        # Records that were only synthesised from the XML (id 0) were never in the journal.
        journal.remove([r for r in gone if r.id])
        journal.mark_pending([r for r in failed if r.id], errors)
    return problems


def _rollback(run: _Run, log: EventLog) -> list[str]:
    pairs = []
    contexts = {}
    for feature, ctx in reversed(run.contexts):
        live = {r.id for r in run.journal.records}
        pairs.append((feature, [r for r in reversed(ctx.created) if r.id in live]))
        contexts[feature.name] = ctx
    return run_teardown(pairs, run.journal, contexts, log)


def run_setup(
    event: Event,
    features: Sequence[Feature],
    *,
    config: Config,
    policy: Policy,
    journal: GuestJournal,
    incoming: bool,
    log: EventLog,
    deadline: Deadline | None = None,
) -> Veto | None:
    """Set up ``features`` (those that act on this ``begin`` operation, hooks/plan.py: Plan.acting); on a
    required failure roll back and return the Veto.

    ``deadline`` is the invocation's (started before waiting for the guest lock); default: from now.
    """
    deadline = deadline or Deadline(config.invocation_timeout)
    # Keep one exchange's worth of time for the rollback; what still does not fit is left pending.
    setup_deadline = deadline.minus(config.exchange_timeout)
    run = _Run(event, config, journal, log, incoming)
    veto: Veto | None = None
    dropped: set[str] = set()  # ports that failed, not required: later features leave them alone
    for feature in features:
        view = replace(event, ports=tuple(p for p in event.ports if p.key not in dropped))
        ctx = run.context(feature, setup_deadline, view)
        if setup_deadline.expired():
            outcomes = [
                Outcome(None, DeadlineExceeded(f"invocation deadline of {config.invocation_timeout:g} s reached"))
            ]
        else:
            outcomes = _guarded("setup", feature, log, feature.setup, view, ctx)
        ctx = run.with_deadline(ctx, deadline)  # rollback may use the reserve
        for outcome in outcomes:
            if outcome.ok:
                log.info("%s", outcome.note or "ok", feature=feature.name, port=outcome.key or "-", outcome="ok")
                continue
            assert outcome.error is not None
            decision = _decision(policy, feature, event, outcome.key)
            cause = outcome.error.one_line()
            if decision.required:
                log.error("%s", cause, feature=feature.name, port=outcome.key or "-", outcome="veto")
                veto = veto or Veto(event.guest, cause, feature.name, outcome.key, decision.source)
            else:
                log.warning(
                    "%s; not required (%s), proceeding without it",
                    cause,
                    decision.source,
                    feature=feature.name,
                    port=outcome.key or "-",
                    outcome="warning",
                )
                if outcome.key is not None:
                    dropped.add(outcome.key)
                # A half-done optional port helps nobody: undo just that port's state now.
                mine = [r for r in ctx.created if outcome.key in (None, r.key) and r in journal.records]
                run_teardown([(feature, list(reversed(mine)))], journal, {feature.name: ctx}, log)
        if veto is not None:
            break
    if veto is not None:
        problems = _rollback(run, log)
        if problems:
            log.error("rollback incomplete: %s", "; ".join(problems), outcome="pending")
    return veto


def run_verify(
    event: Event,
    features: Sequence[Feature],
    *,
    config: Config,
    journal: GuestJournal,
    log: EventLog,
    deadline: Deadline | None = None,
) -> None:
    """``reconnect begin``: let ``features`` (those that act on it, Plan.acting) re-check and repair;
    failures are logged, never returned."""
    deadline = deadline or Deadline(config.invocation_timeout)
    run = _Run(event, config, journal, log)
    for feature in features:
        for outcome in _guarded("setup", feature, log, feature.setup, event, run.context(feature, deadline)):
            level = INFO if outcome.ok else WARNING
            text = outcome.error.one_line() if outcome.error is not None else outcome.note or "ok"
            log.log(
                level,
                "%s",
                text,
                feature=feature.name,
                port=outcome.key or "-",
                outcome="ok" if outcome.ok else "warning",
            )


def release(
    event: Event,
    features: Sequence[Feature],
    *,
    config: Config,
    journal: GuestJournal,
    log: EventLog,
    deadline: Deadline | None = None,
) -> list[str]:
    """``release end``: tear down what the journal holds plus what the XML declares, last feature first."""
    deadline = deadline or Deadline(config.invocation_timeout)
    run = _Run(event, config, journal, log)
    pairs = []
    contexts = {}
    for feature in reversed(features):
        ctx = run.context(feature, deadline)
        contexts[feature.name] = ctx
        records = [r for r in journal.records if r.feature == feature.name]
        have = {r.key for r in records}
        for key, kind, data in feature.declared(event):
            if key not in have:
                records.append(Record(0, feature.name, key, kind, dict(data), op="declared"))
        pairs.append((feature, list(reversed(records))))
    problems = run_teardown(pairs, journal, contexts, log)
    journal.set_incoming(False)
    return problems
