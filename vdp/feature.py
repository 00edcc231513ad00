"""The ``vdp`` feature: hook events -> 802.1Qbg requests to lldpad and 802.1Qbh requests to the kernel.

For ports declared in our metadata (DESIGN.md, "What the VDP feature does"):

=====================  ==============================  ==========================================
hook                   fresh start / restore           incoming migration (destination)
=====================  ==============================  ==========================================
migrate/restore begin  preflight                       preflight: uplink up, lldpad, EVB/VDP mode
prepare begin          ASSOCIATE                       PREASSOCIATE_RR (hint "to" on VDP22)
started begin          -                               ASSOCIATE (hint "to"), guest still paused
release end            DISASSOCIATE what the journal holds and what the XML declares
reconnect begin        GETLINK; re-associate what lldpad lost; never fails
=====================  ==============================  ==========================================

Ports libvirt manages itself get the preflight only, so a migration libvirt would fail at Finish, after
the RAM transfer, is refused up front: ``type='direct'`` with ``<virtualport type='802.1Qbg|802.1Qbh'>``
(uplink: the source device), ``type='network'`` whose network or portgroup carries such a virtualport
(``vdp.networks``; uplinks: the network's forward devices), and ``type='hostdev'`` with an 802.1Qbh
virtualport (the VF's PF must do port profiles).

Wire clients (``vdp.lldpad``, ``vdp.clif``, ``vdp.qbh``) are imported only when a request is due: the
class itself must stay cheap to import because the framework loads it for every guest that has metadata.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence

from hooks.config import Option
from hooks.errors import DeadlineExceeded, HookError, PeerRefused, PeerUnavailable
from hooks.event import Event, Interface, PortSpec
from hooks.feature import CheckResult, Context, Feature, Outcome
from hooks.journal import Record
from hooks.links import link_state
from hooks.plain import plain, replace
from vdp import ports
from vdp.ports import VIA_CLIF, VIA_NETLINK
from vdp.ports import carried as _carried
from vdp.ports import transport as _transport

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar

__all__ = ["VdpFeature"]

# Request codes (IFLA_PORT_REQUEST); the same numbers for Qbg and Qbh.
PREASSOCIATE_RR, ASSOCIATE, DISASSOCIATE = 1, 2, 3
_REQUEST_NAMES = {PREASSOCIATE_RR: "preassociate-rr", ASSOCIATE: "associate", DISASSOCIATE: "disassociate"}

_PREFLIGHT = frozenset({("migrate", "begin"), ("restore", "begin")})


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"'{text}' is not one of {', '.join(allowed)}")
        return value

    return parse


def _qbh_destination() -> int:
    """Port profiles go to the kernel (port id 0).  Tests point them at a peer that plays the enic driver;
    libvirt strips the environment, so this variable can never steer a production hook."""
    return int(os.environ.get("VDP_HOOKS_QBH_PEER", "0") or 0)


#: Marks a failed request that never left the host, so its intent record can simply be dropped.
_UNSENT = "_unsent"
#: A request that got no answer within the exchange timeout (not journaled as such; see UNANSWERED).
_UNANSWERED_NOW = "_unanswered_now"
#: How a teardown was settled (for its log line; never journaled: the record goes).
_HOW = "_how"
#: Journaled in a record's data when a withdrawal went unanswered: [time, op] of the first such request.
#: (A record's ``created`` is when its setup request went out: the unanswered one, if that was it.)
UNANSWERED = "unanswered"
_RECONNECT_RETRY = 0.5  # seconds between attempts while lldpad is not ready at reconnect


def _count(text: str) -> int:
    value = int(text.strip())
    if not 0 < value <= 4096:
        raise ValueError(f"'{text}' is not a count from 1 to 4096")
    return value


@contextlib.contextmanager
def _planned(ifnames: Sequence[str], request: int, ctx: Context) -> Iterator[Any]:
    """Hold the uplinks' locks (vdp.uplinklock) for this call's requests on ``ifnames`` (one entry per
    request), with the time plan for them (vdp.budget).  Raises UplinkBusy or NoTime before anything is
    sent when the plan or the lock wait cannot fit the deadline."""
    from vdp import budget, uplinklock

    config = ctx.config
    counts: dict[str, int] = {}
    for ifname in ifnames:
        counts[ifname] = counts.get(ifname, 0) + 1
    plan = budget.Budget(
        setup_deadline=ctx.deadline.at,
        reserve=config.exchange_timeout,
        estimates={i: uplinklock.estimate(i) for i in counts},
        settings=f"now {config.invocation_timeout:g} s, of which exchange_timeout, {config.exchange_timeout:g} s, "
        "is kept for the rollback",
        rollback=request != DISASSOCIATE,
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


def _ifindex(ifname: str) -> int | None:
    import socket

    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def _port_data(port: PortSpec, ifname: str) -> dict[str, Any]:
    """Everything needed to rebuild the port's requests later, from the journal alone."""
    typed: ports.QbgPort | ports.QbhPort = port.port  # type: ignore[assignment]
    return replace(typed, ifname=ifname).journal()


_PROFILES = {"802.1Qbg": "qbg", "802.1Qbh": "qbh"}


@plain(frozen=True)
class _Native:
    """A port libvirt associates itself, for the preflight: what to check and how to name it."""

    key: str  # the interface's MAC
    proto: str  # "qbg" or "qbh"
    uplinks: tuple[str, ...]  # interfaces to check (any of them may carry the port)
    where: str  # names the port in messages: interface type, network, portgroup
    pci: tuple[str, ...] = ()  # VFs by PCI address (type='hostdev', or a network in forward mode hostdev)
    error: HookError | None = None  # known already (the network could not be resolved)


def _prefixed(where: str, error: HookError) -> HookError:
    """``error`` with ``where`` in front (same class and hint), so a veto names the port's whole path."""
    return type(error)(f"{where}: {error.text}", hint=error.hint_text)


class VdpFeature(Feature):
    """802.1Qbg (VDP through lldpad) and 802.1Qbh (port profiles through the kernel)."""

    name = "vdp"
    # Only the port profiles we act on: openvswitch and midonet virtualports are none of ours.
    markers = (
        b"<virtualport type='802.1Qbg'",
        b"<virtualport type='802.1Qbh'",
        b'<virtualport type="802.1Qbg"',
        b'<virtualport type="802.1Qbh"',
    )
    handles = frozenset(
        {("migrate", "begin"), ("restore", "begin"), ("prepare", "begin"), ("started", "begin"), ("reconnect", "begin")}
    )
    options: ClassVar[Mapping[str, Option]] = {
        "associate_at": Option(
            _choice("started", "resume"),
            "started",
            "when the migration destination associates: 'started' (started begin, can still veto) or "
            "'resume' (after the guest resumed; needs the long-lived component, not built yet)",
        ),
        "hints": Option(_choice("auto", "never"), "auto", "VDP22 migration hints through liblldp_clif"),
        "host_uuid": Option(str, "", "host UUID sent with 802.1Qbh requests (default: found like libvirt)"),
        "max_ports": Option(
            _count,
            64,
            "most hook-managed ports a guest may declare: more are refused at once (their requests, one at a "
            "time per uplink, would hold the uplink for the whole deadline)",
        ),
    }

    def __init__(self, config: Any, settings: Mapping[str, Any]) -> None:
        super().__init__(config, settings)
        self._resolved: dict[str, _Native | None] = {}  # type='network' ports by MAC, resolved once

    def describe(self) -> str:
        return "802.1Qbg VDP through lldpad, 802.1Qbh port profiles through the kernel"

    @classmethod
    def wants(cls, raw: bytes) -> bool:
        # type='network' guests only when one of their networks here carries a Qbg/Qbh virtualport.
        if super().wants(raw):
            return True
        if b" network=" not in raw:
            return False
        from vdp import networks  # ~1 ms: only for guests with a type='network' interface

        return networks.has_port_profile_network(raw, networks.network_dirs())

    # ------------------------------------------------------------------------------------------ targets
    def _native(self, event: Event) -> list[_Native]:
        """The ports libvirt associates itself, each with what to check (resolved once per invocation)."""
        found = []
        for i in event.interfaces:
            if i.type == "direct" and i.virtualport_type in _PROFILES:
                proto = _PROFILES[i.virtualport_type]
                found.append(_Native(i.mac, proto, (i.source_dev or "",), f"<interface type='direct'> ({proto})"))
            elif i.type == "hostdev" and i.virtualport_type == "802.1Qbh":
                found.append(
                    _Native(
                        i.mac, "qbh", (), f"<interface type='hostdev'> PCI {i.pci or '?'} (qbh)", pci=(i.pci or "?",)
                    )
                )
            elif i.type == "network" and i.network:
                native = self._network_port(i)
                if native is not None:
                    found.append(native)
        return found

    def _network_port(self, iface: Interface) -> _Native | None:
        if iface.mac in self._resolved:
            return self._resolved[iface.mac]
        from vdp import networks

        where = f"<interface type='network'> on network '{iface.network}'"
        native: _Native | None = None
        try:
            port = networks.resolve(iface, networks.network_dirs())
        except HookError as exc:
            native = _Native(iface.mac, "qbg", (), where, error=_prefixed(where, exc))
        except ValueError as exc:
            error = PeerRefused(f"{where}: {exc}", hint="libvirt refuses this too: fix the network or the guest")
            native = _Native(iface.mac, "qbg", (), where, error=error)
        else:
            if port is not None:
                where = f"<interface type='network'> on {port.describe()} ({port.proto}, forward mode {port.mode})"
                native = _Native(
                    iface.mac, port.proto, port.uplinks, where, pci=port.pci if port.proto == "qbh" else ()
                )
        self._resolved[iface.mac] = native
        return native

    def targets(self, event: Event) -> list[str]:
        keys = [p.key for p in event.ports]
        if event.hook in _PREFLIGHT:
            keys += [n.key for n in self._native(event)]
        return keys

    def _ifname(self, port: PortSpec) -> str:
        return self.config.uplink(port.uplink or "")

    # ------------------------------------------------------------------------------------------ setup
    def setup(self, event: Event, ctx: Context) -> list[Outcome]:
        hook = event.hook
        declared = [p for p in event.ports if p.kind in ("qbg", "qbh")]
        if len(declared) > self.settings["max_ports"] and hook != ("reconnect", "begin"):
            cap = self.settings["max_ports"]
            refusal = PeerRefused(
                f"the guest declares {len(declared)} VDP ports, more than max_ports = {cap}",
                hint="declare fewer ports, or raise max_ports in [vdp] of vdp-hooks.conf",
            )
            return [Outcome(None, refusal)]
        if hook in _PREFLIGHT:
            return self._preflight(event, ctx)
        if hook == ("prepare", "begin"):
            return self._request(event.ports, PREASSOCIATE_RR if ctx.incoming else ASSOCIATE, ctx)
        if hook == ("started", "begin"):
            if not ctx.incoming:
                return []
            if self.settings["associate_at"] == "resume":
                ctx.log.warning(
                    "associate_at = resume is not available yet (it needs the long-lived component); "
                    "associating at started begin instead"
                )
            reserved = ctx.journaled("reserve")
            # Associate what was reserved, as the switch answered it (e.g. the VLAN it assigned).
            learnt = {r.key: r.data for r in reserved}
            outcomes = self._request(event.ports, ASSOCIATE, ctx, learnt=learnt)
            done = {o.key for o in outcomes if o.ok}
            # The association supersedes the reservation: one record per port from here on.
            ctx.forget([r for r in reserved if r.key in done])
            return outcomes
        if hook == ("reconnect", "begin"):
            return self._reconnect(ctx)
        return []

    def _request(
        self,
        ports: Sequence[PortSpec],
        request: int,
        ctx: Context,
        *,
        learnt: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[Outcome]:
        """Journal intent for every port, send all requests together, confirm what succeeded.

        ``learnt`` (port key -> journaled data) overrides the XML's values with what an earlier exchange
        established for the same port, such as a switch-assigned VLAN."""
        kind = "reserve" if request == PREASSOCIATE_RR else "associate"
        ports = [p for p in ports if p.kind in ("qbg", "qbh")]
        if not ports:
            return []
        before = learnt or {}
        hint = "to" if ctx.incoming else "none"
        # Migration hints go only through lldpad's client interface, and only on VDP22 uplinks (asked once
        # per uplink); the transport is journaled with the intent, before anything is sent.
        # A VSI lldpad already holds (the reservation before an association) keeps the way it was made.
        items = [(p.key, kind, {**_port_data(p, self._ifname(p)), **_carried(before.get(p.key, {}))}) for p in ports]
        new = {d["ifname"] for _, _, d in items if d["proto"] == "qbg" and "via" not in d} if hint != "none" else ()
        hinted = {i for i in new if self._vdp22(i)}
        for _, _, data in items:
            if data["proto"] == "qbg" and "via" not in data:
                data["via"] = VIA_CLIF if data["ifname"] in hinted else VIA_NETLINK
        records = ctx.intend_many(items)
        results = self._send(records, request, ctx, hint=hint)
        # An lldpad that has just started (host boot) refuses requests for a moment: wait for it, as
        # reconnect does (vdp.readiness), rather than veto.
        from vdp import readiness

        by_key = {r.key: r for r in records}
        results = readiness.retry_until_ready(
            results,
            lambda keys: self._send([by_key[k] for k in keys], request, ctx, hint=hint),
            give_up=min(ctx.deadline.at, time.monotonic() + self.config.exchange_timeout),
            waited_for=f"exchange_timeout ({self.config.exchange_timeout:g} s)",
            log=ctx.log,
        )
        outcomes = []
        confirmed, updates = [], {}
        for record in records:
            error, learnt = results.get(record.key, (None, {}))
            if error is None:
                confirmed.append(record)
                updates[record.key] = learnt
                note = f"{_REQUEST_NAMES[request]} on {record.data['ifname']}"
                if record.data["proto"] == "qbg":
                    note += f" vlan {learnt.get('vlan', record.data['vlan'])}"
                outcomes.append(Outcome(record.key, None, note))
            else:
                if learnt.get(_UNSENT):
                    ctx.forget([record])  # the request never left this host: nothing to tear down
                outcomes.append(Outcome(record.key, error))
        if confirmed:
            ctx.confirm(confirmed, updates)
        return outcomes

    def _send(
        self, records: Sequence[Record], request: int, ctx: Context, *, hint: str
    ) -> dict[str, tuple[HookError | None, dict[str, Any]]]:
        """Send ``request`` for every record; key -> (error or None, data learnt from the peer)."""
        results: dict[str, tuple[HookError | None, dict[str, Any]]] = {}
        qbg = [r for r in records if r.data["proto"] == "qbg"]
        qbh = [r for r in records if r.data["proto"] == "qbh"]
        try:
            if qbg:
                results.update(self._send_qbg(qbg, request, ctx, hint=hint))
        except HookError as exc:
            results.update({r.key: (exc, {}) for r in qbg})
        try:
            if qbh:
                results.update(self._send_qbh(qbh, request, ctx))
        except HookError as exc:
            results.update({r.key: (exc, {}) for r in qbh})
        return results

    def _send_qbg(
        self, records: Sequence[Record], request: int, ctx: Context, *, hint: str
    ) -> dict[str, tuple[HookError | None, dict[str, Any]]]:
        from vdp import budget, lldpad, readiness

        results: dict[str, tuple[HookError | None, dict[str, Any]]] = {}
        hinted = [r for r in records if _transport(r.data) == VIA_CLIF]
        if hinted:
            results.update(self._send_qbg_hinted(hinted, request, ctx, hint=hint))
        plain = [r for r in records if _transport(r.data) == VIA_NETLINK]
        if request == DISASSOCIATE:
            # lldpad's client interface refuses ("invalid parameters") to withdraw a VSI it no longer holds
            # (the switch refused or moved it) or holds after a refused change (KEEP).  Its netlink side
            # tells these apart from its table (gone: done) and withdraws what it still holds.
            plain += [r for r in hinted if type(results[r.key][0]) is PeerRefused]
        if not plain:
            return results
        requests = [
            lldpad.VsiRequest(
                ifname=r.data["ifname"],
                mac=r.data["mac"],
                vlan=int(r.data["vlan"]),
                vsi_type=lldpad.VsiType(int(r.data["managerid"]), int(r.data["typeid"]), int(r.data["typeidversion"])),
                instance=uuid.UUID(r.data["instance"]),
                request=request,
            )
            for r in plain
        ]
        from hooks.agentfile import agent_port
        from hooks.runner import state_dir

        try:
            # With the agent alive, lldpad's later notices about these VSIs go to it (None: to this socket).
            client = lldpad.LldpadClient(exchange_timeout=self.config.exchange_timeout, port_id=agent_port(state_dir()))
        except HookError as exc:  # lldpad not running: nothing was sent
            results.update({r.key: (exc, {_UNSENT: True}) for r in plain})
            return results
        try:
            with client, _planned([r.ifname for r in requests], request, ctx) as plan:
                answers = client.submit(requests, deadline=ctx.deadline.at, budget=plan)
        except DeadlineExceeded as exc:  # from _planned (uplink busy, no time): nothing was sent
            results.update({r.key: (exc, {_UNSENT: True}) for r in plain})
            return results
        for record, answer in zip(plain, answers):
            if answer.ok and request == DISASSOCIATE:
                # What made it done: the switch's answer, or lldpad holding nothing for the VSI.
                results[record.key] = (None, {_HOW: f"{answer.message} (netlink)"})
            elif answer.ok:
                results[record.key] = (None, {"vlan": answer.vlan} if answer.vlan is not None else {})
            elif answer.request in plan.skipped:  # not sent: no time left for it (vdp.budget)
                results[record.key] = (budget.NoTime(answer.message), {_UNSENT: True})
            elif answer.stuck:
                results[record.key] = (self._stuck(record, request, ctx, ended=answer.stuck == "ended"), {})
            elif answer.errno == -errno.ETIMEDOUT:
                results[record.key] = (PeerRefused(answer.message), {_UNANSWERED_NOW: True})
            elif readiness.not_ready(answer.errno, client.lldpad_pid):  # just started, or EVB not negotiated
                error = readiness.NotReady(f"{record.data['ifname']}: {answer.message}")
                results[record.key] = (error, {_UNSENT: True})  # lldpad did not take it: nothing to undo
            else:
                results[record.key] = (PeerRefused(answer.message), {})
        return results

    def _stuck(self, record: Record, request: int, ctx: Context, *, ended: bool = False) -> HookError:
        """lldpad refused ``request`` because an earlier request for this VSI still lacks the switch's answer
        (a silent or late switch): say so, and since when -- the oldest of the VSI's unanswered withdrawals
        (journaled as UNANSWERED) and unconfirmed setup requests (a record's creation) is the one lldpad
        still holds."""
        from vdp import nlmsg, status

        instance = record.data.get("instance")
        starts = []
        for r in ctx.journal.records:
            if r.data.get("instance") != instance:
                continue
            mark = r.data.get(UNANSWERED)
            if isinstance(mark, list) and len(mark) == 2:
                starts.append((float(mark[0]), str(mark[1])))
            elif r.state != "done" and r.created:
                starts.append((r.created, r.op))
        since = ""
        if starts:
            at, op = min(starts)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
            since = f" since {when} ({op})" if op else f" since {when}"
        ifname = record.data["ifname"]
        what = f"{nlmsg.REQUEST_NAMES.get(request, str(request))} on {ifname}"
        return PeerRefused(status.stuck_message(what, since=since, ended=ended, uplink=ifname))

    def _held_unanswered(self, records: Sequence[Record]) -> set[str]:
        """Keys of ``records`` whose VSI lldpad lists in progress (no response): an earlier request for it is
        still without the switch's answer.  Asked over netlink (its table shows every VSI; the client
        interface's listing drops the ones lldpad gave up on)."""
        from vdp import lldpad

        stuck: set[str] = set()
        try:
            with lldpad.LldpadClient(exchange_timeout=self.config.exchange_timeout) as client:
                for ifname in sorted({r.data["ifname"] for r in records}):
                    rows = {str(s.instance): s for s in client.table(ifname)}
                    for r in records:
                        row = rows.get(r.data["instance"])
                        if r.data["ifname"] == ifname and row is not None and row.response is None:
                            stuck.add(r.key)
        except HookError:  # only an explanation: without it the refusal stands as lldpad worded it
            return set()
        return stuck

    def _vdp22(self, ifname: str) -> bool:
        """Does this uplink run VDP22 (so migration hints apply)?  Only asked when hints are wanted."""
        if self.settings["hints"] == "never":
            return False
        from vdp import clif

        if not clif.library_available():
            return False
        try:
            with clif.Clif() as conn:
                return conn.vdp_mode(ifname) == "vdp22"
        except HookError:
            return False

    def _send_qbg_hinted(
        self, records: Sequence[Record], request: int, ctx: Context, *, hint: str
    ) -> dict[str, tuple[HookError | None, dict[str, Any]]]:
        """lldpad takes VDP22 migration hints only through its client interface, one VSI per command."""
        from vdp import clif

        mode = {PREASSOCIATE_RR: "preassoc-rr", ASSOCIATE: "assoc", DISASSOCIATE: "deassoc"}[request]
        commands = [
            clif.VsiCommand(
                ifname=r.data["ifname"],
                mode=mode,
                manager_id=int(r.data["managerid"]),
                type_id=int(r.data["typeid"]),
                type_version=int(r.data["typeidversion"]),
                instance=uuid.UUID(r.data["instance"]),
                mac=r.data["mac"],
                vlan=int(r.data["vlan"]),
                hints=hint,
            )
            for r in records
        ]
        results: dict[str, tuple[HookError | None, dict[str, Any]]] = {}
        try:
            with clif.Clif() as conn, _planned([c.ifname for c in commands], request, ctx) as plan:
                start = time.monotonic()
                replies = conn.vsi_many(commands, wait=self.config.exchange_timeout, deadline=ctx.deadline.at)
                for ifname in {c.ifname for c in commands}:  # one at a time per uplink: the mean answer time
                    plan.answered(ifname, (time.monotonic() - start) / sum(c.ifname == ifname for c in commands))
        except HookError as exc:  # lldpad's client interface is unreachable, the uplink busy: nothing was sent
            return {r.key: (exc, {_UNSENT: True}) for r in records}
        # lldpad's client interface words a refusal caused by an earlier, still unanswered request for the
        # VSI as "busy" or "invalid parameters": its table tells.
        refused = [r for r, reply in zip(records, replies) if type(reply) is PeerRefused]
        stuck = self._held_unanswered(refused) if refused and request != DISASSOCIATE else set()
        for r, reply in zip(records, replies):
            if r.key in stuck:
                results[r.key] = (self._stuck(r, request, ctx), {})
            elif isinstance(reply, clif.NotSent):
                results[r.key] = (reply, {_UNSENT: True})
            elif type(reply) is DeadlineExceeded:  # the switch did not answer within the wait
                results[r.key] = (reply, {_UNANSWERED_NOW: True})
            elif isinstance(reply, HookError):
                results[r.key] = (reply, {})
            elif reply.ok and request == DISASSOCIATE:
                results[r.key] = (None, {_HOW: "disassociated, the switch confirmed (client interface)"})
            elif reply.ok:
                learnt = {"hint": hint} if reply.vlan is None else {"vlan": reply.vlan, "hint": hint}
                results[r.key] = (None, learnt)
            else:
                label = clif.REQUEST_LABELS.get(mode, mode)
                results[r.key] = (PeerRefused(f"{label} on {r.data['ifname']}: {reply.message}"), {})
        return results

    def _send_qbh(
        self, records: Sequence[Record], request: int, ctx: Context
    ) -> dict[str, tuple[HookError | None, dict[str, Any]]]:
        from vdp import qbh

        # The host UUID libvirt itself would send (its daemon config), else SMBIOS, else machine-id.
        host = qbh.host_uuid(self.settings["host_uuid"] or qbh.libvirt_host_uuid())
        results: dict[str, tuple[HookError | None, dict[str, Any]]] = {}
        sendable, requests = [], []
        for r in records:
            try:
                port = self._qbh_port(r)
            except HookError as exc:
                # Teardown of a port whose interface is gone: nothing left to disassociate.
                results[r.key] = (None, {}) if request == DISASSOCIATE else (exc, {_UNSENT: True})
                continue
            sendable.append(r)
            requests.append(
                qbh.QbhRequest(
                    port=port,
                    mac=r.data["mac"],
                    profile=r.data.get("profile", ""),
                    instance=uuid.UUID(r.data["instance"]),
                    host_uuid=host,
                    request=request,
                )
            )
        if requests:
            with qbh.QbhClient(dest_pid=_qbh_destination(), exchange_timeout=self.config.exchange_timeout) as client:
                answers = client.submit(requests, deadline=ctx.deadline.at)
            for record, answer in zip(sendable, answers):
                learnt = {"pf_ifname": answer.request.port.pf_ifname, "vf": answer.request.port.vf}
                results[record.key] = (None, learnt) if answer.ok else (PeerRefused(answer.message), {})
        return results

    @staticmethod
    def _qbh_port(record: Record) -> Any:
        """The PF/VF to address: resolved from sysfs now, or as journaled when the interface is gone."""
        from vdp import qbh

        try:
            return qbh.resolve_port(record.data["ifname"])
        except HookError:
            if "pf_ifname" not in record.data:
                raise
            pf = record.data["pf_ifname"]
            index = _ifindex(pf)
            if index is None:
                raise
            return qbh.QbhPort(record.data["ifname"], pf, index, record.data.get("vf"))

    # ------------------------------------------------------------------------------------------ teardown
    def teardown(self, records: Sequence[Record], ctx: Context) -> list[Outcome]:
        """DISASSOCIATE every record over the transport its VSI was made with, all in flight together.

        Done only when lldpad reports the switch's answer or that it holds nothing for the VSI; anything
        else (no answer, lldpad busy with an unanswered request, lldpad gave up) leaves the record pending.
        The same for every reason libvirt gives (``release end``'s last argument since libvirt 10.5)."""
        from hooks.transaction import release_reason

        reason = release_reason(ctx.event.extra) if ctx.event.hook == ("release", "end") else "-"
        note = "{} on {}"
        hint = "none"
        if reason == "migrated":
            # This is the source of a finished migration: the guest runs elsewhere and this host withdraws
            # its side.  The S bit (hint "from") is asked for, but lldpad repeats the hints a VSI was created
            # with (measured: see tests/lab/test_clif.py), so a switch never sees it from lldpad; a VSI the
            # switch already moved to the destination is one lldpad holds no more (done).
            hint = "from"
            note = "{} on {} (the guest migrated: it runs on another host now)"
        results = self._send(records, DISASSOCIATE, ctx, hint=hint)
        outcomes = []
        for r in records:
            error, learnt = results.get(r.key, (None, {}))
            if learnt.get(_UNANSWERED_NOW) and UNANSWERED not in r.data:
                # Saved with the record's pending state: a later refusal says since when lldpad waits.
                r.data[UNANSWERED] = [time.time(), f"{ctx.event.op} {ctx.event.subop}"]
            outcomes.append(Outcome(r.key, error, note.format(learnt.get(_HOW, "disassociated"), r.data["ifname"])))
        return outcomes

    def declared(self, event: Event) -> list[tuple[str, str, Mapping[str, Any]]]:
        return [(p.key, "associate", _port_data(p, self._ifname(p))) for p in event.ports if p.kind in ("qbg", "qbh")]

    # ------------------------------------------------------------------------------------------ preflight
    def _preflight(self, event: Event, ctx: Context) -> list[Outcome]:
        """Cheap host-side checks before anything is reserved; one verdict per uplink, reused per port."""
        verdicts: dict[tuple[str, str], HookError | None] = {}
        give_up = min(ctx.deadline.at, time.monotonic() + self.config.exchange_timeout)

        def verdict(proto: str, ifname: str) -> HookError | None:
            if (proto, ifname) not in verdicts:
                verdicts[(proto, ifname)] = self._check_uplink_when_ready(proto, ifname, give_up, ctx)
            return verdicts[(proto, ifname)]

        outcomes = []
        for p in event.ports:
            if p.kind in ("qbg", "qbh"):
                ifname = self._ifname(p)
                error = verdict(p.kind, ifname)
                where = f"uplink {p.uplink} ({self.config.uplink_origin(p.uplink or '')})"
                note = f"preflight {p.kind} on {ifname} passed"
                outcomes.append(Outcome(p.key, error and _prefixed(where, error), note))
        for n in self._native(event):
            error = n.error
            for address in n.pci if error is None else ():
                found = self._check_qbh_pci(address)
                if found is not None:
                    # A hostdev interface names its address already; a network's pool names the VF.
                    error = _prefixed(n.where if address in n.where else f"{n.where}, VF {address}", found)
                    break
            # Every device libvirt may pick (it goes by connection count, never by link state).
            for ifname in n.uplinks if error is None else ():
                found = verdict(n.proto, ifname)
                if found is not None:
                    error = _prefixed(f"{n.where}, uplink {ifname}" if ifname else n.where, found)
                    break
            checked = ", ".join([*n.uplinks, *(f"PCI {a}" for a in n.pci)])
            # Nothing named to check: libvirt itself refuses such a network before anything runs.
            note = f"preflight of {n.where} on {checked} passed" if checked else f"{n.where}: no device to check"
            outcomes.append(Outcome(n.key, error, note))
        return outcomes

    def _check_uplink_when_ready(self, proto: str, ifname: str, give_up: float, ctx: Context) -> HookError | None:
        """:meth:`_check_uplink`, waiting (as prepare begin does, vdp.readiness) for an lldpad that started
        moments ago: a guest restored or migrated in at host boot meets lldpad before EVB is up.  An lldpad
        that has run for a while, or none at all, is answered at once."""
        error = self._check_uplink(proto, ifname)
        if proto != "qbg" or not isinstance(error, PeerUnavailable) or link_state(ifname):
            return error
        from vdp import lldpad, readiness

        pid = lldpad.find_lldpad_pid()
        age = readiness.lldpad_age(pid) if pid is not None else None
        if age is None or age >= readiness.YOUNG:
            return error
        start = time.monotonic()
        while isinstance(error, PeerUnavailable) and time.monotonic() + readiness.RETRY < give_up:
            ctx.log.info("lldpad started %.1f s ago and is not ready (%s); retrying", age, error.text)
            time.sleep(readiness.RETRY)
            error = self._check_uplink(proto, ifname)
        if not isinstance(error, PeerUnavailable):
            return error
        return readiness.NotReady(
            f"{error.text}; still so after waiting {time.monotonic() - start:.1f} s for lldpad (started "
            f"{age:.0f} s before) to become ready",
            hint=error.hint_text or None,
        )

    def _check_uplink(self, proto: str, ifname: str) -> HookError | None:
        problem = link_state(ifname) if ifname else "the interface has no source device"
        if problem:
            return PeerUnavailable(problem)
        try:
            if proto == "qbg":
                self._check_qbg(ifname)
            else:
                self._check_qbh(ifname)
        except HookError as exc:
            return exc
        return None

    def _check_qbg(self, ifname: str) -> None:
        from vdp import clif, lldpad

        if clif.library_available():
            with clif.Clif() as conn:
                conn.ping()
                evb = conn.evb_status(ifname)
                if not evb.negotiated:
                    raise PeerUnavailable(
                        f"EVB is not negotiated on {ifname}: the switch port does not run 802.1Qbg (EVB) or "
                        "lldpad is not configured for it",
                        hint=f"lldptool -L -i {ifname} -g ncb adminStatus=rxtx; "
                        f"lldptool -T -i {ifname} -g ncb -V evb -c enabletx=yes; check the switch port",
                    )
                if conn.vdp_mode(ifname) is None:
                    raise PeerUnavailable(
                        f"VDP is not configured on {ifname} in lldpad",
                        hint=f"lldptool -T -i {ifname} -g ncb -V evb -c enabletx=yes; "
                        f"lldptool -T -i {ifname} -g ncb -V evb -c evbmode=station",
                    )
        elif lldpad.find_lldpad_pid() is None:
            raise PeerUnavailable("lldpad is not running", hint="start lldpad (systemctl start lldpad)")
        else:
            with lldpad.LldpadClient(exchange_timeout=self.config.exchange_timeout) as client:
                client.table(ifname)  # lldpad refuses uplinks without VDP with a clear error

    def _check_qbh(self, ifname: str) -> None:
        from vdp import qbh

        self._check_qbh_port(qbh.resolve_port(ifname))

    def _check_qbh_port(self, port: Any) -> None:
        from vdp import qbh

        with qbh.QbhClient(dest_pid=_qbh_destination(), exchange_timeout=self.config.exchange_timeout) as client:
            if not client.supports_port_profiles(port):
                raise PeerRefused(
                    f"{port.describe()} cannot do 802.1Qbh port profiles (its driver has no port-profile support)",
                    hint="use a Cisco VIC (enic) or another adapter whose driver implements port profiles",
                )

    def _check_qbh_pci(self, address: str) -> HookError | None:
        """A VF named by PCI address (``type='hostdev'``): its PF must be here, up, and do port profiles."""
        from vdp import qbh

        try:
            port = qbh.resolve_pci(address)
            problem = link_state(port.pf_ifname)
            if problem:
                raise PeerUnavailable(f"its PF: {problem}")
            self._check_qbh_port(port)
        except HookError as exc:
            return exc
        return None

    # ------------------------------------------------------------------------------------------ reconnect
    def _reconnect(self, ctx: Context) -> list[Outcome]:
        """After a libvirtd restart: re-associate what lldpad or the driver no longer holds.

        The framework never lets this veto (a failing ``reconnect`` makes libvirt kill the guest); each
        protocol is checked on its own so that lldpad being down does not hide a lost Qbh port.
        """
        # lldpad restarted along with libvirtd (an upgrade, a network restart) takes a few seconds before it
        # takes requests (EVB negotiation): wait for it, within the exchange timeout, rather than leave the
        # guest without its associations until somebody notices.
        give_up = min(ctx.deadline.at, time.monotonic() + self.config.exchange_timeout)
        final: dict[str | None, Outcome] = {}
        while True:
            for o in self._reconnect_once(ctx):
                if final.get(o.key) is None or not final[o.key].ok:  # a success in an earlier round stands
                    final[o.key] = o
            waiting = [o for o in final.values() if isinstance(o.error, PeerUnavailable)]
            if not waiting or time.monotonic() + _RECONNECT_RETRY >= give_up:
                return list(final.values())
            ctx.log.info("lldpad or the switch is not ready (%s); retrying", waiting[0].error)
            time.sleep(_RECONNECT_RETRY)

    def _reconnect_once(self, ctx: Context) -> list[Outcome]:
        associated = ctx.journaled("associate")
        lost: list[Record] = []
        outcomes: list[Outcome] = []
        for proto, check in (("qbg", self._lost_qbg), ("qbh", self._lost_qbh)):
            mine = [r for r in associated if r.data.get("proto") == proto]
            if not mine:
                continue
            try:
                gone = check(mine)
            except HookError as exc:
                outcomes += [Outcome(r.key, exc) for r in mine]
                continue
            lost += gone
            outcomes += [Outcome(r.key, None, "still associated") for r in mine if r not in gone]
        if lost:
            results = self._send(lost, ASSOCIATE, ctx, hint="none")
            for r in lost:
                error = results.get(r.key, (None, {}))[0]
                outcomes.append(Outcome(r.key, error, "the association was lost: associated again"))
        return outcomes

    def _lost_qbg(self, records: Sequence[Record]) -> list[Record]:
        from vdp import lldpad

        lost = []
        with lldpad.LldpadClient(exchange_timeout=self.config.exchange_timeout) as client:
            for ifname in sorted({r.data["ifname"] for r in records}):
                live = {str(s.instance): s for s in client.table(ifname)}
                for r in records:
                    if r.data["ifname"] == ifname:
                        state = live.get(r.data["instance"])
                        if state is None or state.response not in (0, None):
                            lost.append(r)
        return lost

    def _lost_qbh(self, records: Sequence[Record]) -> list[Record]:
        from vdp import nlmsg, qbh

        keep = (nlmsg.PORT_PROFILE_RESPONSE_SUCCESS, nlmsg.PORT_PROFILE_RESPONSE_INPROGRESS)
        lost = []
        with qbh.QbhClient(dest_pid=_qbh_destination(), exchange_timeout=self.config.exchange_timeout) as client:
            for r in records:
                state = client.status(self._qbh_port(r))
                if (
                    state is None
                    or state.request != ASSOCIATE
                    or str(state.instance) != r.data["instance"]
                    or state.response not in keep
                ):
                    lost.append(r)
        return lost

    # ------------------------------------------------------------------------------------------ admin
    def live_state(self, records: Sequence[Record]) -> dict[str, str]:
        from vdp import lldpad

        states: dict[str, str] = {}
        qbg = [r for r in records if r.data.get("proto") == "qbg"]
        if not qbg:
            return {r.key: "" for r in records}
        with lldpad.LldpadClient(exchange_timeout=self.config.exchange_timeout) as client:
            for ifname in sorted({r.data["ifname"] for r in qbg}):
                live = {str(s.instance): s for s in client.table(ifname)}
                for r in qbg:
                    if r.data["ifname"] != ifname:
                        continue
                    state = live.get(r.data["instance"])
                    if state is None:
                        states[r.key] = "missing from lldpad"
                    elif state.response is None:
                        states[r.key] = "in progress"
                    elif state.response == 0 and r.state == "pending":
                        # E.g. a late SUCCESS after a veto: the switch holds a VSI this host wants gone.
                        states[r.key] = (
                            "associated (status 0) though its teardown is pending: the next release end withdraws it"
                        )
                    else:
                        states[r.key] = "ok (status 0)" if state.response == 0 else f"status {state.response}"
        return states

    def check(self) -> list[CheckResult]:
        from vdp import clif, lldpad

        results = []
        if self.settings["associate_at"] == "resume":
            results.append(
                CheckResult("associate_at = resume", "WARN", "not available yet: associating at started begin")
            )
        if not clif.library_available():
            results.append(CheckResult("liblldp_clif.so.1 loads", "WARN", "install lldpad (needed for 802.1Qbg)"))
        pid = lldpad.find_lldpad_pid()
        if pid is None:
            # A host with only 802.1Qbh ports needs no lldpad; the preflight vetoes guests that do, so
            # where ports are required by default that is a failure waiting for the next guest.
            if self.config.feature_required(self.name):
                hint = (
                    f"start lldpad: 802.1Qbg ports are required here ([{self.name}] required), "
                    "so every guest with one is refused"
                )
                results.append(CheckResult("lldpad is running", "FAIL", hint))
            else:
                results.append(CheckResult("lldpad is running", "WARN", "start lldpad if guests here use 802.1Qbg"))
            return results
        results.append(CheckResult(f"lldpad is running (pid {pid})", "PASS"))
        for logical, ifname in sorted(self.config.uplinks.items()):
            error = self._check_uplink("qbg", ifname)
            what = f"802.1Qbg on uplink {logical} ({ifname})"
            results.append(CheckResult(what, "FAIL" if error else "PASS", error.one_line() if error else ""))
        return results
