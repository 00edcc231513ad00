"""The agent's reconcile: the guests' journals against lldpad's VSI tables (and libvirt's running guests,
when the agent's libvirt part provides them), so drift nobody was told about is found.

Why it exists: lldpad sends its notifications (a VSI de-associated by the switch, a keep-alive lost) only
to the ``nlmsg_pid`` of the netlink request that made the VSI.  VSIs made over lldpad's client interface
(an incoming migration's ports, which carry VDP22 migration hints, and clif takes those only) have no
netlink requester, so no netlink notice about them reaches anybody (measured with lldpad 1.1).  lldpad does
send their events to every attached client-interface connection, and the agent keeps one
(:mod:`hooks.agentclif`); a periodic look at lldpad's table is the backstop for whatever neither settled
(e.g. a loss while a hook held the guest, tests/lab/test_agent.py).

Per uplink, with the methods that scale (PROTOCOL.md §3, measured):

* one GETLINK per uplink (``QbgSession.uplink_table``) gives every VSI with its status -- but lldpad's
  reply buffer holds ~92 VSIs (the newest first) and silently leaves out the rest, so from a full reply a
  VSI's absence proves nothing;
* a VSI journaled on such an uplink and absent from its reply is asked for alone over the client
  interface (``QbgSession.holds_vsi``: GETTLV for that uuid, which answers at any table size -- unlike
  clif's whole listing, which comes back blank past ~32 VSIs).

Both go through one ``vdp.qbg.session.QbgSession`` per reconcile, the hooks' own.  The table is read
holding the uplink's lock (the hook's ``vdp.qbg.uplinklock``, taken without waiting): lldpad reports a
VSI's final status once and then forgets it, so a read between a hook's request and the hook's own poll
could take the answer the hook waits for.  A busy uplink is skipped and looked at again soon.

Nothing here acts: :func:`reconcile` returns :class:`Findings`; the agent repairs or reports them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from hooks.errors import HookError
from hooks.journal import DONE, INTENT, PENDING, GuestJournal, Record

__all__ = ["Findings", "reconcile", "running"]

#: Port states (metric label values): lldpad holds it with status 0 / is still waiting for the switch /
#: does not hold it (or with a failure status) / could not be asked / not an lldpad port (802.1Qbh).
OK, IN_PROGRESS, LOST, UNKNOWN, UNCHECKED = "ok", "in_progress", "lost", "unknown", "unchecked"


def running(records: Sequence[Record]) -> bool:
    """A guest with a confirmed record runs here (the hook removes records when it tears them down)."""
    return any(r.state == DONE for r in records)


def pending_cause(record: Record, alive: bool) -> str | None:
    """Why a record is work for the agent (a metric label), or None when it is not."""
    if record.state == PENDING:
        return "teardown_unfinished"
    if record.state == INTENT and not alive:
        return "unconfirmed"
    return None


class Findings:
    """What one reconcile saw."""

    def __init__(self) -> None:
        self.at = time.time()
        self.seconds = 0.0
        self.ports: dict[str, str] = {}  # "guest-uuid/port-key" -> state (OK, LOST, ...)
        self.lost: dict[uuid.UUID, list[str]] = {}  # running guests with ports lldpad does not hold
        self.stuck: set[str] = set()  # VSI instances in progress at this reconcile
        self.pending: dict[str, int] = {}  # cause -> records
        self.unowned: dict[str, int] = {}  # uplink -> VSIs lldpad holds that no journal knows
        self.not_running: list[uuid.UUID] = []  # libvirt says these journaled guests do not run here
        self.problems: list[str] = []  # uplinks that could not be read, and why

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self.ports.values():
            counts[state] = counts.get(state, 0) + 1
        return counts

    def drift(self) -> list[str]:
        """One line per difference found (for the log and ``vdp-hooks status``)."""
        lines = [
            f"guest {g}: {len(keys)} port(s) not held by lldpad: {', '.join(keys)}" for g, keys in self.lost.items()
        ]
        lines += [f"uplink {i}: lldpad holds {n} VSI(s) no journal knows" for i, n in sorted(self.unowned.items())]
        lines += [f"guest {g}: journaled as running, libvirt says it is not" for g in self.not_running]
        return lines + self.problems

    def summary(self) -> dict[str, object]:
        return {
            "at": self.at,
            "seconds": round(self.seconds, 4),
            "ports": self.states(),
            "pending": dict(self.pending),
            "drift": self.drift()[:20],
        }


def _classify(
    record: Record,
    live: dict[str, object],
    cut: bool,
    holds: Callable[[str, str], bool | None],
    was_stuck: set[str],
) -> str:
    """The state of a done Qbg record from its uplink's table (``live``: instance -> PortStatus)."""
    inst = str(record.data.get("instance", ""))
    state = live.get(inst)
    if state is None:
        if not cut:
            return LOST
        held = holds(record.data["ifname"], inst)
        return UNKNOWN if held is None else (OK if held else LOST)
    response = getattr(state, "response", None)
    if response is None:
        # Waiting for the switch is normal for a moment; at two reconciles in a row the request was lost
        # (e.g. the first ECP frame after an lldpad restart), and only a new one gets an answer.
        return LOST if inst in was_stuck else IN_PROGRESS
    return OK if response == 0 else LOST


def reconcile(
    journals: Iterable[GuestJournal],
    *,
    uplinks: Iterable[str],
    timeout: float,
    running_guests: set[uuid.UUID] | None = None,
    was_stuck: set[str] | frozenset[str] = frozenset(),
) -> Findings:
    """Compare the journals with lldpad's tables of ``uplinks`` (plus every uplink a journal names).

    ``running_guests``: libvirt's view (uuids of the guests running here) when known, else None (then a
    guest with a confirmed record counts as running).  ``was_stuck``: the instances in progress at the
    previous reconcile.
    """
    from vdp.qbg.session import QbgSession

    found = Findings()
    start = time.monotonic()
    journals = list(journals)
    known: set[str] = set()
    by_uplink: dict[str, list[tuple[GuestJournal, Record]]] = {}
    for gj in journals:
        alive = running(gj.records)
        for r in gj.records:
            if r.data.get("instance"):
                known.add(str(r.data["instance"]).lower())
            cause = pending_cause(r, alive)
            if cause:
                found.pending[cause] = found.pending.get(cause, 0) + 1
            if r.state != DONE or r.feature != "vdp":
                continue
            if r.data.get("proto") == "qbg":
                by_uplink.setdefault(str(r.data["ifname"]), []).append((gj, r))
            else:
                found.ports[f"{gj.uuid}/{r.key}"] = UNCHECKED
        if running_guests is not None and alive and gj.uuid not in running_guests:
            found.not_running.append(gj.uuid)
    names = sorted(set(uplinks) | set(by_uplink))
    if not names:
        found.seconds = time.monotonic() - start
        return found

    def unknown(ifname: str, why: str) -> None:
        found.problems.append(f"uplink {ifname}: {why}")
        for gj, r in by_uplink.get(ifname, []):
            found.ports[f"{gj.uuid}/{r.key}"] = UNKNOWN

    with QbgSession(exchange_timeout=timeout) as session:
        try:
            session.netlink()
        except HookError as exc:  # lldpad not running
            for ifname in names:
                unknown(ifname, exc.one_line())
            found.seconds = time.monotonic() - start
            return found
        for ifname in names:
            try:
                table, cut = session.uplink_table(ifname, what=" (agent reconcile)")
            except HookError as exc:  # busy with a hook's request, lldpad gone, no such interface
                unknown(ifname, exc.one_line())
                continue
            live: dict[str, object] = {str(s.instance): s for s in table if s.instance is not None}
            if not cut:
                foreign = [i for i, s in live.items() if i not in known and getattr(s, "response", 1) == 0]
                if foreign:
                    found.unowned[ifname] = len(foreign)
            for gj, r in by_uplink.get(ifname, []):
                state = _classify(r, live, cut, session.holds_vsi, set(was_stuck))
                found.ports[f"{gj.uuid}/{r.key}"] = state
                if state == IN_PROGRESS:
                    found.stuck.add(str(r.data["instance"]))
                elif state == LOST:
                    found.lost.setdefault(gj.uuid, []).append(r.key)
    found.seconds = time.monotonic() - start
    return found
