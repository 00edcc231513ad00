"""The agent's work: what it is to do for which guest, and doing it (split from :mod:`hooks.agent`, which
keeps the daemon: its loop, lldpad's notifications, reconcile and what it tells).

Work is queued per guest (a ``_Job``: why, when next, failures in a row) and done one attempt at a time
under the guest's journal lock, taken without waiting: a hook never queues behind the agent, and a busy
guest is tried again a moment later with no backoff.  Failures back off exponentially
(``[agent] retry_initial`` doubling up to ``retry_max``).

* Records a teardown could not finish (``pending``), and ``intent`` records of a guest not running here,
  are torn down again through the hook's own teardown path (:func:`hooks.transaction.run_teardown`).
* A running guest whose ports lldpad lost is re-associated through the VDP feature's own ``reconnect``
  path (or only reported: ``on_deassoc = report``); a request lldpad still has in progress afterwards
  counts as not done yet.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Mapping, Sequence

from hooks import libvirtsync
from hooks.config import Config, Option, parse_seconds
from hooks.deadline import Deadline
from hooks.domainevents import LIBVIRT_OPTIONS, Listener
from hooks.errors import ConfigError, HookError, JournalError
from hooks.event import Event
from hooks.feature import Context, Feature, feature_class
from hooks.journal import DONE, INTENT, PENDING, GuestJournal, Journal, Record
from hooks.log import EventLog, Sink
from hooks.metrics import AgentMetrics
from hooks.reconcile import running
from hooks.transaction import run_teardown

TYPE_CHECKING = False
# Any: [agent] values are whatever each option's parse returns.
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AGENT_OPTIONS", "Worker", "agent_settings", "backoff", "work_of"]


def _policy(text: str) -> str:
    value = text.strip().lower()
    if value not in ("reassociate", "report"):
        raise ValueError(f"'{text}' is not one of reassociate, report")
    return value


def _count(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not a whole number") from None
    if not 1 <= value <= 64:
        raise ValueError(f"'{text}' is not between 1 and 64")
    return value


def _path(text: str) -> str:
    value = text.strip()
    if value and not os.path.isabs(value):
        raise ValueError(f"'{text}' is not an absolute path")
    return value


#: ``[agent]``: the keys of the agent's section in the host config (documented in vdp-hooks.conf(5)).
AGENT_OPTIONS: Mapping[str, Option] = {
    "on_deassoc": Option(
        _policy,
        "reassociate",
        "a port of a running guest that lldpad lost (switch de-association, lldpad restart): "
        "'reassociate' it, or only 'report' it in the log",
    ),
    "retry_initial": Option(parse_seconds, 0.5, "first wait before retrying failed work; doubles per failure"),
    "retry_max": Option(parse_seconds, 60.0, "longest wait between retries of failed work"),
    "attempt_timeout": Option(
        parse_seconds, 3.0, "longest time one attempt holds a guest's lock (a hook for that guest waits this long)"
    ),
    "workers": Option(_count, 8, "guests the agent works on at once (e.g. after an lldpad restart)"),
    "scan_interval": Option(parse_seconds, 10.0, "seconds between looks at the journals for pending work"),
    "lldpad_check_interval": Option(parse_seconds, 2.0, "seconds between checks whether lldpad restarted"),
    "reconcile_interval": Option(
        parse_seconds,
        60.0,
        "seconds between reconciles of the journals with lldpad's VSI tables (and one at start); the backstop "
        "for a lost port no netlink notice or client-interface event settled",
    ),
    "metrics_file": Option(
        _path,
        "",
        "Prometheus text file the agent rewrites (atomically) after each change, for node_exporter's "
        "textfile collector (e.g. /var/lib/prometheus/node-exporter/vdp-hooks.prom); empty: none",
    ),
    **LIBVIRT_OPTIONS,  # libvirt events (hooks.domainevents)
}

_LOCK_WAIT = 0.02  # the agent never queues behind a hook: it tries the lock this briefly, then comes back
_LOCKED_RETRY = 0.05  # ... this much later (a busy lock is no failure: no backoff)


def agent_settings(config: Config) -> dict[str, Any]:
    """``[agent]`` parsed (defaults for missing keys); errors name file:line."""
    values = {key: opt.default for key, opt in AGENT_OPTIONS.items()}
    for key, (text, line) in config.raw_sections.get("agent", {}).items():
        option = AGENT_OPTIONS.get(key)
        if option is None:
            raise ConfigError(f"{config.where(line)}: [agent] has no key '{key}' (known: {', '.join(AGENT_OPTIONS)})")
        try:
            values[key] = option.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{config.where(line)}: [agent] {key}: {exc}") from None
    return values


def backoff(failures: int, initial: float, cap: float) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...): initial * 2^(n-1), capped."""
    return min(cap, initial * 2 ** min(max(failures - 1, 0), 30))


def work_of(records: Sequence[Record]) -> list[Record]:
    """The records the agent is to tear down: pending ones, and unconfirmed ones of a guest not running."""
    alive = running(records)
    return [r for r in records if r.state == PENDING or (r.state == INTENT and not alive)]


class _Job:
    """Work due for one guest: why, when next, and how often it failed in a row."""

    def __init__(self, guest: str, due: float) -> None:
        self.guest = guest
        self.due = due
        self.reasons: set[str] = set()
        self.failures = 0


class Worker:
    """The agent's queue of work per guest and how one attempt is made; :class:`hooks.agent.Agent` adds the
    daemon around it."""

    def __init__(self, config: Config, sink: Sink, state_dir: str) -> None:
        self.config = config
        self.settings = agent_settings(config)
        self.log = EventLog(sink, op="agent")
        self.store = Journal(state_dir)
        self.jobs: dict[uuid.UUID, _Job] = {}
        self.stopping = False
        self._features: dict[str, Feature] = {}
        self.libvirt: Listener | None = None  # libvirt events (hooks.domainevents, hooks.libvirtsync)
        self.metrics = AgentMetrics()
        self._dirty = True  # agent.json / the metrics file are behind

    # -- work ---------------------------------------------------------------------------------------

    def want(self, guest_uuid: uuid.UUID, guest: str, reason: str, *, delay: float = 0.0, hurry: bool = True) -> None:
        """Queue work for a guest.  ``hurry=False`` (what a periodic look finds): a guest already queued keeps
        its time, so the look does not cut short the backoff of work that is failing."""
        job = self.jobs.get(guest_uuid)
        due = time.monotonic() + delay
        if job is None:
            job = self.jobs[guest_uuid] = _Job(guest, due)
        elif hurry:
            job.due = min(job.due, due)
        job.reasons.add(reason)

    def feature(self, name: str) -> Feature:
        if name not in self._features:
            cls = feature_class(name)
            self._features[name] = cls(self.config, self.config.feature_settings(name, cls.options))
        return self._features[name]

    def _context(self, feature: Feature, event: Event, gj: GuestJournal, log: EventLog) -> Context:
        deadline = Deadline(self.settings["attempt_timeout"])
        return Context(feature.name, event, self.config, feature.settings, deadline, gj, log=log.bind(feature.name))

    def attempt(self, guest_uuid: uuid.UUID, job: _Job) -> bool | None:
        """One try at ``job``: True done, False failed (back off), None the guest was locked (come back)."""
        reasons = "+".join(sorted(job.reasons))
        log = EventLog(self.log.sink, guest=job.guest, uuid=str(guest_uuid), op=f"agent {reasons}")
        if self._locked(guest_uuid):
            return None
        libvirtsync.look(self, guest_uuid, job.reasons)  # libvirt is asked before the lock is taken
        try:
            with self.store.open(guest_uuid, job.guest, timeout=_LOCK_WAIT) as gj:
                started = time.monotonic()
                try:
                    return self._work(gj, job, log)
                finally:
                    kind = "reassociate" if job.reasons - {"pending"} else "teardown"
                    self.metrics.latency.observe(time.monotonic() - started, kind=kind)
        except JournalError as exc:  # a hook took the lock in between, or the journal is unusable
            log.warning("%s", exc.one_line(), outcome="retry")
            return False
        except HookError as exc:  # lldpad gone mid-way, a feature that cannot load: try again later
            log.warning("%s", exc.one_line(), outcome="retry")
            return False
        except Exception as exc:  # a bug must cost this attempt, not the daemon (and every other guest)
            log.exception("agent work crashed: %s: %s", type(exc).__name__, exc, outcome="error")
            return False

    def _locked(self, guest_uuid: uuid.UUID) -> bool:
        """Does a hook hold the guest's lock right now?  (Probed, so that a busy guest is no failure.)"""
        try:
            fd = os.open(os.path.join(self.store.state_dir, f"{guest_uuid}.lock"), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False  # no lock file: nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops our probe lock at once
        return False

    def _work(self, gj: GuestJournal, job: _Job, log: EventLog) -> bool:
        event = Event(gj.guest or job.guest, gj.uuid, "reconnect", "begin", "-")
        ok = True
        todo = work_of(gj.records)
        if todo:
            ok = self._teardown(gj, event, todo, log) and ok
        lost = job.reasons & {"deassoc", "lldpad", "start", "reconcile"}
        if lost and running(gj.records) and any(r.feature == "vdp" and r.state == DONE for r in gj.records):
            ok = self._repair(gj, event, log) and ok
        # libvirt events: resumed guests, vanished guests, hot-plug, metadata edits
        return libvirtsync.work(self, gj, event, job.reasons, log) and ok

    def _teardown(self, gj: GuestJournal, event: Event, records: Sequence[Record], log: EventLog) -> bool:
        pairs, contexts = [], {}
        for name in sorted({r.feature for r in records}):
            try:
                feature = self.feature(name)
            except HookError as exc:
                log.error("%s; its records stay pending", exc.one_line(), feature=name, outcome="pending")
                continue
            pairs.append((feature, [r for r in reversed(records) if r.feature == name]))
            contexts[name] = self._context(feature, event, gj, log)
        log.info("finishing %d record(s) left pending or unconfirmed", len(records), outcome="retry")
        problems = run_teardown(pairs, gj, contexts, log)
        self.metrics.repairs.inc(max(0, len(records) - len(problems)), kind="teardown")
        return not problems and len(pairs) == len({r.feature for r in records})

    def _repair(self, gj: GuestJournal, event: Event, log: EventLog) -> bool:
        """Check the guest's 802.1Qbg/Qbh ports against lldpad / the driver; re-associate what was lost."""
        if self.settings["on_deassoc"] == "report":
            mine = [r for r in gj.records if r.feature == "vdp" and r.state == DONE]
            for key, state in self.feature("vdp").live_state(mine).items():
                if state and not state.startswith("ok"):
                    log.warning("port %s: %s; on_deassoc = report: not repaired", key, state, port=key, outcome="lost")
            return True
        feature = self.feature("vdp")
        outcomes = feature.setup(event, self._context(feature, event, gj, log))
        ok = True
        for o in outcomes:
            if o.ok:
                log.info("%s", o.note or "ok", feature="vdp", port=o.key or "-", outcome="ok")
                if "associated again" in (o.note or ""):
                    self.metrics.repairs.inc(kind="reassociate")
            else:
                ok = False
                assert o.error is not None
                log.warning(
                    "%s; retrying with backoff", o.error.one_line(), feature="vdp", port=o.key or "-", outcome="retry"
                )
        if ok:
            # The reconnect path takes "in progress" for held; the agent wants the switch's answer: a request
            # lost on the wire (e.g. the first ECP frame after an lldpad restart) stays in progress for good.
            mine = [r for r in gj.records if r.feature == "vdp" and r.state == DONE and r.data.get("proto") == "qbg"]
            for key, state in feature.live_state(mine).items():
                if state == "in progress":
                    ok = False
                    log.warning(
                        "lldpad has no answer from the switch for this port yet; checking again later",
                        feature="vdp",
                        port=key,
                        outcome="retry",
                    )
        return ok

    def run_due(self) -> None:
        """Attempt every job that is due; several guests at once (an lldpad restart concerns them all).

        Guests on different uplinks then proceed in parallel; requests on one uplink still go one at a time
        (the hook's per-uplink lock, which the agent's requests take too)."""
        now = time.monotonic()
        due = [(u, j) for u, j in sorted(self.jobs.items(), key=lambda kv: kv[1].due) if j.due <= now]
        if not due or self.stopping:
            return
        if len(due) == 1:
            results = [self.attempt(*due[0])]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(due), self.settings["workers"])) as pool:
                results = list(pool.map(lambda item: self.attempt(*item), due))
        self._dirty = True
        for (guest_uuid, job), result in zip(due, results):
            self.metrics.attempts.inc(result="busy" if result is None else "ok" if result else "failed")
            if result is None:
                job.due = time.monotonic() + _LOCKED_RETRY
            elif result:
                del self.jobs[guest_uuid]
            else:
                job.failures += 1
                wait = backoff(job.failures, self.settings["retry_initial"], self.settings["retry_max"])
                job.due = time.monotonic() + wait
                self.log.info(
                    "guest %s: attempt %d failed, next in %.1f s",
                    job.guest,
                    job.failures,
                    wait,
                    uuid=str(guest_uuid),
                    outcome="retry",
                )

    # -- what the journals say -----------------------------------------------------------------------

    def journals(self) -> list[GuestJournal]:
        found = []
        for guest_uuid in self.store.guests():
            try:
                gj = self.store.peek(guest_uuid)  # no lock: only to find work; the work itself locks
            except HookError as exc:
                self.log.warning("%s", exc.one_line(), uuid=str(guest_uuid))
                continue
            if gj is not None:
                found.append(gj)
        return found

    def scan(self) -> None:
        for gj in self.journals():
            if work_of(gj.records):
                self.want(gj.uuid, gj.guest, "pending", hurry=False)

    def all_running(self, reason: str) -> None:
        for gj in self.journals():
            if running(gj.records):
                self.want(gj.uuid, gj.guest, reason)

    def owner(self, instance: uuid.UUID) -> tuple[GuestJournal, Record] | None:
        """The running guest whose journal holds VSI ``instance``."""
        wanted = str(instance)
        for gj in self.journals():
            for r in gj.records:
                if r.feature == "vdp" and r.state == DONE and r.data.get("instance") == wanted:
                    return gj, r
        return None
