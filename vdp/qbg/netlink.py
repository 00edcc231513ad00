"""lldpad's netlink dialogue for 802.1Qbg VSIs: launch, ack, poll, judge (``vdp.qbg.session`` drives it).

Over 400 lines on purpose: one state machine, and most of its length is the measured lldpad 1.1 behaviour
each step works around (kept beside the step it explains; splitting it would separate them).

lldpad listens on a NETLINK_ROUTE socket whose port id is its process id.  A client sends it
``RTM_SETLINK`` requests (the layout libvirt uses, see ``vdp.wire.netlink``) and learns the outcome by polling
``RTM_GETLINK``: lldpad answers with a message of type ``NLMSG_DONE`` carrying the interface's VSI table,
one ``IFLA_VF_PORT`` per VSI, with ``IFLA_PORT_RESPONSE`` present only once the switch has answered.

This client handles all requests of one :meth:`LldpadClient.submit` together (one request in flight per
uplink, all uplinks at once, see there), polling with a short, exponentially growing interval (1 ms,
+25 % per poll, up to 100 ms): a VDP round trip over a LAN takes a few milliseconds, and libvirt's fixed
125 ms interval is what makes its exchanges slow, while a tight fixed loop would flood single-threaded
lldpad when many hooks run at once.

lldpad 1.1 facts the client is built on (measured in the lab against the switch peer, see
tests/lab/test_lldpad_client.py): a VSI's final status is reported once (the GETLINK that shows it
makes lldpad forget the VSI); a refused change of a VSI lldpad already held, once a table read has seen
it pending, is reported only as an unsolicited RTM_SETLINK to the requester's port id (request 3, no
status); a switch-assigned VLAN never appears over netlink (GETLINK replies carry instance, VF and
response only) and is read from lldpad's client interface; after it, lldpad refuses requests for the
VSI that carry VLAN 0 (EINVAL).
"""

from __future__ import annotations

import errno
import socket
import time
import uuid
from collections.abc import Callable, Sequence

from hooks.errors import PeerUnavailable
from hooks.plain import plain
from vdp.messages import VDP22_NONE, VDP22_SUCCESS, errno_message, split_vdp22, stuck_message, vdp22_message
from vdp.rtsocket import RouteSocket
from vdp.wire import netlink as nlmsg
from vdp.wire.netlink import (
    ASSOCIATE,
    DISASSOCIATE,
    NLMSG_DONE,
    NLMSG_ERROR,
    PREASSOCIATE,
    PREASSOCIATE_RR,
    REQUEST_NAMES,
    RTM_NEWLINK,
    RTM_SETLINK,
    PortStatus,
    VsiType,
)

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from vdp.qbg.budget import Budget
    from vdp.qbg.clif import Clif

__all__ = [
    "ASSOCIATE",
    "DISASSOCIATE",
    "PREASSOCIATE",
    "PREASSOCIATE_RR",
    "LldpadClient",
    "VsiRequest",
    "VsiResult",
    "VsiType",
]

#: A DISASSOCIATE is done when lldpad has dropped the VSI after sending it: it drops a VSI once the switch
#: acknowledged the de-association (an unanswered one stays listed until lldpad gives up, then ENODEV).
DISASSOCIATED = "disassociated: the switch answered and lldpad dropped the VSI"
#: lldpad's authoritative "nothing to tear down": it refuses the DISASSOCIATE (EINVAL) and its table has no
#: such VSI.
NOTHING_HELD = "lldpad holds nothing for this VSI (EINVAL, not in its table)"

_POLL_FIRST = 0.001  # first poll this long after the requests were acknowledged
_POLL_GROWTH = 1.25  # then each interval this much longer ...
_POLL_CAP = 0.100  # ... up to this (10 s at most ~120 polls; libvirt makes 80)
#: lldpad answers GETLINK from one 4 KiB buffer (event_iface.c MAX_PAYLOAD; qbg/vdpnl.c vdpnl_getlink) and
#: silently leaves out the VSIs that do not fit: 40 bytes each, so an uplink's ~92 newest (it lists newest
#: first; measured: 92 of 150 listed, 3708 bytes).  From a reply this long, a VSI's absence proves nothing.
_CUT_REPLY = 3600


@plain(frozen=True)
class VsiRequest:
    """One VDP request: the guest's MAC and VLAN on ``ifname`` (the uplink lldpad runs VDP on).

    ``vlan`` 0 asks the switch to assign the VLAN.
    """

    ifname: str
    mac: str
    vlan: int
    vsi_type: VsiType
    instance: uuid.UUID
    request: int


@plain(frozen=True)
class VsiResult:
    """The outcome of one :class:`VsiRequest`.

    ``ok`` is True when the switch accepted (or, for DISASSOCIATE, when the VSI is gone from lldpad).
    ``status``/``error_bits`` are the decoded VDP22 response (None when there was none); ``vlan`` is the
    VLAN in force when known; ``message`` is one admin-facing line.
    """

    request: VsiRequest
    ok: bool
    status: int | None
    error_bits: int
    vlan: int | None
    message: str
    #: lldpad's refusal of the request itself (negative errno), 0 when it took it; -ETIMEDOUT when no
    #: answer came within the exchange timeout (lldpad or the switch silent; lldpad may still be waiting)
    errno: int = 0
    #: lldpad refused because an earlier request for this VSI never got the switch's answer: "busy" (it
    #: still waits, EBUSY) or "ended" (it gave up, ENODEV); "" otherwise.  Not a statement about the switch.
    stuck: str = ""


@plain
class _Pending:
    req: VsiRequest
    ifindex: int
    seq: int
    sent_at: float
    acked: bool = False
    result: VsiResult | None = None
    polls: int = 0
    #: the VLAN on the wire (req.vlan, or the VLAN lldpad holds when a VLAN 0 teardown had to be resent)
    vlan: int = 0
    #: False when lldpad already held the VSI before the request (its old response may still show)
    fresh: bool = False
    resent: bool = False


@plain(frozen=True)
class _Notice:
    """One of lldpad's unsolicited RTM_SETLINK messages about a VSI (it ended: request 3)."""

    request: int | None
    vlan: int | None


class LldpadClient(RouteSocket):
    """A netlink client of lldpad (one NETLINK_ROUTE socket); use as a context manager.

    ``port_id`` goes into ``nlmsg_pid`` of every SETLINK: lldpad sends its later notifications
    (de-association by the switch, keep-alive timeouts) there.  Default: this socket's own port id.
    ``exchange_timeout`` bounds each request from sending to its final answer.  ``clif`` gives the
    session's open client-interface connection (None when there is none): lldpad tells some things only
    there (a switch-assigned VLAN, whether it holds a VSI a cut-short table leaves out).
    """

    def __init__(
        self,
        *,
        lldpad_pid: int | None,
        port_id: int | None = None,
        exchange_timeout: float = 10.0,
        clif: Callable[[], Clif | None] | None = None,
    ) -> None:
        pid = lldpad_pid
        if pid is None:
            raise PeerUnavailable(
                "lldpad is not running (no lldpad answers, no valid /var/run/lldpad.pid)",
                hint="start lldpad (systemctl start lldpad) and configure EVB/VDP on the uplink",
            )
        super().__init__()
        self.lldpad_pid = pid
        self.exchange_timeout = exchange_timeout
        self.port_id = self.own_port_id if port_id is None else port_id
        # What lldpad told this socket outside the reply being waited for (see _note): final responses
        # from any GETLINK reply, and its unsolicited notifications, by VSI instance.
        self._finals: dict[uuid.UUID, int] = {}
        self._tracked: set[uuid.UUID] = set()  # the VSIs this client sent requests for
        self._notices: dict[uuid.UUID, _Notice] = {}
        # lldpad's answers (0 or -errno) to our SETLINKs by seq, also when read while waiting for another
        # reply (e.g. the table read before the next uplink's request).
        self._acks: dict[int, int] = {}
        self._cut = False  # the last table read may have been cut short (see _CUT_REPLY)
        self._clif = clif or (lambda: None)

    # -- plumbing ------------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendto(data, (self.lldpad_pid, 0))
        except ConnectionRefusedError as exc:
            raise PeerUnavailable(
                f"lldpad (pid {self.lldpad_pid}) does not listen on netlink",
                hint="check that lldpad is running in this network namespace (systemctl status lldpad)",
            ) from exc

    def _recv(self, until: float) -> list[tuple[nlmsg.NetlinkHeader, bytes]]:
        """Messages of one datagram (each noted, see _note), or [] when ``until`` passes first."""
        messages = self._recv_messages(until)
        for hdr, msg in messages:
            self._note(hdr, msg)
        return messages

    def _note(self, hdr: nlmsg.NetlinkHeader, msg: bytes) -> None:
        """Remember what a message says about VSIs, whichever request it answers.

        lldpad reports a finished VSI's final status once and then forgets the VSI, so a final status in
        a reply nobody waits for any more (a late one) must not be lost.  Its unsolicited RTM_SETLINK
        (sent to the requester's port id, i.e. this socket, with the seq of the request that created the
        VSI) says the VSI ended -- e.g. the switch refused a change of an existing VSI: lldpad then drops
        the VSI at once and the status itself never reaches netlink (measured with lldpad 1.1).
        """
        if hdr.type == NLMSG_ERROR:
            self._acks[hdr.seq] = nlmsg.decode_error(msg)
            return
        if hdr.length <= 32 or hdr.type not in (NLMSG_DONE, RTM_NEWLINK, RTM_SETLINK):
            return
        try:
            ports = nlmsg.decode_ports(msg, only=self._tracked)  # other clients' VSIs are none of our business
            vfinfo = nlmsg.decode_vfinfo(msg) if hdr.type == RTM_SETLINK else []
        except ValueError:
            return
        for port in ports:
            if port.instance is None:
                continue
            if hdr.type == RTM_SETLINK:
                vlan = vfinfo[0][1] if vfinfo else None
                self._notices[port.instance] = _Notice(port.request, vlan)
            elif port.response is not None and port.response & 0xFF != VDP22_NONE:
                self._finals[port.instance] = port.response

    def _drain(self) -> None:
        """Take in whatever is queued on the socket (notifications, late replies) without waiting."""
        while self._recv(0.0):
            pass

    def _getlink(
        self, ifindex: int, end: float, only: Sequence[uuid.UUID] | None = None
    ) -> list[PortStatus] | int:
        """lldpad's VSI table for ``ifindex`` (with ``only``: just those VSIs), or the errno of its refusal
        (negative)."""
        seq = self._next_seq()
        self._send(nlmsg.encode_getlink(seq=seq, port_id=self.own_port_id, ifindex=ifindex))
        while time.monotonic() < end:
            for hdr, msg in self._recv(end):
                if hdr.seq != seq:
                    continue  # an old reply, or one of lldpad's unsolicited notifications
                if hdr.type == NLMSG_ERROR:
                    err = self._acks.pop(seq, 0)
                    if err:
                        return err
                    continue  # a plain ack
                if hdr.type in (NLMSG_DONE, RTM_NEWLINK):
                    if hdr.length < 32:
                        return []  # NLMSG_DONE without an ifinfomsg: nothing to report
                    self._cut = hdr.length >= _CUT_REPLY
                    return nlmsg.decode_ports(msg, only)
        raise TimeoutError

    # -- public API ----------------------------------------------------------------------------------

    def table(self, ifname: str) -> list[PortStatus]:
        """lldpad's live VSI table for uplink ``ifname`` (GETLINK; read twice, see ``_snapshot``).

        lldpad forgets a VSI once it has reported its final state (e.g. status 252, de-associated), so
        a table read can consume such an entry; VSIs in progress and associated ones stay.
        """
        ifindex = _ifindex(ifname)
        if ifindex is None:
            raise PeerUnavailable(f"interface {ifname} does not exist", hint="check the [uplinks] mapping")
        try:
            end = time.monotonic() + self.exchange_timeout
            first = self._getlink(ifindex, end)
            got = first if isinstance(first, int) else self._merge(first, self._getlink(ifindex, end))
        except TimeoutError:
            raise PeerUnavailable(
                f"lldpad (pid {self.lldpad_pid}) did not answer within {self.exchange_timeout:g} s",
                hint="check lldpad (systemctl status lldpad; its log)",
            ) from None
        if isinstance(got, int):
            raise PeerUnavailable(f"lldpad cannot report VSIs on {ifname}: {errno_message(got)}")
        return got

    def submit(
        self, requests: Sequence[VsiRequest], *, deadline: float | None = None, budget: Budget | None = None
    ) -> list[VsiResult]:
        """Carry out ``requests``; one result per request, in the same order.

        Requests on different uplinks run in parallel; on one uplink they run one after another, each
        sent when the previous one is done: lldpad 1.1 loses switch responses when several VSIs are in
        flight on one uplink (measured in the lab: 4 of 20 four-VSI exchanges on one uplink lost a
        response, none with one VSI per uplink), and a lost response stalls the VSI until the timeout.
        ``deadline`` is a ``time.monotonic()`` value capping the whole call; each request also has
        ``exchange_timeout`` from its sending; when one goes unanswered, the uplink's requests not sent
        yet fail unsent (a silent switch costs one timeout, not one per port).  ``VsiResult.vlan`` is
        the VLAN in force, the switch's choice for VLAN 0 requests when lldpad could be asked.  Raises
        PeerUnavailable when lldpad cannot be reached; every other failure is a result with
        ``ok=False``.  ``budget`` (a :class:`vdp.qbg.budget.Budget`) is asked before each request whether
        the time left covers it; when not, it and the uplink's later requests fail unsent with its reason.
        """
        pending: list[_Pending] = []
        done: dict[int, int] = {}  # per uplink: requests sent and settled (a rollback would undo them)
        queues: dict[int, list[_Pending]] = {}
        for req in requests:
            ifindex = _ifindex(req.ifname)
            p = _Pending(req=req, ifindex=ifindex or 0, seq=0, sent_at=0.0)
            if ifindex is None:
                p.result = _fail(req, f"uplink {req.ifname} does not exist on this host -- check [uplinks]")
            else:
                queues.setdefault(ifindex, []).append(p)
            pending.append(p)

        def end_of(p: _Pending) -> float:
            end = p.sent_at + self.exchange_timeout
            return end if deadline is None else min(end, deadline)

        interval = _POLL_FIRST
        while True:
            # Launch the next request on every uplink that has none in flight.
            launched = []
            for ifindex, queue in queues.items():
                while queue and queue[0].result is not None:
                    head = queue.pop(0)
                    if head.sent_at and budget is not None:
                        done[ifindex] = done.get(ifindex, 0) + 1
                        assert head.result is not None
                        if head.result.ok or head.result.status is not None:
                            # Only an answer measures the switch's pace; a timeout measures the timeout.
                            budget.answered(head.req.ifname, time.monotonic() - head.sent_at)
                if queue and queue[0].sent_at == 0.0:
                    if deadline is not None and time.monotonic() >= deadline:
                        for p in queue:
                            p.result = _fail(p.req, f"{_what(p.req)}: not sent, the deadline had passed")
                        queue.clear()
                        continue
                    refusal = budget.refuse(queue[0].req.ifname, len(queue), done.get(ifindex, 0)) if budget else None
                    if refusal:
                        assert budget is not None
                        for p in queue:
                            p.result = _fail(p.req, refusal)
                            budget.skip(p.req)
                        queue.clear()
                        continue
                    if self._launch(queue[0]):
                        launched.append(queue[0])
            if launched:
                self._await_acks(launched, end_of)
                interval = _POLL_FIRST
            if any(q and q[0].result is not None for q in queues.values()):
                continue  # a settled request frees its uplink for the next one
            in_flight = [q[0] for q in queues.values() if q and q[0].result is None]
            if not in_flight:
                break
            now = time.monotonic()
            for p in in_flight:
                if end_of(p) <= now:
                    p.result = _fail(p.req, self._silence(p, "answer"), -errno.ETIMEDOUT)
                    # A switch port that left one request unanswered is taken as silent: the uplink's
                    # other requests are not sent, so a silent switch costs one exchange timeout per
                    # call, not one per port (the feature's veto must come within the timeout).
                    for q in queues[p.ifindex][1:]:
                        if q.result is None and q.sent_at == 0.0:
                            q.result = _fail(
                                q.req,
                                f"{_what(q.req)}: not sent, the switch did not answer the previous request on "
                                f"{q.req.ifname} within {self.exchange_timeout:g} s",
                            )
            in_flight = [p for p in in_flight if p.result is None]
            if not in_flight:
                continue
            next_poll = min(now + interval, *(end_of(p) for p in in_flight))
            time.sleep(max(0.0, next_poll - time.monotonic()))
            interval = min(interval * _POLL_GROWTH, _POLL_CAP)
            for p in in_flight:
                self._poll_uplink(p.ifindex, [p], end_of(p))
        return [p.result for p in pending if p.result is not None]

    def _launch(self, p: _Pending) -> bool:
        """Send ``p``'s SETLINK; False (and ``p`` settled) when the request cannot be encoded.

        For ASSOCIATE and PREASSOCIATE_RR the uplink's table is read first: a VSI lldpad does not hold
        yet shows no response until the switch has answered, so its first response is final and needs no
        busy probe (see _poll_uplink).
        """
        if not p.resent:
            p.vlan = p.req.vlan
            if p.req.request in (ASSOCIATE, PREASSOCIATE_RR):
                try:
                    before = self._snapshot(p.ifindex, time.monotonic() + self.exchange_timeout, [p.req.instance])
                except TimeoutError:
                    before = -errno.ETIMEDOUT
                # An errno here (no VDP on the uplink...) comes back on the SETLINK too; probe to be safe.
                p.fresh = not isinstance(before, int) and all(s.instance != p.req.instance for s in before)
                if p.fresh and self._cut:  # not listed, but the list was cut short: ask for this VSI alone
                    p.fresh = self._clif_holds(p.req) is False
        self._tracked.add(p.req.instance)
        self._finals.pop(p.req.instance, None)
        self._notices.pop(p.req.instance, None)
        p.seq = self._next_seq()
        try:
            data = nlmsg.encode_qbg_request(
                seq=p.seq,
                port_id=self.port_id,
                ifindex=p.ifindex,
                ifname=p.req.ifname,
                mac=p.req.mac,
                vlan=p.vlan,
                vsi_type=p.req.vsi_type,
                instance=p.req.instance,
                request=p.req.request,
            )
        except ValueError as exc:
            p.result = _fail(p.req, f"{_what(p.req)}: not sent, {exc} -- fix the port in the guest metadata")
            return False
        p.sent_at = time.monotonic()
        self._send(data)
        return True

    def _await_acks(self, launched: list[_Pending], end_of: Callable[[_Pending], float]) -> None:
        """lldpad answers every SETLINK with NLMSG_ERROR: 0 = accepted, else a refusal (settles it)."""
        by_seq = {p.seq: p for p in launched}
        waiting = list(launched)
        while waiting:
            ready = [p for p in waiting if p.seq in self._acks]
            if ready:
                for p in ready:
                    waiting.remove(p)
                    self._acked(p, self._acks.pop(p.seq), end_of, by_seq, waiting)
                # Handling one answer can read (and file) the others': look again before blocking.
                continue
            until = min(end_of(p) for p in waiting)
            if time.monotonic() >= until:
                for p in [p for p in waiting if end_of(p) <= time.monotonic()]:
                    p.result = _fail(p.req, self._silence(p, "acknowledge the request"), -errno.ETIMEDOUT)
                    waiting.remove(p)
                continue
            self._recv(until)  # acks land in self._acks (see _note)

    def _acked(
        self,
        p: _Pending,
        err: int,
        end_of: Callable[[_Pending], float],
        by_seq: dict[int, _Pending],
        waiting: list[_Pending],
    ) -> None:
        """lldpad's answer ``err`` to ``p``'s SETLINK: accepted, refused (settles ``p``), or resent."""
        p.acked = True
        if err == 0:
            return
        if err == -errno.EINVAL and p.req.request == DISASSOCIATE:
            if self._resend_teardown(p, end_of(p)):
                by_seq[p.seq] = p
                waiting.append(p)
        elif err == -errno.ENODEV and self._ended_by_lldpad(p, end_of(p)):
            # Not "already disassociated": lldpad gave up on the switch, which may hold the VSI all the same
            # (its answer lost, or late).  A teardown stays pending until the switch or an lldpad that holds
            # nothing for the VSI (after a restart: EINVAL and an empty table) says so.
            p.result = VsiResult(
                p.req, False, None, 0, None, stuck_message(_what(p.req), ended=True, uplink=p.req.ifname), err,
                "ended",
            )
        elif err == -errno.EBUSY:
            p.result = VsiResult(
                p.req, False, None, 0, None, stuck_message(_what(p.req), uplink=p.req.ifname), err, "busy"
            )
        else:
            p.result = _fail(p.req, f"{_what(p.req)}: {errno_message(err)}", err)

    def _resend_teardown(self, p: _Pending, end: float) -> bool:
        """lldpad refused a DISASSOCIATE with EINVAL: settle ``p``, or resend it (True).

        EINVAL means either that lldpad does not know the VSI (nothing to tear down: teardown is
        idempotent) or that the request's filter does not match what lldpad holds -- typically VLAN 0
        for a VSI the switch gave a VLAN (lldpad compares against the assigned VLAN).  The table tells
        which; in the second case the DISASSOCIATE is sent again with the VLAN lldpad holds.
        """
        try:
            got = self._snapshot(p.ifindex, max(end, time.monotonic() + 0.001), [p.req.instance])
        except TimeoutError:
            got = []
        held = isinstance(got, list) and any(s.instance == p.req.instance for s in got)
        if isinstance(got, list) and not held and self._cut:  # not listed in a cut-short table: ask
            held = self._clif_holds(p.req) is not False
        if not held:
            p.result = VsiResult(p.req, True, None, 0, None, NOTHING_HELD)
            return False
        vlan = None if p.resent else self._held_vlan(p.req, (ASSOCIATE, PREASSOCIATE_RR, PREASSOCIATE))
        if vlan is None or vlan == p.vlan:
            p.result = _fail(
                p.req,
                f"{_what(p.req)}: lldpad holds this VSI with other filter data (MAC/VLAN) and refused the "
                "request (EINVAL) -- compare 'vdptool -t -i IF -V assoc' with the port's MAC and VLAN",
            )
            return False
        p.vlan, p.resent, p.acked = vlan, True, False
        self._launch(p)
        return True

    def _ended_by_lldpad(self, p: _Pending, end: float) -> bool:
        """Does ENODEV to ``p``'s DISASSOCIATE mean that lldpad has ended the VSI itself?

        lldpad answers ENODEV both for an interface without VDP and for a VSI it is removing
        (VDP22_DELETE_ME, qbg/vdp22sm.c vdp22_modvsi).  A VSI whose request the switch never answered
        stays like that for good: lldpad's own wait ends, the VSI is marked for deletion, but lldpad
        deletes it only once a GETLINK has reported a response, and it has none (measured with lldpad
        1.1: listed "in progress" until lldpad restarts).  The switch never held it.  So: VDP runs on the
        interface (GETLINK answers) and lists the VSI -> the VSI is ended.
        """
        try:
            got = self._snapshot(p.ifindex, max(end, time.monotonic() + 0.001), [p.req.instance])
        except TimeoutError:
            return False
        return not isinstance(got, int) and any(s.instance == p.req.instance for s in got)

    def _clif_holds(self, req: VsiRequest) -> bool | None:
        """Does lldpad hold ``req``'s VSI?  Asked through its client interface for this VSI alone
        (``vdptool -t -V MODE -c uuid=U``, which answers at any table size); None when it cannot be asked."""
        try:
            conn = self._clif()
            return None if conn is None else conn.holds_vsi(req.ifname, str(req.instance))
        except Exception:  # an optional source of information: lacking it, the answer stays unknown
            return None

    def _held_vlan(self, req: VsiRequest, requests: Sequence[int]) -> int | None:
        """The VLAN lldpad holds for ``req``'s VSI (the switch's choice after a VLAN 0 request), or None.

        lldpad never puts it into a GETLINK reply (measured with lldpad 1.1: the reply carries only
        instance, VF and response), and its unsolicited netlink messages come only when a VSI ends; its
        client interface lists it (``vdptool -t``), so that is asked, through the session's ``vdp.qbg.clif``.
        """
        modes = {ASSOCIATE: "assoc", PREASSOCIATE_RR: "preassoc-rr", PREASSOCIATE: "preassoc"}
        wanted = str(req.instance).lower()
        try:
            conn = self._clif()
            if conn is None:
                return None
            for request in requests:
                for vsi in conn.vsi_list(req.ifname, modes[request]):
                    head = vsi.get("filter", "").split("-", 1)[0]
                    if vsi.get("uuid", "").lower() == wanted and head.isdigit():
                        return int(head) & 0x0FFF  # the top bits carry the priority
        except Exception:  # an optional source of information: lacking it, the VLAN stays unknown
            return None
        return None

    # -- helpers -------------------------------------------------------------------------------------

    def _poll_uplink(self, ifindex: int, group: list[_Pending], end: float) -> None:
        """One polling round for ``group`` (requests on one uplink); settle the requests that are done.

        A VSI lldpad did not hold before the request shows no response until the switch has answered:
        its first response is final, the table alone tells.  For a VSI lldpad held before (PREASSOCIATE_RR
        -> ASSOCIATE, a repeated ASSOCIATE) lldpad keeps showing the previous response while the new
        request is with the switch, so the table cannot tell a stale success from a new one.  What tells
        is whether lldpad still calls the VSI busy: a request for a lower mode answers EBUSY while busy
        and EINVAL once idle, changing nothing (openlldp qbg/vdp22sm.c, vdp22_addreq and vdp22_modvsi)
        -- provided its filter matches what lldpad holds: an idle VSI whose MAC/VLAN differ from the
        probe's gets status 5 (VDP22_RESP_NOADDR) written into it, hence the probe carries the request's
        VLAN.  Such VSIs are probed *before* any table read: a table read while the request is out makes
        lldpad report a later refusal only as an end-of-VSI notice, without the switch's status (it
        clears VDP22_NLCMD; measured), while unread it keeps the VSI with its status for the next read.
        """
        end = max(end, time.monotonic() + 0.001)
        for p in group:
            if p.result is not None:
                continue
            probe = not p.fresh and p.req.request in (ASSOCIATE, PREASSOCIATE_RR)
            if probe and (self._busy(p, end) or p.result is not None):
                continue
            try:
                verdict = self._judge(p, self._snapshot(ifindex, end, [p.req.instance]))
            except TimeoutError:
                continue  # the per-request end in submit() turns lasting silence into a failure
            p.polls += 1
            if isinstance(verdict, VsiResult):
                p.result = verdict
            elif verdict is not None:
                p.result = self._result(p.req, verdict)

    def _snapshot(self, ifindex: int, end: float, wanted: Sequence[uuid.UUID]) -> list[PortStatus] | int:
        """lldpad's table rows for ``wanted`` on ``ifindex``, read twice when one is missing from the first.

        lldpad 1.1 drops a VSI from the table once it has reported its final state, and while walking
        the table it then skips the VSI after it (qbg/vdpnl.c, vdpnl_getlink: vdp22_status(++i, ...) on
        a list that just lost element i).  So "missing once" can be an artefact, e.g. when another
        client's DISASSOCIATE finishes on the same uplink; a second read right away tells.
        """
        got = self._getlink(ifindex, end, wanted)
        if isinstance(got, int):
            return got
        seen = {s.instance for s in got}
        if all(w in seen for w in wanted):
            return got
        return self._merge(got, self._getlink(ifindex, max(end, time.monotonic() + 0.001), wanted))

    @staticmethod
    def _merge(first: list[PortStatus], second: list[PortStatus] | int) -> list[PortStatus]:
        """Both reads together; for a VSI in both, the second (newer) read wins.

        A VSI "in progress" in the first read may show its final status in the second -- and only
        there, since the read that shows a final status makes lldpad forget the VSI.
        """
        if isinstance(second, int):
            return first
        newer = {s.instance: s for s in second}
        merged = [newer.pop(s.instance, s) for s in first]
        return merged + [s for s in second if s.instance in newer]

    def _busy(self, p: _Pending, end: float) -> bool:
        """Whether lldpad still processes a request for ``p``'s VSI (see _poll_uplink)."""
        if p.req.request not in (ASSOCIATE, PREASSOCIATE_RR):
            return False  # DISASSOCIATE is settled by the table; below PREASSOCIATE there is no probe
        # The request's VLAN: lldpad accepted the request with it, so it matches what lldpad holds (with
        # VLAN 0 lldpad held 0 too; only a switch assigning a VLAN to such a repeated request could make
        # the probe mismatch -- not asked through the client interface, whose VSI listing clears
        # VDP22_NLCMD like a table read, see _poll_uplink).
        vlan = p.vlan
        err = self._setlink_acked(p, PREASSOCIATE, end, vlan=vlan)
        if err == 0:
            # lldpad took the probe as a new VSI: it had already forgotten ours, i.e. another client's
            # GETLINK consumed its final state.  Undo the probe; the outcome is unknown.
            self._setlink_acked(p, DISASSOCIATE, end, vlan=vlan)
            p.result = _fail(
                p.req,
                f"{_what(p.req)}: lldpad reported the outcome to another client and forgot the VSI -- "
                "retry; check for other VDP clients polling this uplink",
            )
            return True
        return err is None or err == -errno.EBUSY

    def _setlink_acked(self, p: _Pending, request: int, end: float, *, vlan: int) -> int | None:
        """Send ``request`` for ``p``'s VSI; lldpad's answer (0 or -errno), None if none came by ``end``."""
        seq = self._next_seq()
        self._send(
            nlmsg.encode_qbg_request(
                seq=seq,
                port_id=self.port_id,
                ifindex=p.ifindex,
                ifname=p.req.ifname,
                mac=p.req.mac,
                vlan=vlan,
                vsi_type=p.req.vsi_type,
                instance=p.req.instance,
                request=request,
            )
        )
        while time.monotonic() < end:
            if seq in self._acks:
                return self._acks.pop(seq)
            self._recv(end)
        return self._acks.pop(seq, None)

    def _silence(self, p: _Pending, what: str) -> str:
        waited = time.monotonic() - p.sent_at
        return (
            f"{_what(p.req)}: no answer within {waited:.1f} s (lldpad did not {what}; the switch may be "
            f"silent) -- check EVB negotiation with 'lldptool -t -n -i {p.req.ifname} -g ncb -V evb'"
        )

    def _judge(self, p: _Pending, got: list[PortStatus] | int) -> VsiResult | int | None:
        """What one table snapshot says about ``p``: a result, the VDP22 response, or None (in progress)."""
        req = p.req
        if isinstance(got, int):
            return _fail(req, f"{_what(req)}: {errno_message(got)}", got)
        mine = [s for s in got if s.instance == req.instance]
        if req.request == DISASSOCIATE:
            # Done when the VSI has left lldpad's table (the first snapshots may still show it) -- a table
            # that lists it, or, cut short, lldpad asked about this VSI alone (unknown: not done).
            if mine or (self._cut and self._clif_holds(req) is not False):
                return None
            return VsiResult(req, True, None, 0, None, DISASSOCIATED)
        if not mine:
            self._drain()
            final = self._finals.get(req.instance)
            if p.fresh and final is not None:
                return final  # reported (and forgotten by lldpad) in a read that was not this one
            if req.instance in self._notices:
                return _fail(
                    req,
                    f"{_what(req)}: the switch refused it and lldpad de-associated the VSI (lldpad does not "
                    "pass the switch's reason on over netlink) -- see the switch's log for this VSI; check "
                    "the VSI type, VLAN and the switch port's resources",
                )
            return _fail(
                req,
                f"{_what(req)}: lldpad dropped the VSI (the switch de-associated it, or another client "
                "consumed its final status) -- retry, and check the switch's log for this VSI",
            )
        response = mine[0].response
        if response is None or response & 0xFF == VDP22_NONE:
            return None  # no answer from the switch yet
        return response

    def _result(self, req: VsiRequest, response: int) -> VsiResult:
        status, bits = split_vdp22(response)
        ok = status == VDP22_SUCCESS and not bits
        vlan = req.vlan if req.vlan else None
        msg = "accepted by the switch" if ok else f"{_what(req)}: {vdp22_message(response)}"
        if ok and vlan is None:
            vlan = self._held_vlan(req, (req.request,)) or None
            if vlan is None:
                # 0 held: the switch kept VLAN 0 (lldpad's own bridge role does); None: no client interface.
                msg += " (VLAN left to the switch; it returned none, or lldpad could not be asked)"
            else:
                msg += f" (VLAN {vlan}, chosen by the switch)"
        return VsiResult(req, ok, status, bits, vlan, msg)


def _ifindex(ifname: str) -> int | None:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def _what(req: VsiRequest) -> str:
    """The request and its uplink, once: the veto line names the port (its MAC) itself."""
    return f"{REQUEST_NAMES.get(req.request, str(req.request))} on {req.ifname}"


def _fail(req: VsiRequest, message: str, err: int = 0) -> VsiResult:
    return VsiResult(req, False, None, 0, None, message, err)
