"""``vdp-hooks agent``: the long-lived owner of every port, so state is repaired after the hook has exited.

A foreground daemon (systemd ``Type=notify``; ``READY=1``/``STOPPING=1`` go to ``$NOTIFY_SOCKET`` as plain
datagrams) with the hook's configuration and state directory (``VDP_HOOKS_CONFIG``,
``VDP_HOOKS_STATE_DIR``).  It keeps no state of its own: everything it acts on is in the guests' journals,
so a crashed agent loses nothing.  This module is the daemon (loop, notifications, reconcile, what it
tells); the work itself is :mod:`hooks.agentwork`, the comparison with lldpad :mod:`hooks.reconcile`.
What it does:

* **Finishes pending work.**  A record a teardown could not finish (``pending``), or an ``intent`` record
  of a guest that is not running here, is torn down again with backoff through the hook's own teardown
  path (:func:`hooks.transaction.run_teardown`), so the same requests and rules apply.
* **Hears lldpad.**  It binds a NETLINK_ROUTE socket and publishes its port id (:mod:`hooks.agentfile`);
  hooks put that id into ``nlmsg_pid``, so lldpad's notifications (a VSI de-associated by the switch, a
  keep-alive lost) come here.  The guest that owns the VSI is looked up in the journals and its ports are
  checked and re-associated through the VDP feature's own ``reconnect`` path, with backoff while the switch
  refuses; ``[agent] on_deassoc = report`` only logs.  lldpad sends no netlink notice about a VSI its client
  interface made (a migrated-in guest's, made with migration hints), but it sends that VSI's events to
  every attached client connection: the agent keeps one and treats a ``deassoc`` event of such a VSI as
  the netlink notice (:mod:`hooks.agentclif`).
* **Notices lldpad restarts** (its pid changes) and re-checks every running guest the same way; that
  path waits for lldpad to take requests again (it answers EPROTONOSUPPORT until EVB is ready).

* **Reconciles** at start and every ``reconcile_interval``: journals vs lldpad's tables (vs libvirt's
  running guests once the libvirt part fills :attr:`Agent.running_guests`): a lost port of a running guest
  is queued for repair, pending records for finishing, other drift is logged.  The backstop for a loss no
  notice or event settled (e.g. one while a hook held the guest).
* **Tells**: ``agent.json`` carries its view for ``vdp-hooks status`` (last reconcile, queued work), and
  ``[agent] metrics_file`` the Prometheus metrics (:mod:`hooks.metrics`), both rewritten atomically when
  something changed.

"Running here", without libvirt: a guest whose journal holds a confirmed (``done``) record.  The hook
journals every port it set up and removes the records when it tears them down.

Hook and agent never act on one guest at once: the agent takes the guest's journal lock only without
waiting (``Journal.open`` with a tiny timeout) and holds it for one attempt of at most
``[agent] attempt_timeout``; a hook never waits for the agent longer than that.

Event-driven: the loop sleeps in ``select()`` until a notification, a signal or the next timer (the
earliest retry, the journal scan every ``scan_interval``, the lldpad pid check every
``lldpad_check_interval``, the reconcile every ``reconcile_interval``); more descriptors (the libvirt
part's) join the select through :attr:`Agent.readers`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
import uuid
from collections.abc import Callable

from hooks import agentclif, libvirtsync
from hooks.agentwork import AGENT_OPTIONS, Worker, agent_settings, backoff, work_of
from hooks.config import Config, load_config
from hooks.domainevents import NotConnected, open_listener
from hooks.errors import HookError
from hooks.feature import is_known_feature
from hooks.log import EventLog, Sink, setup_logging
from hooks.metrics import write_atomically
from hooks.reconcile import Findings, reconcile, running

TYPE_CHECKING = False
# Any: the status it publishes is a JSON document.
if TYPE_CHECKING:
    from typing import Any

    from hooks.journal import GuestJournal, Record
    from vdp.qbg.clif import ClifEvents

__all__ = [
    "AGENT_OPTIONS",
    "Agent",
    "agent_settings",
    "backoff",
    "main",
    "running",
    "sd_notify",
    "work_of",
]


_RECV_SIZE = 65536
_STATUS_JOBS = 20  # queued guests listed in agent.json (the count is always there): the file stays small


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


class Agent(Worker):
    """The daemon: the work (:class:`hooks.agentwork.Worker`) plus its loop; :meth:`run` is the loop."""

    def __init__(self, config: Config, sink: Sink, state_dir: str) -> None:
        super().__init__(config, sink, state_dir)
        self.lldpad_pid: int | None = None
        self.port_id = 0  # the netlink port hooks name (set in run)
        self.findings: Findings | None = None  # the last reconcile's
        #: The seam for the agent's libvirt part: a callable giving the uuids of the guests libvirt runs here
        #: (None while libvirt cannot be asked).  Unset, a guest with a confirmed record counts as running.
        self.running_guests: Callable[[], set[uuid.UUID] | None] | None = None
        #: More descriptors for the loop's select(), each with what to call when it is readable (the
        #: libvirt part's event connection goes here).
        self.readers: dict[int, Callable[[], None]] = {}
        self.clif_events: ClifEvents | None = None  # lldpad's client events (hooks.agentclif)

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
                self.want(gj.uuid, gj.guest, "pending", hurry=False)
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
            self.want(guest_uuid, names.get(guest_uuid, ""), "reconcile", hurry=False)
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
        from vdp.qbg.session import find_lldpad_pid

        pid = find_lldpad_pid()
        if pid == self.lldpad_pid:
            if pid is not None and self.clif_events is None:
                agentclif.attach(self)
            return
        before, self.lldpad_pid = self.lldpad_pid, pid
        agentclif.detach(self)  # a restarted lldpad has forgotten its attached clients
        if pid is None:
            self.log.warning("lldpad (pid %s) is gone; waiting for it to come back", before, outcome="wait")
            return
        agentclif.attach(self)
        what = f"lldpad restarted (pid {before} -> {pid})" if before else f"lldpad is running (pid {pid})"
        self.log.info("%s: checking the ports of every running guest", what)
        self.all_running("lldpad")
        self._dirty = True

    def on_datagram(self, data: bytes, sender: int) -> None:
        """An unsolicited message from lldpad: a VSI ended (request DISASSOCIATE)."""
        from vdp.wire import netlink as nlmsg

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
                self.vsi_lost(*found, port.instance, heard="lldpad reports")
        self._dirty = True

    def vsi_lost(self, gj: GuestJournal, record: Record, instance: object, *, heard: str) -> None:
        """lldpad told of a running guest's VSI ending (netlink notice or client-interface event): count it,
        say so, and queue the guest's repair."""
        self.metrics.notifications.inc(kind="deassoc")
        self.log.warning(
            "%s VSI %s de-associated (by the switch, or keep-alive lost)",
            heard,
            instance,
            guest=gj.guest,
            uuid=str(gj.uuid),
            feature="vdp",
            port=record.key,
            outcome="lost",
        )
        self.want(gj.uuid, gj.guest, "deassoc")

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
                self._listen_to_libvirt()
                with contextlib.suppress(OSError):
                    sd_notify("READY=1")
                self._loop(sock, wake_r)
            finally:
                agentclif.detach(self)
                if self.libvirt is not None:
                    self.libvirt.close()
                withdraw(self.store.state_dir)
                path = self.settings["metrics_file"]
                if path:
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # no figures from an agent that is not running
                with contextlib.suppress(OSError):
                    sd_notify("STOPPING=1")
                self.log.info("agent stopped")
        return 0

    def _listen_to_libvirt(self) -> None:
        """libvirt's domain events (hooks.domainevents) join the loop as one more reader; libvirt's running
        guests feed the reconcile while libvirt answers."""
        self.libvirt = open_listener(self.settings, self.log)
        if self.libvirt is None:
            return
        listener = self.libvirt
        self.readers[listener.fileno()] = lambda: libvirtsync.on_notes(self)

        def running_guests() -> set[uuid.UUID] | None:
            if not listener.connected:
                return None
            try:
                return set(listener.running())
            except NotConnected:
                return None

        self.running_guests = running_guests

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
