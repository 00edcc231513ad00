"""What the agent does with libvirt's domain events (:mod:`hooks.domainevents`), one guest at a time.

Events only queue work (:func:`on_notes`: ``Agent.want`` with a reason).  Each attempt asks libvirt first
(:func:`look`, without the journal lock: see there), then does the work (:func:`work`) in the agent's job
loop under the guest's journal lock, so hook and agent never act on a guest at once, and every request
goes through the paths the hook uses (the VDP feature, ``run_teardown``).  An event only says "look at
this guest"; what to do is decided from what libvirt says at the attempt.

=========================  =================================================================================
libvirt says               the agent
=========================  =================================================================================
running, ports reserved    associates them (``[vdp] associate_at = resume``: the destination of an incoming
                           migration once the guest resumed; RESUMED_MIGRATED, or found so at connect).  This
                           cannot veto: the guest runs already; a refusal is logged and retried with backoff.
resumed, reason            the source of a migration that failed after the switch-over began: every port is
migration-canceled         associated again (a one-port switch moved, or holds for a timeout, the VSIs the
                           destination associated; re-asserting them here takes them back).
not running (at connect)   the guest vanished without ``release end`` (libvirtd killed, then its QEMU): what
                           its journal holds is torn down.  Only when (re)connecting -- a stop that libvirtd
                           sees runs ``release end`` itself, and the agent must not race it.
device added / removed,    the ports the live metadata declares for interfaces the guest has now are
metadata changed           compared with the journal: new ones associated (no qemu hook runs for hot-plug),
                           ones whose interface or declaration went are torn down.
=========================  =================================================================================
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from hooks.deadline import Deadline
from hooks.domainevents import CONNECTED, DEVICE_ADDED, DEVICE_REMOVED, LIFECYCLE, METADATA, NotConnected
from hooks.errors import HookError
from hooks.event import Event, parse_event
from hooks.feature import Context, Outcome
from hooks.journal import DONE, GuestJournal, Record
from hooks.log import EventLog

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hooks.agentwork import Worker as Agent
    from vdp.feature import VdpFeature

__all__ = ["REASONS", "look", "on_notes", "work"]

#: Job reasons this module owns: "libvirt" = check against libvirt after (re)connecting, "resumed", "devices".
REASONS = frozenset({"libvirt", "resumed", "devices"})

_RESUMED = 4  # VIR_DOMAIN_EVENT_RESUMED
_RUNNING = 1  # VIR_DOMAIN_RUNNING
_RUNNING_MIGRATION_CANCELED = 6  # VIR_DOMAIN_RUNNING_MIGRATION_CANCELED


def on_notes(agent: Agent) -> None:
    """Queue work for what libvirt told us since the last call (the agent's loop, wake socket readable)."""
    listener = agent.libvirt
    if listener is None:
        return
    for note in listener.drain():
        if note.kind == CONNECTED:
            for gj in agent.journals():
                agent.want(gj.uuid, gj.guest, "libvirt")
        elif note.uuid is None:
            continue
        elif note.kind == LIFECYCLE and note.event == _RESUMED:
            agent.log.info("libvirt: guest %s resumed (%s)", note.name, note.text, uuid=str(note.uuid))
            agent.want(note.uuid, note.name, "resumed")
        elif note.kind in (DEVICE_ADDED, DEVICE_REMOVED, METADATA):
            agent.log.info("libvirt: %s of guest %s (%s)", note.kind, note.name, note.text, uuid=str(note.uuid))
            agent.want(note.uuid, note.name, "devices")


def look(agent: Agent, guest_uuid: uuid.UUID, reasons: set[str]) -> None:
    """Ask libvirt about the guest *before* the agent takes its journal lock (``Agent.attempt``).

    Never while holding it: libvirtd keeps the domain locked while it runs one of its hooks, and that hook
    may be waiting for this very journal lock (measured: a ``started begin`` timed out so).  What libvirt
    said is kept for :func:`work`, with the time it was asked."""
    listener = agent.libvirt
    if listener is None or not reasons & REASONS:
        return
    at = time.time()
    try:
        state = listener.state(guest_uuid)
        xml = listener.live_xml(guest_uuid) if state is not None else None
    except NotConnected as exc:
        listener.views[guest_uuid] = exc
        return
    listener.views[guest_uuid] = (at, state, xml)


def work(agent: Agent, gj: GuestJournal, event: Event, reasons: set[str], log: EventLog) -> bool:
    """This module's part of one job (the guest's lock is held): True done, False try again with backoff."""
    mine = reasons & REASONS
    listener = agent.libvirt
    if not mine or listener is None:
        return True
    view = listener.views.pop(gj.uuid, None)
    if view is None:  # not connected: the next connect queues a full check; an event's work waits for it
        return "libvirt" in mine
    if isinstance(view, NotConnected):
        log.warning("%s; trying again once libvirt answers", view, outcome="retry")
        return False
    at, state, xml = view
    if state is None:
        if "libvirt" in mine and gj.records:
            return _vanished(agent, gj, event, at, log)
        return True
    ok = True
    reserved = [r for r in gj.records if r.feature == "vdp" and r.kind == "reserve" and r.state == DONE]
    if reserved and state[0] == _RUNNING:
        ok = _associate_reserved(agent, gj, reserved, xml, log) and ok
    elif "resumed" in mine and state == (_RUNNING, _RUNNING_MIGRATION_CANCELED):
        ok = _reassert(agent, gj, event, log) and ok
    if mine & {"devices", "libvirt"} and not reserved:
        ok = _sync_ports(agent, gj, event, xml, log) and ok
    return ok


def _vanished(agent: Agent, gj: GuestJournal, event: Event, asked: float, log: EventLog) -> bool:
    if any(r.created >= asked for r in gj.records):
        return True  # journaled after libvirt said "not running": the guest is starting again; the hook has it
    log.warning(
        "libvirt says the guest is not running here, yet its journal holds %d record(s): it ended without "
        "release end (libvirtd killed?); tearing them down",
        len(gj.records),
        outcome="teardown",
    )
    return bool(agent._teardown(gj, event, list(gj.records), log))


def _live_event(gj: GuestJournal, xml: bytes | None, op: str, subop: str) -> Event | None:
    """The guest as libvirt runs it now (live XML: hot-plugged NICs, ``--live`` metadata)."""
    if xml is None:
        return None
    return parse_event([gj.guest, op, subop, "-"], xml)


def _subset(event: Event, keys: set[str]) -> Event:
    return Event(
        event.guest, event.uuid, event.op, event.subop, event.extra, event.interfaces,
        tuple(p for p in event.ports if p.key in keys), event.feature_policy, event.warnings,
        event.has_metadata, event.raw,
    )


def _outcomes_ok(outcomes: Sequence[Outcome], log: EventLog, what: str) -> bool:
    ok = True
    for o in outcomes:
        if o.ok:
            log.info("%s", o.note or what, feature="vdp", port=o.key or "-", outcome="ok")
        else:
            ok = False
            cause = o.error.one_line() if o.error is not None else "?"
            log.warning("%s: %s; retrying with backoff", what, cause, feature="vdp", port=o.key or "-", outcome="retry")
    return ok


def _vdp(agent: Agent) -> VdpFeature:
    from vdp.feature import VdpFeature

    feature = agent.feature("vdp")
    assert isinstance(feature, VdpFeature)
    return feature


def _associate_reserved(agent: Agent, gj: GuestJournal, reserved: list[Record], xml: bytes | None,
                        log: EventLog) -> bool:
    """``associate_at = resume``: the incoming guest resumed here; associate what ``prepare begin`` reserved."""
    feature = _vdp(agent)
    live = _live_event(gj, xml, "started", "begin")
    if live is None:
        return True
    event = _subset(live, {r.key for r in reserved})
    ctx = Context(feature.name, event, agent.config, feature.settings, Deadline(agent.settings["attempt_timeout"]),
                  gj, incoming=True, log=log.bind(feature.name))
    log.info("the incoming guest resumed: associating %d reserved port(s) (associate_at = resume)", len(reserved))
    outcomes = feature.associate_reserved(event, ctx)
    return _outcomes_ok(outcomes, log, "associate after resume")


def _reassert(agent: Agent, gj: GuestJournal, event: Event, log: EventLog) -> bool:
    """The guest resumed here after its outgoing migration failed: associate every port again."""
    feature = _vdp(agent)
    if not any(r.feature == "vdp" and r.kind == "associate" and r.state == DONE for r in gj.records):
        return True
    log.warning("the guest resumed here after a failed outgoing migration: associating its ports again")
    outcomes = feature.reassociate(agent._context(feature, event, gj, log))
    return _outcomes_ok(outcomes, log, "associated again after the failed migration")


def _sync_ports(agent: Agent, gj: GuestJournal, event: Event, xml: bytes | None, log: EventLog) -> bool:
    """Hot-plug, hot-unplug, ``virsh metadata --live``: the journal follows the live definition."""
    try:
        live = _live_event(gj, xml, "prepare", "begin")
    except HookError as exc:  # metadata edited into something unusable: change nothing, say why
        log.warning("the live metadata cannot be used: %s; ports left as they are", exc.one_line(), outcome="error")
        return True
    if live is None:
        return True
    present = {i.mac for i in live.interfaces}
    wanted = {p.key for p in live.ports if p.kind in ("qbg", "qbh") and p.error is None and p.mac in present}
    mine = [r for r in gj.records if r.feature == "vdp"]
    gone = [r for r in mine if r.key not in wanted]
    new = wanted - {r.key for r in mine}
    ok = True
    if gone:
        log.info("%d port(s) no longer declared for an interface of the running guest: tearing them down", len(gone))
        ok = bool(agent._teardown(gj, event, gone, log)) and ok
    if new:
        feature = agent.feature("vdp")
        plug = _subset(live, new)
        ctx = agent._context(feature, plug, gj, log)
        log.info("%d port(s) declared for interfaces the guest has now (hot-plug, metadata): associating", len(new))
        outcomes = feature.setup(plug, ctx)
        if not _outcomes_ok(outcomes, log, "associate (hot-plug)"):
            ok = False
            # As a failed setup's rollback: nothing half-made stays; the next attempt starts afresh.
            failed = {o.key for o in outcomes if not o.ok}
            left = [r for r in ctx.created if r.key in failed and r in gj.records and r.state != DONE]
            if left:
                agent._teardown(gj, event, left, log)
    return ok
