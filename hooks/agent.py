"""``vdp-hooks agent``: the long-lived owner of every port, so state is repaired after the hook has exited.

A foreground daemon (systemd ``Type=notify``; ``READY=1``/``STOPPING=1`` go to ``$NOTIFY_SOCKET`` as plain
datagrams) with the hook's configuration and state directory (``VDP_HOOKS_CONFIG``,
``VDP_HOOKS_STATE_DIR``).  It keeps no state of its own: everything it acts on is in the guests' journals,
so a crashed agent loses nothing.  What it does (this slice):

* **Finishes pending work.**  A record a teardown could not finish (``pending``), or an ``intent`` record
  of a guest that is not running here, is torn down again with backoff through the hook's own teardown
  path (:func:`hooks.transaction.run_teardown`), so the same requests and rules apply.
* **Hears lldpad.**  It binds a NETLINK_ROUTE socket and publishes its port id (:mod:`hooks.agentfile`);
  hooks put that id into ``nlmsg_pid``, so lldpad's notifications (a VSI de-associated by the switch, a
  keep-alive lost) come here.  The guest that owns the VSI is looked up in the journals and its ports are
  checked and re-associated through the VDP feature's own ``reconnect`` path, with backoff while the switch
  refuses; ``[agent] on_deassoc = report`` only logs.
* **Notices lldpad restarts** (its pid changes) and re-checks every running guest the same way; that
  path waits for lldpad to take requests again (it answers EPROTONOSUPPORT until EVB is ready).

"Running here", without libvirt: a guest whose journal holds a confirmed (``done``) record.  The hook
journals every port it set up and removes the records when it tears them down.

Hook and agent never act on one guest at once: the agent takes the guest's journal lock only without
waiting (``Journal.open`` with a tiny timeout) and holds it for one attempt of at most
``[agent] attempt_timeout``; a hook never waits for the agent longer than that.

Event-driven: the loop sleeps in ``select()`` until a notification, a signal or the next timer (the
earliest retry, the journal scan every ``scan_interval``, the lldpad pid check every
``lldpad_check_interval``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from hooks.config import Config, Option, load_config, parse_seconds
from hooks.deadline import Deadline
from hooks.errors import ConfigError, HookError, JournalError
from hooks.event import Event
from hooks.feature import Context, Feature, feature_class, is_known_feature
from hooks.journal import DONE, INTENT, PENDING, GuestJournal, Journal, Record
from hooks.log import EventLog, Sink, setup_logging
from hooks.metrics import AgentMetrics, write_atomically
from hooks.reconcile import Findings, reconcile, running
from hooks.transaction import run_teardown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AGENT_OPTIONS", "Agent", "agent_settings", "backoff", "main", "sd_notify", "work_of"]


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
        "seconds between reconciles of the journals with lldpad's VSI tables (and one at start); the only way "
        "to notice a lost port lldpad sends no notice about (an incoming migration's ports)",
    ),
    "metrics_file": Option(
        _path,
        "",
        "Prometheus text file the agent rewrites (atomically) after each change, for node_exporter's "
        "textfile collector (e.g. /var/lib/prometheus/node-exporter/vdp-hooks.prom); empty: none",
    ),
}

_LOCK_WAIT = 0.02  # the agent never queues behind a hook: it tries the lock this briefly, then comes back
_LOCKED_RETRY = 0.05  # ... this much later (a busy lock is no failure: no backoff)
_RECV_SIZE = 65536
_STATUS_JOBS = 20  # queued guests listed in agent.json (the count is always there): the file stays small


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


def sd_notify(state: str) -> bool:
    """Tell systemd ``state`` (e.g. ``READY=1``) over ``$NOTIFY_SOCKET``; False when there is none."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path[0] == "@":  # an abstract socket
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(path)
        sock.sendall(state.encode())
    return True


class _Job:
    """Work due for one guest: why, when next, and how often it failed in a row."""

    def __init__(self, guest: str, due: float) -> None:
        self.guest = guest
        self.due = due
        self.reasons: set[str] = set()
        self.failures = 0


class Agent:
    """The daemon's state between events; :meth:`run` is the loop."""

    def __init__(self, config: Config, sink: Sink, state_dir: str) -> None:
        self.config = config
        self.settings = agent_settings(config)
        self.log = EventLog(sink, op="agent")
        self.store = Journal(state_dir)
        self.jobs: dict[uuid.UUID, _Job] = {}
        self.stopping = False
        self.lldpad_pid: int | None = None
        self._features: dict[str, Feature] = {}
        self.metrics = AgentMetrics()
        self.port_id = 0  # the netlink port hooks name (set in run)
        self.findings: Findings | None = None  # the last reconcile's
        #: The seam for the agent's libvirt part: a callable giving the uuids of the guests libvirt runs here
        #: (None while libvirt cannot be asked).  Unset, a guest with a confirmed record counts as running.
        self.running_guests: Callable[[], set[uuid.UUID] | None] | None = None
        #: More descriptors for the loop's select(), each with what to call when it is readable (the
        #: libvirt part's event connection goes here).
        self.readers: dict[int, Callable[[], None]] = {}
        self._dirty = True  # agent.json / the metrics file are behind

    # -- work ---------------------------------------------------------------------------------------

    def want(self, guest_uuid: uuid.UUID, guest: str, reason: str, *, delay: float = 0.0) -> None:
        job = self.jobs.get(guest_uuid)
        due = time.monotonic() + delay
        if job is None:
            job = self.jobs[guest_uuid] = _Job(guest, due)
        else:
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
        return ok

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
                self.want(gj.uuid, gj.guest, "pending")

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

    # -- reconcile and what the agent tells --------------------------------------------------------

    def reconcile(self) -> Findings:
        """Journals vs lldpad's tables (vs libvirt's running guests when known): lost ports of running guests
        are queued for repair (or only reported), pending records for finishing, the rest reported."""
        libvirt = self.running_guests() if self.running_guests is not None else None
        journals = self.journals()
        was_stuck = self.findings.stuck if self.findings is not None else set()
        found = reconcile(
            journals,
            uplinks=sorted(set(self.config.uplinks.values())),
            timeout=self.settings["attempt_timeout"],
            running_guests=libvirt,
            was_stuck=was_stuck,
        )
        names = {gj.uuid: gj.guest for gj in journals}
        for gj in journals:
            if work_of(gj.records):
                self.want(gj.uuid, gj.guest, "pending")
        for guest_uuid, keys in found.lost.items():
            log = EventLog(self.log.sink, guest=names.get(guest_uuid, "-"), uuid=str(guest_uuid), op="agent reconcile")
            if self.settings["on_deassoc"] == "report":
                log.warning(
                    "lldpad does not hold port(s) %s; on_deassoc = report: not repaired",
                    ", ".join(keys),
                    outcome="lost",
                )
                continue
            log.warning(
                "lldpad does not hold port(s) %s of this running guest: associating again",
                ", ".join(keys),
                outcome="lost",
            )
            self.want(guest_uuid, names.get(guest_uuid, ""), "reconcile")
        for line in found.drift():
            if not line.startswith("guest "):  # lost ports are logged above, per guest
                self.log.info("reconcile: %s", line, outcome="drift")
        self.findings = found
        m = self.metrics
        m.reconciles.inc()
        m.last_reconcile.set(found.at)
        m.reconcile_seconds.set(found.seconds)
        m.ports.replace({(state,): n for state, n in found.states().items()})
        m.drift.set(len(found.drift()))
        self._dirty = True
        return found

    def status(self) -> dict[str, Any]:
        """What ``vdp-hooks status`` shows (in agent.json): the last reconcile and the work queued."""
        now = time.monotonic()
        jobs = sorted(self.jobs.items(), key=lambda kv: kv[1].due)
        return {
            "reconcile_interval": self.settings["reconcile_interval"],
            "reconcile": self.findings.summary() if self.findings is not None else None,
            "lldpad_pid": self.lldpad_pid,
            "jobs": len(jobs),
            "work": [
                {
                    "guest": j.guest,
                    "uuid": str(u),
                    "why": sorted(j.reasons),
                    "failures": j.failures,
                    "next_in": round(max(0.0, j.due - now), 1),
                }
                for u, j in jobs[:_STATUS_JOBS]
            ],
        }

    def tell(self) -> None:
        """Bring agent.json and the metrics file up to date (both atomically)."""
        from hooks.agentfile import publish

        if not self._dirty:
            return
        self._dirty = False
        reasons: dict[tuple[str, ...], float] = {}
        for job in self.jobs.values():
            for reason in job.reasons:
                reasons[(reason,)] = reasons.get((reason,), 0) + 1
        self.metrics.jobs.replace(reasons)
        pending: dict[tuple[str, ...], float] = {("teardown_unfinished",): 0, ("unconfirmed",): 0}
        if self.findings is not None:
            pending.update({(c,): n for c, n in self.findings.pending.items()})
        self.metrics.pending.replace(pending)
        try:
            publish(self.store.state_dir, self.port_id, self.status())
        except OSError as exc:
            self.log.warning("cannot update %s: %s", self.store.state_dir, exc)
        path = self.settings["metrics_file"]
        if path:
            try:
                write_atomically(path, self.metrics.registry.render())
            except OSError as exc:
                self.log.warning("cannot write the metrics file %s: %s", path, exc)

    # -- lldpad --------------------------------------------------------------------------------------

    def check_lldpad(self) -> None:
        from vdp.lldpad import find_lldpad_pid

        pid = find_lldpad_pid()
        if pid == self.lldpad_pid:
            return
        before, self.lldpad_pid = self.lldpad_pid, pid
        if pid is None:
            self.log.warning("lldpad (pid %s) is gone; waiting for it to come back", before, outcome="wait")
            return
        what = f"lldpad restarted (pid {before} -> {pid})" if before else f"lldpad is running (pid {pid})"
        self.log.info("%s: checking the ports of every running guest", what)
        self.all_running("lldpad")
        self._dirty = True

    def on_datagram(self, data: bytes, sender: int) -> None:
        """An unsolicited message from lldpad: a VSI ended (request DISASSOCIATE)."""
        from vdp import nlmsg

        if sender != self.lldpad_pid:  # only lldpad speaks here (the kernel is 0; other processes: ignore)
            self.check_lldpad()
            if sender != self.lldpad_pid:
                self.log.debug("netlink message from port %d ignored (lldpad is %s)", sender, self.lldpad_pid)
                self.metrics.notifications.inc(kind="ignored")
                return
        for hdr, msg in nlmsg.split_messages(data):
            if hdr.type != nlmsg.RTM_SETLINK:
                continue
            try:
                ports = nlmsg.decode_ports(msg)
            except ValueError:
                self.log.warning("undecodable notification from lldpad (%d bytes)", hdr.length)
                continue
            for port in ports:
                if port.instance is None or port.request != nlmsg.DISASSOCIATE:
                    self.metrics.notifications.inc(kind="ignored")
                    continue
                found = self.owner(port.instance)
                if found is None:
                    self.log.debug("lldpad ended VSI %s (no running guest holds it)", port.instance)
                    self.metrics.notifications.inc(kind="unowned")
                    continue
                self.metrics.notifications.inc(kind="deassoc")
                gj, record = found
                self.log.warning(
                    "lldpad reports VSI %s de-associated (by the switch, or keep-alive lost)",
                    port.instance,
                    guest=gj.guest,
                    uuid=str(gj.uuid),
                    feature="vdp",
                    port=record.key,
                    outcome="lost",
                )
                self.want(gj.uuid, gj.guest, "deassoc")
        self._dirty = True

    # -- loop ----------------------------------------------------------------------------------------

    def _safely(self, step: Callable[[], object]) -> None:
        """A failing reconcile or reader costs that step, not the daemon."""
        try:
            step()
        except HookError as exc:
            self.log.warning("%s", exc.one_line(), outcome="retry")
        except Exception as exc:
            self.log.exception("agent step crashed: %s: %s", type(exc).__name__, exc, outcome="error")

    def run(self) -> int:
        from hooks.agentfile import publish, withdraw
        from vdp.rtsocket import RouteSocket

        self.store.ensure_dir()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)

        def stop(_signum: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        with RouteSocket() as rt, contextlib.closing(wake_r), contextlib.closing(wake_w):
            sock = rt._sock  # the socket lldpad's notifications arrive on
            self.port_id = rt.own_port_id
            publish(self.store.state_dir, rt.own_port_id)
            self.log.info("agent started: netlink port %d, state %s", rt.own_port_id, self.store.state_dir)
            try:
                self.check_lldpad()
                self.all_running("start")
                self.scan()
                with contextlib.suppress(OSError):
                    sd_notify("READY=1")
                self._loop(sock, wake_r)
            finally:
                withdraw(self.store.state_dir)
                path = self.settings["metrics_file"]
                if path:
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # no figures from an agent that is not running
                with contextlib.suppress(OSError):
                    sd_notify("STOPPING=1")
                self.log.info("agent stopped")
        return 0

    def _loop(self, sock: socket.socket, wake: socket.socket) -> None:
        next_scan = time.monotonic() + self.settings["scan_interval"]
        next_lldpad = time.monotonic() + self.settings["lldpad_check_interval"]
        next_reconcile = time.monotonic()  # one at start
        while not self.stopping:
            self.run_due()
            now = time.monotonic()
            if now >= next_reconcile and not self.stopping:
                self._safely(self.reconcile)
                now = time.monotonic()
                next_reconcile = now + self.settings["reconcile_interval"]
                self.run_due()  # what it found lost is due now
            self.tell()
            timers = [next_scan, next_lldpad, next_reconcile, *(j.due for j in self.jobs.values())]
            wait = max(0.0, min(timers) - time.monotonic())
            try:
                ready, _, _ = select.select([sock, wake, *self.readers], [], [], wait)
            except InterruptedError:
                continue
            for fd in ready:
                if fd in self.readers:
                    self._safely(self.readers[fd])
            if wake in ready:
                with contextlib.suppress(BlockingIOError):
                    wake.recv(64)
            if sock in ready:
                with contextlib.suppress(BlockingIOError):
                    data, addr = sock.recvfrom(_RECV_SIZE, socket.MSG_DONTWAIT)
                    self.on_datagram(data, addr[0])
            now = time.monotonic()
            if now >= next_lldpad:
                self.check_lldpad()
                next_lldpad = now + self.settings["lldpad_check_interval"]
            if now >= next_scan:
                self.scan()
                next_scan = now + self.settings["scan_interval"]


def main() -> int:
    """``vdp-hooks agent``: runs until SIGTERM; exit 3 for a broken config (systemd then does not loop)."""
    from hooks.runner import state_dir

    config = load_config(known_features=is_known_feature)
    agent_settings(config)  # a bad [agent] key fails the start, with file:line
    try:
        sink = setup_logging(syslog=config.syslog, log_file=config.log_file, debug=config.debug)
    except OSError:
        sink = setup_logging(syslog=config.syslog, log_file="", debug=config.debug)
    return Agent(config, sink, state_dir()).run()
