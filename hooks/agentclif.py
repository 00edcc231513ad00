"""The agent's attached lldpad client connection: the de-associations no netlink notice tells.

lldpad sends no netlink notice about a VSI its client interface made (a migrated-in guest's, made with
VDP22 migration hints), to any listener, and re-associating it over netlink does not change that; but it
sends that VSI's events to every attached client connection, also after the one that made it has closed
(measured with lldpad 1.1, tests/lab/test_clif_events.py).  So the agent keeps one
(:class:`vdp.qbg.clif.ClifEvents`, its fd in ``Agent.readers``), attached again whenever lldpad's pid
changes (a restarted lldpad has forgotten its clients), and treats a ``deassoc`` event of such a VSI as
the netlink notice (``Agent.on_datagram``): the owning guest is queued for repair (measured ~10 ms from
the switch's drop to the re-association at the switch, tests/lab/test_agent.py).
"""

from __future__ import annotations

import uuid

from hooks.errors import HookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hooks.agent import Agent

__all__ = ["attach", "detach", "on_events"]


def attach(agent: Agent) -> None:
    """Open and attach the connection; a failure is logged and retried at the next lldpad check."""
    from vdp.qbg.clif import ClifEvents

    try:
        conn = ClifEvents(timeout=agent.settings["attempt_timeout"])
    except HookError as exc:
        agent.log.warning("cannot listen to lldpad's client interface (retried): %s", exc.one_line())
        return
    agent.clif_events = conn
    agent.readers[conn.fileno()] = lambda: on_events(agent)


def detach(agent: Agent) -> None:
    conn, agent.clif_events = agent.clif_events, None
    if conn is not None:
        agent.readers.pop(conn.fileno(), None)
        conn.close()


def on_events(agent: Agent) -> None:
    """Events on the connection: a VSI the client interface made ended (mode ``deassoc``).

    Every attached connection hears every VSI's events; those of a VSI made over netlink are left to its
    netlink notice, so one loss is reported and counted once.
    """
    if agent.clif_events is None:
        return
    try:
        records = agent.clif_events.read()
    except HookError as exc:
        agent.log.warning("%s; attaching again", exc.one_line(), outcome="retry")
        detach(agent)  # the lldpad check attaches a new one
        return
    for values in records:
        if values.get("mode") != "deassoc":
            continue
        try:
            instance = uuid.UUID(values.get("uuid", ""))
        except ValueError:
            continue
        found = agent.owner(instance)
        if found is None:
            agent.log.debug("lldpad ended VSI %s (no running guest holds it)", instance)
            continue
        gj, record = found
        if record.data.get("via") != "clif":
            continue
        if agent._locked(gj.uuid):
            # A hook works on this guest: most likely this is lldpad's answer to its own DISASSOCIATE (a
            # release; the event does not say who asked).  Checked quietly once the hook is done: by then a
            # teardown has removed the records, and a real loss is still found and repaired.
            agent.log.debug("VSI %s de-associated while a hook holds guest %s", instance, gj.uuid)
            agent.want(gj.uuid, gj.guest, "deassoc")
            continue
        agent.vsi_lost(gj, record, instance, heard="lldpad's client interface reports")
        agent._dirty = True
