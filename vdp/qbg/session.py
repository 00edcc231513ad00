"""One 802.1Qbg session per feature call: finds lldpad, owns both transports, schedules per uplink.

lldpad takes VSI requests two ways: netlink (``vdp.qbg.netlink``, libvirt's way, no migration hints) and
its client interface (``vdp.qbg.clif``, the only way to send VDP22 migration hints).  A session opens each
the first time it is needed and keeps it to the end (``with QbgSession(...)``): the preflight, the
requests, the netlink dialogue's questions only the client interface answers (a switch-assigned VLAN,
whether lldpad holds a VSI), all on the same connections.

Scheduling, in one place (:meth:`QbgSession.send`): one request in flight per uplink -- across hook
processes by ``vdp.qbg.uplinklock`` (with the time plan of ``vdp.qbg.budget`` fitted to the deadline),
inside this process by the transport's own queue -- and a VSI's later requests (teardown above all) over
the transport it was made with (its ``via``: lldpad reports a VSI's progress only to the transport that
created it, see ``vdp.ports``).  An lldpad that has just started is waited for (``vdp.qbg.readiness``).

Every answer becomes one :class:`PortResult`; refusals are exceptions (``error``), never bare numbers.

Over 400 lines on purpose: the one place where Qbg requests are scheduled, with the table reads the
agent's reconcile shares (the uplink lock, the GETLINK cut), reads better whole than split by transport.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator, Sequence

from hooks.agentfile import agent_port
from hooks.errors import DeadlineExceeded, HookError, PeerRefused
from hooks.runner import state_dir
from vdp.ports import VIA_CLIF, PortResult, QbgPort, Request
from vdp.qbg import budget, readiness, uplinklock
from vdp.qbg.netlink import LldpadClient, VsiRequest
from vdp.wire.clif import VsiCommand
from vdp.wire.netlink import PortStatus, VsiType

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from types import ModuleType

    from hooks.log import EventLog
    from vdp.qbg.clif import Clif

__all__ = ["CUT_COUNT", "LLDPAD_PID_FILE", "QbgSession", "clif_module", "find_lldpad_pid"]

LLDPAD_PID_FILE = "/var/run/lldpad.pid"  # what libvirt reads; per mount namespace

#: A GETLINK reply listing this many VSIs may have been cut short (40 bytes each in a ~3.6 KiB buffer:
#: 92 of 150 measured); below it, the reply is the whole table.
CUT_COUNT = 90


def clif_module() -> ModuleType:
    """``vdp.qbg.clif``, imported the first time lldpad's client interface is needed: ctypes alone costs
    6-10 ms (measured here with ``-X importtime``), which a fresh start over netlink never pays."""
    from vdp.qbg import clif  # the one lazy import of the Qbg code (see above)

    return clif


def _clif() -> type[Clif]:
    """The Clif class (typed access to :func:`clif_module`)."""
    cls: type[Clif] = clif_module().Clif
    return cls


def _library_available() -> bool:
    return bool(clif_module().library_available())


def _pid_file_lldpad() -> int | None:
    """The pid in ``/var/run/lldpad.pid`` if that process is an lldpad in our network namespace."""
    try:
        with open(LLDPAD_PID_FILE, encoding="ascii") as f:
            pid = int(f.read().split()[0])
        with open(f"/proc/{pid}/comm", encoding="ascii", errors="replace") as f:
            if f.read().strip() != "lldpad":
                return None
        # Netlink port ids are per network namespace: an lldpad elsewhere is not ours to talk to.
        if os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"):
            return None
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 0 else None


def find_lldpad_pid() -> int | None:
    """lldpad's pid (= its netlink port id) in this network namespace, or None when it is not running.

    First ``/var/run/lldpad.pid`` (what libvirt reads), accepted only if that process is lldpad and lives
    in our network namespace; else lldpad itself is asked through liblldp_clif (``vdp.qbg.clif``).  This
    order is for speed: the pid file costs ~0.4 ms, loading ctypes and the library 7-20 ms (measured in
    the lab), a tenth of a hook's budget.
    """
    pid = _pid_file_lldpad()
    if pid is not None:
        return pid
    try:
        found = clif_module().lldpad_pid()
    except Exception:  # any failure of this optional path means "not found"
        return None
    return int(found) if found else None


class QbgSession:
    """lldpad for one feature call (a context manager): discovery, transports, the per-uplink scheduler.

    ``deadline`` (``time.monotonic()``) caps every request; ``invocation_timeout`` and ``exchange_timeout``
    are the host's settings (the time plan keeps ``exchange_timeout`` for a rollback and names both when
    it refuses); ``hints`` = "never" keeps every request on netlink."""

    def __init__(
        self,
        *,
        exchange_timeout: float,
        deadline: float | None = None,
        invocation_timeout: float = 0.0,
        hints: str = "auto",
    ) -> None:
        self.exchange_timeout = exchange_timeout
        self.deadline = deadline
        self.invocation_timeout = invocation_timeout
        self.hints = hints
        self._pid: int | None = None
        self._netlink: LldpadClient | None = None
        self._conn: Clif | None = None
        self._vdp22: dict[str, bool] = {}

    def __enter__(self) -> QbgSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        netlink, self._netlink = self._netlink, None
        conn, self._conn = self._conn, None
        try:
            if netlink is not None:
                netlink.close()
        finally:
            if conn is not None:
                conn.close()

    # -- discovery and transports -------------------------------------------------------------------

    def lldpad_pid(self) -> int | None:
        """lldpad's pid (found once per session)."""
        if self._pid is None:
            self._pid = find_lldpad_pid()
        return self._pid

    def netlink(self) -> LldpadClient:
        """The session's netlink client of lldpad; PeerUnavailable when lldpad does not run.

        With the agent alive, lldpad's later notices about the VSIs sent here go to it (its port id goes
        into every SETLINK); else to this socket."""
        if self._netlink is None:
            self._netlink = LldpadClient(
                lldpad_pid=self.lldpad_pid(),
                port_id=agent_port(state_dir()),
                exchange_timeout=self.exchange_timeout,
                clif=self.peek,
            )
        return self._netlink

    def clif_available(self) -> bool:
        """Does ``liblldp_clif.so.1`` load (it comes with lldpad)?"""
        return _library_available()

    def clif(self) -> Clif:
        """The session's client-interface connection (opened now if need be); PeerUnavailable/
        DeadlineExceeded when the library or lldpad is missing or silent."""
        if self._conn is None:
            self._conn = _clif()().open()
        return self._conn

    def drop_clif(self) -> None:
        """Close the client-interface connection after a failure on it: a reply that came too late must
        not be read as the answer to the next command (the next use opens a fresh connection)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def peek(self) -> Clif | None:
        """The client interface for the netlink dialogue's questions; None when it cannot be had."""
        try:
            return self.clif() if _library_available() else None
        except HookError:
            self.drop_clif()
            return None

    def runs_vdp22(self, ifname: str) -> bool:
        """Does this uplink run VDP22 (so migration hints apply)?  Asked once per uplink and session."""
        if self.hints == "never" or not _library_available():
            return False
        if ifname not in self._vdp22:
            try:
                self._vdp22[ifname] = self.clif().vdp_mode(ifname) == "vdp22"
            except HookError:
                self.drop_clif()
                return False
        return self._vdp22[ifname]

    def table(self, ifname: str) -> list[PortStatus]:
        """lldpad's live VSI table for ``ifname`` (netlink: it lists every VSI, also those lldpad gave up on)."""
        return self.netlink().table(ifname)

    def uplink_table(self, ifname: str, *, wait: float = 0.2, what: str = "") -> tuple[list[PortStatus], bool]:
        """:meth:`table` read holding the uplink's lock, and whether the reply may have been cut short.

        The lock (``vdp.qbg.uplinklock``) is waited for ``wait`` s at most, then UplinkBusy (``what`` names
        the reader): lldpad reports a VSI's final status once and then forgets it, so a read between a
        hook's request and the hook's own poll could take the answer the hook waits for.

        Cut short: lldpad's GETLINK reply buffer holds ~92 VSIs (the newest first) and silently leaves out
        the rest, so from a full reply (:data:`CUT_COUNT` rows or more) a VSI's absence proves nothing: ask
        :meth:`holds_vsi` for it.
        """
        with uplinklock.hold([ifname], until=time.monotonic() + wait, what=what):
            table = self.table(ifname)
        return table, len(table) >= CUT_COUNT

    def holds_vsi(self, ifname: str, instance: str) -> bool | None:
        """Does lldpad hold VSI ``instance`` on ``ifname``?  Asked for this VSI alone over the client
        interface (``Clif.holds_vsi``: GETTLV for that uuid, which answers at any table size -- unlike
        clif's whole listing, which comes back blank past ~32 VSIs); None when it cannot be asked."""
        try:
            return self.clif().holds_vsi(ifname, instance)
        except HookError:
            return None

    # -- the scheduler ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def planned(self, ifnames: Sequence[str], request: Request) -> Iterator[budget.Budget]:
        """Hold the uplinks' locks (``vdp.qbg.uplinklock``) for this call's requests on ``ifnames`` (one
        entry per request), with the time plan for them (``vdp.qbg.budget``).  Raises UplinkBusy or NoTime
        before anything is sent when the plan or the lock wait cannot fit the deadline."""
        counts: dict[str, int] = {}
        for ifname in ifnames:
            counts[ifname] = counts.get(ifname, 0) + 1
        setup_deadline = self.deadline if self.deadline is not None else time.monotonic() + self.invocation_timeout
        plan = budget.Budget(
            setup_deadline=setup_deadline,
            reserve=self.exchange_timeout,
            estimates={i: uplinklock.estimate(i) for i in counts},
            settings=f"now {self.invocation_timeout:g} s, of which exchange_timeout, {self.exchange_timeout:g} s, "
            "is kept for the rollback",
            rollback=request != Request.DISASSOCIATE,
        )
        if plan.rollback:  # a setup goes all the way or not at all; a teardown does what fits (the rest stays pending)
            for ifname, count in counts.items():
                if plan.latest_start(ifname, count) <= time.monotonic():
                    raise budget.NoTime(plan.reason(ifname, count, 0))
        until = min(plan.latest_start(i, n if plan.rollback else 1) for i, n in counts.items())
        with uplinklock.hold(list(counts), until=until) as held:
            plan.history.update(held.estimates)  # what the previous holder measured, read under the lock
            yield plan
            for ifname, seconds in plan.measured().items():
                held.measured(ifname, seconds)

    def send(
        self,
        ports: Sequence[tuple[str, QbgPort]],
        request: Request,
        *,
        hint: str,
        wait_ready: bool = False,
        log: EventLog | None = None,
    ) -> dict[str, PortResult]:
        """``request`` for every (key, port), each over the transport its ``via`` names.  ``wait_ready``:
        an lldpad that has just started (host boot) refuses requests for a moment: wait for it within the
        exchange timeout rather than fail (``log`` gets a line per retry)."""
        results = self._send_once(ports, request, hint=hint)
        if not wait_ready:
            return results
        by_key = dict(ports)
        give_up = time.monotonic() + self.exchange_timeout
        if self.deadline is not None:
            give_up = min(give_up, self.deadline)
        return readiness.retry_until_ready(
            results,
            lambda keys: self._send_once([(k, by_key[k]) for k in keys], request, hint=hint),
            give_up=give_up,
            waited_for=f"exchange_timeout ({self.exchange_timeout:g} s)",
            log=log,
        )

    def _send_once(
        self, ports: Sequence[tuple[str, QbgPort]], request: Request, *, hint: str
    ) -> dict[str, PortResult]:
        results: dict[str, PortResult] = {}
        hinted = [(k, p) for k, p in ports if p.via == VIA_CLIF]
        if hinted:
            results.update(self._send_clif(hinted, request, hint=hint))
        plain = [(k, p) for k, p in ports if p.via != VIA_CLIF]
        if request == Request.DISASSOCIATE:
            # lldpad's client interface refuses ("invalid parameters") to withdraw a VSI it no longer holds
            # (the switch refused or moved it) or holds after a refused change (KEEP).  Its netlink side
            # tells these apart from its table (gone: done) and withdraws what it still holds.
            plain += [(k, p) for k, p in hinted if type(results[k].error) is PeerRefused]
        if plain:
            results.update(self._send_netlink(plain, request))
        return results

    def _send_netlink(self, ports: Sequence[tuple[str, QbgPort]], request: Request) -> dict[str, PortResult]:
        results: dict[str, PortResult] = {}
        requests = [
            VsiRequest(
                ifname=p.ifname,
                mac=p.mac,
                vlan=p.vlan,
                vsi_type=VsiType(p.managerid, p.typeid, p.typeidversion),
                instance=p.instance,
                request=request,
            )
            for _, p in ports
        ]
        try:
            client = self.netlink()
        except HookError as exc:  # lldpad not running: nothing was sent
            return {k: PortResult(k, exc, unsent=True) for k, _ in ports}
        try:
            with self.planned([r.ifname for r in requests], request) as plan:
                answers = client.submit(requests, deadline=self.deadline, budget=plan)
        except DeadlineExceeded as exc:  # from planned() (uplink busy, no time): nothing was sent
            return {k: PortResult(k, exc, unsent=True) for k, _ in ports}
        for (key, port), answer in zip(ports, answers):
            if answer.ok and request == Request.DISASSOCIATE:
                # What made it done: the switch's answer, or lldpad holding nothing for the VSI.
                results[key] = PortResult(key, how=f"{answer.message} (netlink)")
            elif answer.ok:
                results[key] = PortResult(key, learnt={"vlan": answer.vlan} if answer.vlan is not None else {})
            elif answer.request in plan.skipped:  # not sent: no time left for it (vdp.qbg.budget)
                results[key] = PortResult(key, budget.NoTime(answer.message), unsent=True)
            elif answer.stuck:
                results[key] = PortResult(key, PeerRefused(answer.message), stuck=answer.stuck)
            elif answer.errno == -errno.ETIMEDOUT:
                results[key] = PortResult(key, PeerRefused(answer.message), unanswered=True)
            elif readiness.not_ready(answer.errno, client.lldpad_pid):  # just started, or EVB not negotiated
                # lldpad did not take it: nothing to undo
                results[key] = PortResult(key, readiness.NotReady(f"{port.ifname}: {answer.message}"), unsent=True)
            else:
                results[key] = PortResult(key, PeerRefused(answer.message))
        return results

    def _send_clif(
        self, ports: Sequence[tuple[str, QbgPort]], request: Request, *, hint: str
    ) -> dict[str, PortResult]:
        """lldpad takes VDP22 migration hints only through its client interface, one VSI per command."""
        commands = [
            VsiCommand(
                ifname=p.ifname,
                mode=request.mode,
                manager_id=p.managerid,
                type_id=p.typeid,
                type_version=p.typeidversion,
                instance=p.instance,
                mac=p.mac,
                vlan=p.vlan,
                hints=hint,
            )
            for _, p in ports
        ]
        try:
            conn = self.clif()
            with self.planned([c.ifname for c in commands], request) as plan:
                start = time.monotonic()
                replies = conn.vsi_many(commands, wait=self.exchange_timeout, deadline=self.deadline)
                for ifname in {c.ifname for c in commands}:  # one at a time per uplink: the mean answer time
                    plan.answered(ifname, (time.monotonic() - start) / sum(c.ifname == ifname for c in commands))
        except HookError as exc:  # lldpad's client interface is unreachable, the uplink busy: nothing was sent
            if not isinstance(exc, DeadlineExceeded):
                self.drop_clif()
            return {k: PortResult(k, exc, unsent=True) for k, _ in ports}
        not_sent: type[HookError] = clif_module().NotSent
        # lldpad's client interface words a refusal caused by an earlier, still unanswered request for the
        # VSI as "busy" or "invalid parameters": its table tells.
        refused = [(k, p) for (k, p), reply in zip(ports, replies) if type(reply) is PeerRefused]
        stuck = self.held_unanswered(refused) if refused and request != Request.DISASSOCIATE else set()
        results: dict[str, PortResult] = {}
        for (key, port), reply in zip(ports, replies):
            if key in stuck:
                results[key] = PortResult(key, PeerRefused(str(reply)), stuck="busy")
            elif isinstance(reply, not_sent):
                results[key] = PortResult(key, reply, unsent=True)
            elif type(reply) is DeadlineExceeded:  # the switch did not answer within the wait
                results[key] = PortResult(key, reply, unanswered=True)
            elif isinstance(reply, HookError):
                results[key] = PortResult(key, reply)
            elif reply.ok and request == Request.DISASSOCIATE:
                results[key] = PortResult(key, how="disassociated, the switch confirmed (client interface)")
            elif reply.ok:
                learnt: dict[str, object] = {"hint": hint} if reply.vlan is None else {"vlan": reply.vlan, "hint": hint}
                results[key] = PortResult(key, learnt=learnt)
            else:
                results[key] = PortResult(key, PeerRefused(f"{request.label} on {port.ifname}: {reply.message}"))
        return results

    def held_unanswered(self, ports: Sequence[tuple[str, QbgPort]]) -> set[str]:
        """Keys of ``ports`` whose VSI lldpad lists in progress (no response): an earlier request for it is
        still without the switch's answer.  Asked over netlink (its table shows every VSI; the client
        interface's listing drops the ones lldpad gave up on)."""
        stuck: set[str] = set()
        try:
            for ifname in sorted({p.ifname for _, p in ports}):
                rows = {s.instance: s for s in self.table(ifname)}
                for key, p in ports:
                    row = rows.get(p.instance)
                    if p.ifname == ifname and row is not None and row.response is None:
                        stuck.add(key)
        except HookError:  # only an explanation: without it the refusal stands as lldpad worded it
            return set()
        return stuck

    def live(self, ports: Sequence[tuple[str, QbgPort]]) -> dict[str, PortStatus | None]:
        """What lldpad's table says about each (key, port) now: its row, or None when it lists none."""
        found: dict[str, PortStatus | None] = {}
        for ifname in sorted({p.ifname for _, p in ports}):
            rows = {s.instance: s for s in self.table(ifname)}
            for key, p in ports:
                if p.ifname == ifname:
                    found[key] = rows.get(p.instance)
        return found
