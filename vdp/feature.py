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

Ports libvirt manages itself get the preflight only (``vdp.native``), so a migration libvirt would fail at
Finish, after the RAM transfer, is refused up front.

This module is the feature's shape: options, markers, what each operation does (and its teardown beside
it), which backend serves which kind of port -- ``vdp.qbg.session`` (802.1Qbg through lldpad) and
``vdp.profiles`` (802.1Qbh through the kernel) -- on the typed ports of ``vdp.ports``; host checks are
``vdp.checks``.  (Still ~450 lines: reconnect and the admin views sit with the actions they report on.)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from hooks.agentfile import agent_port
from hooks.boot import on_first_use
from hooks.config import Option
from hooks.errors import HookError, PeerRefused, PeerUnavailable
from hooks.event import Event, PortSpec
from hooks.feature import CheckResult, Context, Feature, Outcome
from hooks.journal import Record
from hooks.plain import replace
from hooks.runner import state_dir
from hooks.transaction import release_reason
from vdp import messages, native, ports
from vdp.ports import VIA_CLIF, VIA_NETLINK, PortResult, QbgPort, QbhPort, Request

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
# Any: settings are parsed config values, journal data is JSON.
if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar

    from hooks.config import Config
    from vdp import checks, profiles
    from vdp.qbg import session
    from vdp.qbg.session import QbgSession
else:
    # Loaded when a request or check is due: they bring pyroute2 and the netlink sockets (6-20 ms), which
    # the operations that send nothing (``start begin``, a fresh start's ``started begin``) never pay, and
    # a guest with only 802.1Qbg ports never loads 802.1Qbh's (hooks/boot.py: on_first_use).
    session = on_first_use("vdp.qbg.session")
    checks = on_first_use("vdp.checks")
    profiles = on_first_use("vdp.profiles")

__all__ = ["VdpFeature"]

PREASSOCIATE_RR, ASSOCIATE, DISASSOCIATE = Request.PREASSOCIATE_RR, Request.ASSOCIATE, Request.DISASSOCIATE
_PREFLIGHT = frozenset({("migrate", "begin"), ("restore", "begin")})
#: Journaled in a record's data when a withdrawal went unanswered: [time, op] of the first such request.
#: (A record's ``created`` is when its setup request went out: the unanswered one, if that was it.)
UNANSWERED = "unanswered"
_RECONNECT_RETRY = 0.5  # seconds between attempts while lldpad is not ready at reconnect


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"'{text}' is not one of {', '.join(allowed)}")
        return value

    return parse


def _count(text: str) -> int:
    value = int(text.strip())
    if not 0 < value <= 4096:
        raise ValueError(f"'{text}' is not a count from 1 to 4096")
    return value


def _typed(record: Record) -> QbgPort | QbhPort:
    return ports.from_journal(record.data)


def _qbg(records: Sequence[Record]) -> list[tuple[str, QbgPort]]:
    return [(r.key, p) for r, p in ((r, _typed(r)) for r in records) if isinstance(p, QbgPort)]


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
            "'resume' (by the agent, right after the guest resumed: cannot veto; without the agent: 'started')",
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

    def __init__(self, config: Config, settings: Mapping[str, Any]) -> None:
        super().__init__(config, settings)
        self._native = native.NativePorts()

    def describe(self) -> str:
        return "802.1Qbg VDP through lldpad, 802.1Qbh port profiles through the kernel"

    @classmethod
    def wants(cls, raw: bytes) -> bool:
        # type='network' guests only when one of their networks here carries a Qbg/Qbh virtualport.
        return super().wants(raw) or native.wants(raw)

    def targets(self, event: Event) -> list[str]:
        keys = [p.key for p in event.ports]
        if event.hook in _PREFLIGHT:
            keys += [n.key for n in self._native.of(event)]
        return keys

    def _session(self, ctx: Context | None = None) -> QbgSession:
        return session.QbgSession(
            exchange_timeout=self.config.exchange_timeout,
            deadline=ctx.deadline.at if ctx is not None else None,
            invocation_timeout=self.config.invocation_timeout,
            hints=self.settings["hints"],
        )

    def _port(self, spec: PortSpec) -> QbgPort | QbhPort:
        """The spec's typed port (``vdp.ports``) on the uplink's interface here."""
        typed = spec.port
        if not isinstance(typed, (QbgPort, QbhPort)):  # hooks.event parsed it with vdp.ports.parse
            raise TypeError(f"{spec.where}: not a VDP port")
        return replace(typed, ifname=self.config.uplink(spec.uplink or ""))

    # ------------------------------------------------------------------------------------------ actions
    def setup(self, event: Event, ctx: Context) -> list[Outcome]:
        """The action table: preflight (migrate/restore begin), ASSOCIATE or PREASSOCIATE_RR (prepare begin),
        ASSOCIATE of the reservation (started begin, incoming), verification (reconnect begin).  Their
        teardown is :meth:`teardown`, below."""
        hook = event.hook
        declared = [p for p in event.ports if p.kind in ports.KINDS]
        if len(declared) > self.settings["max_ports"] and hook != ("reconnect", "begin"):
            cap = self.settings["max_ports"]
            refusal = PeerRefused(
                f"the guest declares {len(declared)} VDP ports, more than max_ports = {cap}",
                hint="declare fewer ports, or raise max_ports in [vdp] of vdp-hooks.conf",
            )
            return [Outcome(None, refusal)]
        if hook in _PREFLIGHT:
            give_up = min(ctx.deadline.at, time.monotonic() + self.config.exchange_timeout)
            with self._session(ctx) as qbg:
                return checks.preflight(event, self._native.of(event), self.config, qbg, give_up, ctx.log)
        if hook == ("prepare", "begin"):
            return self._request(declared, PREASSOCIATE_RR if ctx.incoming else ASSOCIATE, ctx)
        if hook == ("started", "begin"):
            if not ctx.incoming:
                return []
            if self.settings["associate_at"] == "resume":
                if agent_port(state_dir()) is not None:
                    # The agent associates once the guest resumed (hooks.libvirtsync): that cannot veto.
                    ctx.log.info("associate_at = resume: the agent associates the reserved ports after the resume")
                    return []
                ctx.log.warning("associate_at = resume needs the agent, which is not running; associating now")
            return self.associate_reserved(event, ctx)
        if hook == ("reconnect", "begin"):
            return self._reconnect(ctx)
        return []

    def associate_reserved(self, event: Event, ctx: Context) -> list[Outcome]:
        """ASSOCIATE (hint "to") what ``prepare begin`` reserved: at ``started begin``, or from the agent
        after the incoming guest resumed (``associate_at = resume``)."""
        reserved = ctx.journaled("reserve")
        # Associate what was reserved, as the switch answered it (e.g. the VLAN it assigned).
        learnt = {r.key: r.data for r in reserved}
        declared = [p for p in event.ports if p.kind in ports.KINDS]
        outcomes = self._request(declared, ASSOCIATE, ctx, learnt=learnt)
        done = {o.key for o in outcomes if o.ok}
        # The association supersedes the reservation: one record per port from here on.
        ctx.forget([r for r in reserved if r.key in done])
        return outcomes

    def reassociate(self, ctx: Context) -> list[Outcome]:
        """ASSOCIATE every associated port again, held or not (the agent, when the source of a failed
        outgoing migration resumed): lldpad sends a repeated ASSOCIATE to the switch (measured), and a switch
        that moved the VSI to the destination, or holds it for a migration timeout, takes it back."""
        records = [r for r in ctx.journaled("associate") if r.state == "done"]
        with self._session(ctx) as qbg:
            results = self._send(records, ASSOCIATE, ctx, qbg, hint="none")
        return [
            Outcome(
                r.key,
                self._error(results.get(r.key) or PortResult(r.key), r, ASSOCIATE, ctx),
                f"associated again on {r.data['ifname']}",
            )
            for r in records
        ]

    def teardown(self, records: Sequence[Record], ctx: Context) -> list[Outcome]:
        """DISASSOCIATE every record over the transport its VSI was made with, all in flight together.

        Done only when lldpad reports the switch's answer or that it holds nothing for the VSI; anything
        else (no answer, lldpad busy with an unanswered request, lldpad gave up) leaves the record pending.
        The same for every reason libvirt gives (``release end``'s last argument since libvirt 10.5)."""
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
        with self._session(ctx) as qbg:
            results = self._send(records, DISASSOCIATE, ctx, qbg, hint=hint)
        outcomes = []
        for r in records:
            result = results.get(r.key) or PortResult(r.key)
            if result.unanswered and UNANSWERED not in r.data:
                # Saved with the record's pending state: a later refusal says since when lldpad waits.
                r.data[UNANSWERED] = [time.time(), f"{ctx.event.op} {ctx.event.subop}"]
            error = self._error(result, r, DISASSOCIATE, ctx)
            outcomes.append(Outcome(r.key, error, note.format(result.how or "disassociated", r.data["ifname"])))
        return outcomes

    def declared(self, event: Event) -> list[tuple[str, str, Mapping[str, Any]]]:
        return [(p.key, "associate", self._port(p).journal()) for p in event.ports if p.kind in ports.KINDS]

    # ------------------------------------------------------------------------------------------ requests
    def _request(
        self,
        specs: Sequence[PortSpec],
        request: Request,
        ctx: Context,
        *,
        learnt: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[Outcome]:
        """Journal intent for every port, send all requests together, confirm what succeeded.

        ``learnt`` (port key -> journaled data) overrides the XML's values with what an earlier exchange
        established for the same port, such as a switch-assigned VLAN."""
        kind = "reserve" if request == PREASSOCIATE_RR else "associate"
        if not specs:
            return []
        before = learnt or {}
        hint = "to" if ctx.incoming else "none"
        with self._session(ctx) as qbg:
            # Migration hints go only through lldpad's client interface, and only on VDP22 uplinks (asked
            # once per uplink); the transport is journaled with the intent, before anything is sent.
            # A VSI lldpad already holds (the reservation before an association) keeps the way it was made.
            items = [(p.key, kind, {**self._port(p).journal(), **ports.carried(before.get(p.key, {}))}) for p in specs]
            for _, _, data in items:
                if data["proto"] == "qbg" and "via" not in data:
                    hinted = hint != "none" and qbg.runs_vdp22(data["ifname"])
                    data["via"] = VIA_CLIF if hinted else VIA_NETLINK
            records = ctx.intend_many(items)
            results = self._send(records, request, ctx, qbg, hint=hint, wait_ready=True)
        outcomes = []
        confirmed, updates = [], {}
        for record in records:
            result = results.get(record.key) or PortResult(record.key)
            if result.ok:
                confirmed.append(record)
                updates[record.key] = result.learnt
                note = f"{request.verb} on {record.data['ifname']}"
                if record.data["proto"] == "qbg":
                    note += f" vlan {result.learnt.get('vlan', record.data['vlan'])}"
                outcomes.append(Outcome(record.key, None, note))
            else:
                if result.unsent:
                    ctx.forget([record])  # the request never left this host: nothing to tear down
                outcomes.append(Outcome(record.key, self._error(result, record, request, ctx)))
        if confirmed:
            ctx.confirm(confirmed, updates)
        return outcomes

    def _send(
        self,
        records: Sequence[Record],
        request: Request,
        ctx: Context,
        qbg: QbgSession,
        *,
        hint: str,
        wait_ready: bool = False,
    ) -> dict[str, PortResult]:
        """Send ``request`` for every record, each kind through its backend."""
        results: dict[str, PortResult] = {}
        typed = [(r.key, _typed(r)) for r in records]
        qbg_ports = [(k, p) for k, p in typed if isinstance(p, QbgPort)]
        qbh_ports = [(k, p) for k, p in typed if isinstance(p, QbhPort)]
        try:
            if qbg_ports:
                results.update(qbg.send(qbg_ports, request, hint=hint, wait_ready=wait_ready, log=ctx.log))
        except HookError as exc:
            results.update({k: PortResult(k, exc) for k, _ in qbg_ports})
        try:
            if qbh_ports:
                results.update(
                    profiles.send(
                        qbh_ports,
                        request,
                        deadline=ctx.deadline.at,
                        exchange_timeout=self.config.exchange_timeout,
                        host_uuid_setting=self.settings["host_uuid"],
                    )
                )
        except HookError as exc:
            results.update({k: PortResult(k, exc) for k, _ in qbh_ports})
        return results

    def _error(self, result: PortResult, record: Record, request: Request, ctx: Context) -> HookError | None:
        """The result's error; for a request lldpad refused because an earlier one for the VSI still lacks
        the switch's answer, saying since when -- the oldest of the VSI's unanswered withdrawals (journaled
        as UNANSWERED) and unconfirmed setup requests (a record's creation) is the one lldpad still holds."""
        if not result.stuck:
            return result.error
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
        what = f"{request.label} on {ifname}"
        ended = result.stuck == "ended"
        return PeerRefused(messages.stuck_message(what, since=since, ended=ended, uplink=ifname))

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
            with self._session(ctx) as qbg:  # a new session each round: lldpad may have restarted meanwhile
                for o in self._reconnect_once(ctx, qbg):
                    if final.get(o.key) is None or not final[o.key].ok:  # a success in an earlier round stands
                        final[o.key] = o
            waiting = [o for o in final.values() if isinstance(o.error, PeerUnavailable)]
            if not waiting or time.monotonic() + _RECONNECT_RETRY >= give_up:
                return list(final.values())
            ctx.log.info("lldpad or the switch is not ready (%s); retrying", waiting[0].error)
            time.sleep(_RECONNECT_RETRY)

    def _reconnect_once(self, ctx: Context, qbg: QbgSession) -> list[Outcome]:
        associated = ctx.journaled("associate")
        lost: list[Record] = []
        outcomes: list[Outcome] = []
        for proto, check in (("qbg", self._lost_qbg), ("qbh", self._lost_qbh)):
            mine = [r for r in associated if r.data.get("proto") == proto]
            if not mine:
                continue
            try:
                gone = check(mine, qbg)
            except HookError as exc:
                outcomes += [Outcome(r.key, exc) for r in mine]
                continue
            lost += gone
            outcomes += [Outcome(r.key, None, "still associated") for r in mine if r not in gone]
        if lost:
            results = self._send(lost, ASSOCIATE, ctx, qbg, hint="none")
            for r in lost:
                error = self._error(results.get(r.key) or PortResult(r.key), r, ASSOCIATE, ctx)
                outcomes.append(Outcome(r.key, error, "the association was lost: associated again"))
        return outcomes

    def _lost_qbg(self, records: Sequence[Record], qbg: QbgSession) -> list[Record]:
        live = qbg.live(_qbg(records))
        lost = []
        for ifname in sorted({r.data["ifname"] for r in records}):
            for r in records:
                if r.data["ifname"] == ifname:
                    state = live.get(r.key)
                    if state is None or state.response not in (0, None):
                        lost.append(r)
        return lost

    def _lost_qbh(self, records: Sequence[Record], qbg: QbgSession) -> list[Record]:
        typed = [(r.key, _typed(r)) for r in records]
        qbh = [(key, port) for key, port in typed if isinstance(port, QbhPort)]  # the caller passes qbh only
        gone = set(profiles.lost(qbh, self.config.exchange_timeout))
        return [r for r in records if r.key in gone]

    # ------------------------------------------------------------------------------------------ admin
    def live_state(self, records: Sequence[Record]) -> dict[str, str]:
        qbg_records = [r for r in records if r.data.get("proto") == "qbg"]
        if not qbg_records:
            return {r.key: "" for r in records}
        states: dict[str, str] = {}
        with self._session() as qbg:
            live = qbg.live(_qbg(qbg_records))
        for r in qbg_records:
            state = live.get(r.key)
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
        results = []
        if self.settings["associate_at"] == "resume" and agent_port(state_dir()) is None:
            hint = "needs the agent (not running): associating at started begin"
            results.append(CheckResult("associate_at = resume", "WARN", hint))
        with self._session() as qbg:
            if not qbg.clif_available():
                results.append(CheckResult("liblldp_clif.so.1 loads", "WARN", "install lldpad (needed for 802.1Qbg)"))
            pid = session.find_lldpad_pid()
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
                    results.append(
                        CheckResult("lldpad is running", "WARN", "start lldpad if guests here use 802.1Qbg")
                    )
                return results
            results.append(CheckResult(f"lldpad is running (pid {pid})", "PASS"))
            for logical, ifname in sorted(self.config.uplinks.items()):
                error = checks.check_uplink("qbg", ifname, qbg, self.config.exchange_timeout)
                what = f"802.1Qbg on uplink {logical} ({ifname})"
                results.append(CheckResult(what, "FAIL" if error else "PASS", error.one_line() if error else ""))
        return results
