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

Interfaces libvirt manages itself (``type='direct'`` + ``<virtualport type='802.1Qbg|802.1Qbh'>``) get the
preflight only, so a migration libvirt would fail at Finish, after the RAM transfer, is refused up front.

Wire clients (``vdp.lldpad``, ``vdp.clif``, ``vdp.qbh``) are imported only when a request is due: the
class itself must stay cheap to import because the framework loads it for every guest that has metadata.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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
_RECONNECT_RETRY = 0.5  # seconds between attempts while lldpad is not ready at reconnect


@contextlib.contextmanager
def _uplink_locks(ifnames: Sequence[str], deadline: float) -> Iterator[None]:
    """One VDP request in flight per uplink across hook processes: lldpad 1.1 loses switch responses
    when several VSIs of one uplink are pending at once (measured: 4 in 20 four-VSI bursts)."""
    from hooks.runner import state_dir

    fds = []
    try:
        for ifname in ifnames:  # sorted by the caller: no lock-order deadlock between processes
            fd = os.open(os.path.join(state_dir(), f"uplink-{ifname}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(fd)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DeadlineExceeded(f"uplink {ifname} stayed busy with other guests' requests") from None
                    time.sleep(0.002)
        yield
    finally:
        for fd in fds:
            os.close(fd)


def _carried(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a later request for the same port takes over from an earlier one's journal record."""
    return {k: data[k] for k in ("vlan", "pf_ifname", "vf") if k in data}


def _ifindex(ifname: str) -> int | None:
    import socket

    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def _port_data(port: PortSpec, ifname: str) -> dict[str, Any]:
    """Everything needed to rebuild the port's requests later, from the journal alone."""
    data: dict[str, Any] = {
        "proto": port.kind,
        "uplink": port.uplink,
        "ifname": ifname,
        "mac": port.mac,
        "vlan": port.vlan,
        "instance": str(port.instance),
    }
    if port.kind == "qbg":
        data.update({k: int(port.params[k]) for k in ("managerid", "typeid", "typeidversion")})
    else:
        data["profile"] = port.params["profileid"]
    return data


class VdpFeature(Feature):
    """802.1Qbg (VDP through lldpad) and 802.1Qbh (port profiles through the kernel)."""

    name = "vdp"
    markers = (b"<virtualport",)
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
    }

    def describe(self) -> str:
        return "802.1Qbg VDP through lldpad, 802.1Qbh port profiles through the kernel"

    # ------------------------------------------------------------------------------------------ targets
    @staticmethod
    def _native(event: Event) -> list[Interface]:
        return [i for i in event.interfaces if i.virtualport_type in ("802.1Qbg", "802.1Qbh") and i.type == "direct"]

    def targets(self, event: Event) -> list[str]:
        keys = [p.key for p in event.ports]
        if event.hook in _PREFLIGHT:
            keys += [i.mac for i in self._native(event)]
        return keys

    def _ifname(self, port: PortSpec) -> str:
        return self.config.uplink(port.uplink or "")

    # ------------------------------------------------------------------------------------------ setup
    def setup(self, event: Event, ctx: Context) -> list[Outcome]:
        hook = event.hook
        if hook in _PREFLIGHT:
            return self._preflight(event)
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
        records = ctx.intend_many(
            (p.key, kind, {**_port_data(p, self._ifname(p)), **_carried(before.get(p.key, {}))}) for p in ports
        )
        hint = "to" if ctx.incoming else "none"
        results = self._send(records, request, ctx, hint=hint)
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
        from vdp import lldpad

        results: dict[str, tuple[HookError | None, dict[str, Any]]] = {}
        # Asked once per uplink (each answer is a round trip to lldpad's client interface).
        vdp22 = {i: self._vdp22(i) for i in {r.data["ifname"] for r in records}} if hint != "none" else {}
        hinted = [r for r in records if vdp22.get(r.data["ifname"])]
        if hinted:
            results.update(self._send_qbg_hinted(hinted, request, ctx, hint=hint))
        plain = [r for r in records if r.key not in results]
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
        with client, _uplink_locks(sorted({r.ifname for r in requests}), ctx.deadline.at):
            answers = client.submit(requests, deadline=ctx.deadline.at)
        for record, answer in zip(plain, answers):
            if answer.ok:
                results[record.key] = (None, {"vlan": answer.vlan} if answer.vlan is not None else {})
            elif answer.errno == -errno.EPROTONOSUPPORT:  # no switch to ask yet (EVB not negotiated)
                results[record.key] = (PeerUnavailable(f"{record.data['ifname']}: {answer.message}"), {})
            else:
                results[record.key] = (PeerRefused(f"{record.data['ifname']}: {answer.message}"), {})
        return results

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
            with clif.Clif() as conn:
                replies = conn.vsi_many(commands, wait=self.config.exchange_timeout, deadline=ctx.deadline.at)
        except HookError as exc:  # lldpad's client interface is unreachable: nothing was sent
            return {r.key: (exc, {_UNSENT: True}) for r in records}
        for r, reply in zip(records, replies):
            if isinstance(reply, HookError):
                results[r.key] = (reply, {_UNSENT: True} if isinstance(reply, clif.NotSent) else {})
            elif reply.ok:
                learnt = {"hint": hint} if reply.vlan is None else {"vlan": reply.vlan, "hint": hint}
                results[r.key] = (None, learnt)
            else:
                results[r.key] = (PeerRefused(f"{r.data['ifname']}: {reply.message}"), {})
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
        """DISASSOCIATE every record, all in flight together; gone already counts as done."""
        # libvirt >= 10.5 says why the guest is released; "migrated" means this is the source host.
        hint = "from" if ctx.event.extra == "migrated" else "none"
        results = self._send(records, DISASSOCIATE, ctx, hint=hint)
        return [
            Outcome(r.key, results.get(r.key, (None, {}))[0], f"disassociated on {r.data['ifname']}") for r in records
        ]

    def declared(self, event: Event) -> list[tuple[str, str, Mapping[str, Any]]]:
        return [(p.key, "associate", _port_data(p, self._ifname(p))) for p in event.ports if p.kind in ("qbg", "qbh")]

    # ------------------------------------------------------------------------------------------ preflight
    def _preflight(self, event: Event) -> list[Outcome]:
        """Cheap host-side checks before anything is reserved; one verdict per uplink, reused per port."""
        verdicts: dict[tuple[str, str], HookError | None] = {}
        outcomes = []
        wanted = [(p.key, p.kind, self._ifname(p)) for p in event.ports if p.kind in ("qbg", "qbh")]
        wanted += [
            (i.mac, "qbg" if i.virtualport_type == "802.1Qbg" else "qbh", i.source_dev or "")
            for i in self._native(event)
        ]
        for key, proto, ifname in wanted:
            if (proto, ifname) not in verdicts:
                verdicts[(proto, ifname)] = self._check_uplink(proto, ifname)
            error = verdicts[(proto, ifname)]
            outcomes.append(Outcome(key, error, f"preflight {proto} on {ifname} passed"))
        return outcomes

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

        port = qbh.resolve_port(ifname)
        with qbh.QbhClient(dest_pid=_qbh_destination(), exchange_timeout=self.config.exchange_timeout) as client:
            if not client.supports_port_profiles(port):
                raise PeerRefused(
                    f"{ifname} cannot do 802.1Qbh port profiles (its driver has no port-profile support)",
                    hint="use a Cisco VIC (enic) or another adapter whose driver implements port profiles",
                )

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
            # A host with only 802.1Qbh ports needs no lldpad; the preflight vetoes guests that do.
            results.append(CheckResult("lldpad is running", "WARN", "start lldpad if guests here use 802.1Qbg"))
            return results
        results.append(CheckResult(f"lldpad is running (pid {pid})", "PASS"))
        for logical, ifname in sorted(self.config.uplinks.items()):
            error = self._check_uplink("qbg", ifname)
            what = f"802.1Qbg on uplink {logical} ({ifname})"
            results.append(CheckResult(what, "FAIL" if error else "PASS", error.one_line() if error else ""))
        return results
