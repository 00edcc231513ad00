"""802.1Qbh port profiles (Cisco VM-FEX / enic) through the kernel: the netlink client.

The host asks the adapter's driver to bind a port to a named port profile with an ``RTM_SETLINK`` to the
kernel (netlink port id 0): ``IFLA_PORT_SELF`` for the device itself, or ``IFLA_VF_PORTS{IFLA_VF_PORT}``
with ``IFLA_PORT_VF`` on the PF for an SR-IOV VF (encoding: ``vdp.wire.netlink.encode_qbh_request``).  The
driver acknowledges at once and works in the background; the outcome is read by polling ``RTM_GETLINK``
with ``IFLA_EXT_MASK = RTEXT_FILTER_VF`` until ``IFLA_PORT_RESPONSE`` stops saying INPROGRESS (0x101).
In the mainline kernel only enic implements this (``ndo_set_vf_port`` / ``ndo_get_vf_port``,
``drivers/net/ethernet/cisco/enic/enic_main.c`` and ``enic_pp.c``); every other device answers
``-EOPNOTSUPP``.

What this client does the way libvirt 9.0 does it (``src/util/virnetdevvportprofile.c``):

* PROFILE, INSTANCE_UUID (the guest UUID), HOST_UUID, VF (VF ports only) and REQUEST go to the kernel;
  DISASSOCIATE carries only the VF and the request, and the port's interface (the VF, or the device
  itself) is set down first;
* a response of INPROGRESS means keep polling, a port or response missing from the reply is an error, an
  association still in progress when time runs out is disassociated, and the interface is set up after a
  successful ASSOCIATE (not after PREASSOCIATE_RR: the guest is not running here yet);
* PREASSOCIATE_RR is the reservation for an incoming migration (enic answers plain PREASSOCIATE with
  ``-EOPNOTSUPP``).

Where it differs, and why:

* Polling starts after 1 ms and doubles up to 100 ms, instead of libvirt's fixed 125 ms; all requests of
  one :meth:`QbhClient.submit` are in flight together (one GETLINK per PF and round serves all its ports).
* For the device itself the MAC is **not** sent by default.  libvirt sends it as ``IFLA_VF_MAC`` with
  vf = -1, and since Linux 5.5 (commit "net: rtnetlink: prevent underflows in do_setvfinfo()") rtnetlink
  rejects any VF number >= INT_MAX with ``-EINVAL`` before a driver sees the request: measured here on
  6.18 by replaying libvirt 9.0's recorded bytes on a veth and an ifb (``tests/golden/libvirt9_qbh.json``;
  both answer -EINVAL).  Without it enic registers the device's own MAC, which is what a VM-FEX dynamic
  vNIC carries.  ``QbhClient(port_self_mac=True)`` restores libvirt's exact layout.  VF ports always carry
  the MAC (``IFLA_VF_MAC`` with the VF number, which rtnetlink accepts).
* Link up/down use ``RTM_SETLINK`` with ``IFF_UP`` in ``ifi_change``, always to the kernel, even when the
  port-profile messages go to a test peer.

Over 400 lines on purpose: :meth:`QbhClient.submit` is one exchange (down, SETLINK, acknowledgements, poll,
undo on timeout, up) that reads top to bottom like libvirt's, and :meth:`QbhClient._judge` beside it
says what every reply means; split apart, each half would need the other to be understood.
"""

from __future__ import annotations

import errno
import os
import socket
import time
import uuid
from collections.abc import Sequence

from hooks.errors import PeerUnavailable
from hooks.plain import plain
from vdp.messages import qbh_errno_message, qbh_response_message
from vdp.qbh.host import QbhPort
from vdp.rtsocket import RouteSocket
from vdp.wire import netlink
from vdp.wire.netlink import (
    ASSOCIATE,
    DISASSOCIATE,
    NLMSG_DONE,
    NLMSG_ERROR,
    PORT_PROFILE_RESPONSE_INPROGRESS,
    PORT_PROFILE_RESPONSE_SUCCESS,
    PREASSOCIATE,
    PREASSOCIATE_RR,
    REQUEST_NAMES,
    RTM_NEWLINK,
    PortStatus,
)

__all__ = [
    "ASSOCIATE",
    "DISASSOCIATE",
    "PREASSOCIATE",
    "PREASSOCIATE_RR",
    "QbhClient",
    "QbhRequest",
    "QbhResult",
    "kernel_errno_message",
]

_POLL_FIRST = 0.001  # first GETLINK this long after the acknowledgement
_POLL_CAP = 0.100  # the interval doubles up to this
_CLEANUP_GRACE = 0.5  # reserved before the deadline for the DISASSOCIATE that follows a timeout


# --- value types ------------------------------------------------------------------------------------------


@plain(frozen=True)
class QbhRequest:
    """One port-profile request.  ``instance`` is the guest UUID (as libvirt sends it)."""

    port: QbhPort
    mac: str
    profile: str
    instance: uuid.UUID
    host_uuid: uuid.UUID
    request: int

    def describe(self) -> str:
        """``802.1Qbh ASSOCIATE of profile 'x' for 52:54:.. on eth1`` for messages."""
        name = REQUEST_NAMES.get(self.request, str(self.request))
        if self.request == DISASSOCIATE:
            return f"802.1Qbh {name} of {self.mac} on {self.port.describe()}"
        return f"802.1Qbh {name} of profile '{self.profile}' for {self.mac} on {self.port.describe()}"


@plain(frozen=True)
class QbhResult:
    """The outcome of one :class:`QbhRequest`.

    ``ok``: the driver reported success (for DISASSOCIATE also when the port holds nothing any more).
    ``response`` is the last ``IFLA_PORT_RESPONSE`` seen (None: none), ``errno`` the kernel's refusal of
    the request (negative, 0 when there was none), ``message`` one admin-facing line.
    """

    request: QbhRequest
    ok: bool
    response: int | None
    message: str
    errno: int = 0
    timed_out: bool = False


# --- messages (texts: vdp.messages) ---------------------------------------------------------------------


def kernel_errno_message(err: int, req: QbhRequest | None = None, *, port_self_mac: bool = False) -> str:
    """One line for the kernel's refusal (``NLMSG_ERROR``) of ``req``; sign ignored."""
    if req is None:
        return qbh_errno_message(err, port_self_mac=port_self_mac)
    return qbh_errno_message(
        err,
        pf=req.port.pf_ifname,
        preassociate=req.request == PREASSOCIATE,
        port_self=req.port.vf is None,
        port_self_mac=port_self_mac,
    )


# --- the client -----------------------------------------------------------------------------------------------


@plain
class _Pending:
    req: QbhRequest
    seq: int = 0
    sent_at: float = 0.0
    acked: bool = False
    last_response: int | None = None
    result: QbhResult | None = None
    note: str = ""


class QbhClient(RouteSocket):
    """A netlink client for 802.1Qbh port profiles (one NETLINK_ROUTE socket); use as a context manager.

    ``dest_pid`` is where port-profile messages go: 0 = the kernel.  Only tests set it, to the port id of
    a peer that plays the driver (``tests/lab/harness/enicpeer.py``).  ``exchange_timeout`` bounds each
    request from sending to its final response (libvirt: 10 s).  ``manage_link`` sets the port's
    interface down before DISASSOCIATE and up after ASSOCIATE (libvirt does; always through the kernel).
    ``port_self_mac`` sends the MAC for the device itself as libvirt does (see the module docstring).
    """

    def __init__(
        self,
        *,
        dest_pid: int = 0,
        exchange_timeout: float = 10.0,
        manage_link: bool = True,
        port_self_mac: bool = False,
    ) -> None:
        self.dest_pid = dest_pid
        self.exchange_timeout = exchange_timeout
        self.manage_link = manage_link
        self.port_self_mac = port_self_mac
        super().__init__()
        self.port_id = self.own_port_id

    # -- plumbing --------------------------------------------------------------------------------------------

    def _send(self, data: bytes, dest: int) -> None:
        try:
            self._sock.sendto(data, (dest, 0))
        except ConnectionRefusedError as exc:
            raise PeerUnavailable(
                f"nothing listens on netlink port {dest} (the port-profile test peer is gone)"
            ) from exc

    def _recv(self, until: float) -> list[tuple[netlink.NetlinkHeader, bytes]]:
        return self._recv_messages(until)

    def _acks(self, seqs: set[int], end: float) -> dict[int, int]:
        """Wait for ``NLMSG_ERROR`` answers to ``seqs`` until ``end``; seq -> errno (0 = acknowledged)."""
        got: dict[int, int] = {}
        while len(got) < len(seqs):
            # The kernel answers before sendto() returns: what is queued counts even when ``end`` has passed.
            messages = self._recv(end)
            if not messages and time.monotonic() >= end:
                break
            for hdr, msg in messages:
                if hdr.type == NLMSG_ERROR and hdr.seq in seqs and hdr.seq not in got:
                    got[hdr.seq] = netlink.decode_error(msg)
        return got

    def _link_message(self, ifindex: int, up: bool) -> tuple[int, bytes]:
        seq = self._next_seq()
        return seq, netlink.encode_link_state(seq=seq, port_id=self.port_id, ifindex=ifindex, up=up)

    def _set_links(self, ifnames: Sequence[str], *, up: bool, end: float) -> dict[str, str]:
        """Set interfaces up or down through the kernel, together; ifname -> problem ('' when fine).

        An interface that does not exist (e.g. a VF passed through to a guest) is not a problem.
        """
        sent: dict[int, str] = {}
        problems: dict[str, str] = {}
        for ifname in dict.fromkeys(ifnames):
            try:
                ifindex = socket.if_nametoindex(ifname)
            except OSError:
                problems[ifname] = ""
                continue
            seq, data = self._link_message(ifindex, up)
            self._send(data, 0)
            sent[seq] = ifname
        answers = self._acks(set(sent), end)
        for seq, ifname in sent.items():
            err = answers.get(seq)
            if err is None:
                problems[ifname] = f"the kernel did not answer setting {ifname} {'up' if up else 'down'}"
            elif err and -err != errno.ENODEV:
                problems[ifname] = f"cannot set {ifname} {'up' if up else 'down'}: {os.strerror(-err)}"
            else:
                problems[ifname] = ""
        return problems

    def _getlink(self, ifindex: int, end: float) -> bytes | int | None:
        """The reply to one GETLINK (the link message), a negative errno, or None on silence."""
        seq = self._next_seq()
        self._send(netlink.encode_getlink(seq=seq, port_id=self.port_id, ifindex=ifindex), self.dest_pid)
        while time.monotonic() < end:
            for hdr, msg in self._recv(end):
                if hdr.seq != seq:
                    continue  # a late reply to an earlier round
                if hdr.type == NLMSG_ERROR:
                    err = netlink.decode_error(msg)
                    if err:
                        return err
                    continue  # the acknowledgement that follows the reply
                if hdr.type in (RTM_NEWLINK, NLMSG_DONE):
                    return msg
        return None

    def _encode(self, p: _Pending, request: int, seq: int) -> bytes:
        req = p.req
        send_mac = req.port.vf is not None or self.port_self_mac
        return netlink.encode_qbh_request(
            seq=seq,
            port_id=self.port_id,
            ifindex=req.port.pf_ifindex,
            vf=req.port.vf,
            mac=req.mac if send_mac else None,
            profile=req.profile,
            instance=req.instance,
            host_uuid=req.host_uuid,
            request=request,
        )

    # -- public API ------------------------------------------------------------------------------------------

    def submit(self, requests: Sequence[QbhRequest], *, deadline: float | None = None) -> list[QbhResult]:
        """Send all ``requests`` together, wait for all of them; one result per request, same order.

        ``deadline`` is a ``time.monotonic()`` value capping the call; half a second of it is kept for the
        DISASSOCIATE that follows an association that timed out.  Raises PeerUnavailable only when the
        test peer is gone; every other failure is a result with ``ok=False``.
        """
        pending = [_Pending(req) for req in requests]
        for p in pending:
            problem = _validate(p.req)
            if problem:
                p.result = QbhResult(p.req, False, None, f"{p.req.describe()}: {problem}")
        start = time.monotonic()
        hard_end = start + self.exchange_timeout if deadline is None else min(start + self.exchange_timeout, deadline)
        poll_end = hard_end - _CLEANUP_GRACE if deadline is not None and hard_end == deadline else hard_end

        # 0. Interfaces of ports to disassociate go down first (libvirt: virNetDevSetOnline(linkdev, false)).
        leaving = [p for p in pending if p.result is None and p.req.request == DISASSOCIATE]
        if self.manage_link and leaving:
            problems = self._set_links([p.req.port.ifname for p in leaving], up=False, end=time.monotonic() + 1.0)
            for p in leaving:
                if problems.get(p.req.port.ifname):
                    p.note = f" (note: {problems[p.req.port.ifname]})"

        # 1. Every SETLINK out together, then their acknowledgements.
        live = [p for p in pending if p.result is None]
        for p in live:
            p.seq = self._next_seq()
            p.sent_at = time.monotonic()
            self._send(self._encode(p, p.req.request, p.seq), self.dest_pid)
        answers = self._acks({p.seq for p in live}, poll_end)
        for p in live:
            err = answers.get(p.seq)
            if err is None:
                continue  # silence: settled as a timeout below
            p.acked = True
            if err and p.req.request == DISASSOCIATE and -err in (errno.EOPNOTSUPP, errno.ENODEV):
                # A device without port profiles (or one that is gone) holds no association: teardown is
                # idempotent, so there is nothing left to release.
                gone = "cannot hold port profiles" if -err == errno.EOPNOTSUPP else "is gone"
                p.result = QbhResult(
                    p.req,
                    True,
                    None,
                    f"{p.req.describe()}: nothing to release ({p.req.port.pf_ifname} {gone}){p.note}",
                    errno=err,
                )
            elif err:
                msg = kernel_errno_message(err, p.req, port_self_mac=self.port_self_mac)
                p.result = QbhResult(p.req, False, None, f"{p.req.describe()}: {msg}{p.note}", errno=err)

        # 2. Poll the driver's state, one GETLINK per PF per round, with a growing interval.
        interval = _POLL_FIRST
        while True:
            waiting = [p for p in pending if p.result is None and p.acked]
            if not waiting or time.monotonic() >= poll_end:
                break
            time.sleep(max(0.0, min(interval, poll_end - time.monotonic())))
            interval = min(interval * 2, _POLL_CAP)
            for ifindex in sorted({p.req.port.pf_ifindex for p in waiting}):
                group = [p for p in waiting if p.req.port.pf_ifindex == ifindex]
                reply = self._getlink(ifindex, poll_end)
                if reply is None:
                    continue  # silence; the loop ends at poll_end
                for p in group:
                    p.result = self._judge(p, reply)

        # 3. Whatever is still open timed out: associations in progress are taken back (as libvirt does).
        expired = [p for p in pending if p.result is None]
        undo = [p for p in expired if p.req.request in (ASSOCIATE, PREASSOCIATE_RR, PREASSOCIATE)]
        undo_seq = {}
        for p in undo:
            seq = self._next_seq()
            undo_seq[p.seq] = seq
            self._send(self._encode(p, DISASSOCIATE, seq), self.dest_pid)
        undo_end = time.monotonic() + min(_CLEANUP_GRACE, self.exchange_timeout)
        if deadline is not None:
            undo_end = max(min(undo_end, deadline), time.monotonic() + 0.05)
        undo_answers = self._acks(set(undo_seq.values()), undo_end)
        for p in expired:
            waited = time.monotonic() - p.sent_at
            if not p.acked:
                what = f"the {'kernel' if self.dest_pid == 0 else 'peer'} did not acknowledge the request"
            elif p.last_response == PORT_PROFILE_RESPONSE_INPROGRESS:
                what = "the adapter still reports it in progress"
            else:
                what = "no status came back from the driver"
            text = f"{p.req.describe()}: timed out after {waited:.1f} s ({what})"
            if p.seq in undo_seq:
                err = undo_answers.get(undo_seq[p.seq])
                if err == 0:
                    text += "; sent DISASSOCIATE to release the port"
                elif err is None:
                    text += "; the DISASSOCIATE sent to release the port was not acknowledged"
                else:
                    text += f"; releasing the port failed too ({os.strerror(-err)})"
            text += " -- check the adapter and its fabric interconnect / port-profile manager"
            p.result = QbhResult(p.req, False, p.last_response, text + p.note, timed_out=True)

        # 4. Interfaces of associated ports come up (libvirt: virNetDevSetOnline(linkdev, true)).
        joined = [p for p in pending if p.result is not None and p.result.ok and p.req.request == ASSOCIATE]
        if self.manage_link and joined:
            # The kernel answers link changes at once; this end only guards against a lost reply.
            problems = self._set_links([p.req.port.ifname for p in joined], up=True, end=time.monotonic() + 1.0)
            for p in joined:
                link_problem = problems.get(p.req.port.ifname)
                if link_problem:
                    assert p.result is not None
                    p.result = QbhResult(
                        p.req,
                        False,
                        p.result.response,
                        f"{p.req.describe()}: associated, but {link_problem} -- check the interface",
                    )
        return [p.result for p in pending if p.result is not None]

    def _judge(self, p: _Pending, reply: bytes | int) -> QbhResult | None:
        """What one GETLINK reply says about ``p``: a result, or None while it is in progress."""
        req = p.req
        if isinstance(reply, int):
            return QbhResult(
                req, False, None, f"{req.describe()}: reading the status failed: {kernel_errno_message(reply, req)}"
            )
        try:
            ports = netlink.decode_ports(reply)
        except ValueError as exc:
            return QbhResult(req, False, None, f"{req.describe()}: unreadable status reply ({exc})")
        mine = _find_port(ports, req.port.vf)
        if mine is None:
            if req.request == DISASSOCIATE:
                # The kernel leaves a port out when its driver has no request applied (-ENODATA): nothing
                # is associated there, which is what was asked for.
                return QbhResult(req, True, None, f"{req.describe()}: done (the port holds no profile){p.note}")
            where = "IFLA_PORT_SELF" if req.port.vf is None else f"IFLA_VF_PORT for VF {req.port.vf}"
            return QbhResult(
                req,
                False,
                None,
                f"{req.describe()}: the device reported no status for the port ({where} missing) -- "
                "check that the driver supports port profiles on it (dmesg)",
            )
        if mine.request is not None and mine.request & 0xFF != req.request:
            now = REQUEST_NAMES.get(mine.request & 0xFF, str(mine.request))
            return QbhResult(
                req,
                False,
                mine.response,
                f"{req.describe()}: superseded, the port now holds a {now} request (another tool changed it) "
                "-- check what else manages port profiles on this host",
            )
        if req.request != DISASSOCIATE and mine.instance is not None and mine.instance != req.instance:
            return QbhResult(
                req,
                False,
                mine.response,
                f"{req.describe()}: superseded, the port now belongs to instance {mine.instance} -- check "
                "which guest uses this port",
            )
        p.last_response = mine.response
        if mine.response == PORT_PROFILE_RESPONSE_INPROGRESS:
            return None
        ok = mine.response == PORT_PROFILE_RESPONSE_SUCCESS
        text = "done" if ok else qbh_response_message(mine.response)
        return QbhResult(req, ok, mine.response, f"{req.describe()}: {text}{p.note}")

    def status(self, port: QbhPort) -> PortStatus | None:
        """What the driver holds for ``port`` now (one GETLINK), or None when it holds no request.

        For ``reconnect begin``: a port whose ``request`` is not ASSOCIATE, whose ``instance`` is another
        guest's, or that is None (the kernel leaves a port out when the driver has nothing applied, e.g.
        after a driver reload) has lost its association.  ``response`` may be INPROGRESS.  Raises
        PeerUnavailable when the device is gone or nothing answers.
        """
        reply = self._getlink(port.pf_ifindex, time.monotonic() + self.exchange_timeout)
        if reply is None:
            raise PeerUnavailable(f"no answer about {port.describe()} within {self.exchange_timeout:g} s")
        if isinstance(reply, int):
            raise PeerUnavailable(f"cannot read the port-profile state of {port.describe()}: {os.strerror(-reply)}")
        return _find_port(netlink.decode_ports(reply), port.vf)

    def supports_port_profiles(self, port: QbhPort) -> bool:
        """Whether the driver of ``port``'s PF implements port profiles (``ndo_set_vf_port``).

        First a GETLINK with ``RTEXT_FILTER_VF``: the kernel includes ``IFLA_PORT_SELF`` / ``IFLA_VF_PORTS``
        only for drivers with ``ndo_get_vf_port``.  Their absence proves nothing, though: the kernel also
        drops ``IFLA_PORT_SELF`` when the driver has no request applied yet (enic answers -ENODATA), and a
        PF without VFs has no ``IFLA_VF_PORTS``.  So then a SETLINK with an empty ``IFLA_VF_PORTS`` decides:
        rtnetlink answers -EOPNOTSUPP when the driver lacks ``ndo_set_vf_port`` and otherwise walks the
        (empty) list and calls nothing, so nothing changes on any device.  Raises PeerUnavailable when the
        device is gone or nothing answers.
        """
        end = time.monotonic() + self.exchange_timeout
        reply = self._getlink(port.pf_ifindex, end)
        if isinstance(reply, bytes):
            if netlink.has_port_attrs(reply):
                return True
        elif isinstance(reply, int) and -reply == errno.ENODEV:
            raise PeerUnavailable(f"interface {port.pf_ifname} does not exist (ENODEV)")
        seq = self._next_seq()
        self._send(netlink.encode_empty_vf_ports(seq=seq, port_id=self.port_id, ifindex=port.pf_ifindex), self.dest_pid)
        err = self._acks({seq}, end).get(seq)
        if err is None:
            raise PeerUnavailable(
                f"no answer from the kernel about {port.pf_ifname} within {self.exchange_timeout:g} s"
            )
        if -err == errno.EOPNOTSUPP:
            return False
        if -err == errno.ENODEV:
            raise PeerUnavailable(f"interface {port.pf_ifname} does not exist (ENODEV)")
        return err in (0, -errno.EINVAL)  # EINVAL: newer rtnetlink checking the (empty) list strictly


def _find_port(ports: Sequence[PortStatus], vf: int | None) -> PortStatus | None:
    for s in ports:
        if vf is None and s.port_self:
            return s
        if vf is not None and not s.port_self and s.vf == vf:
            return s
    return None


def _validate(req: QbhRequest) -> str:
    """Why ``req`` cannot be sent ('' when it can); checked here so one bad port fails alone."""
    if req.request not in REQUEST_NAMES:
        return f"unknown request {req.request}"
    if req.request != DISASSOCIATE:
        size = len(req.profile.encode())
        if not 0 < size < netlink.PORT_PROFILE_MAX:
            return (
                f"the port profile name must be 1..{netlink.PORT_PROFILE_MAX - 1} bytes (got {size}) -- "
                "fix profileid in the guest metadata"
            )
    try:
        raw = bytes.fromhex(req.mac.replace(":", "").replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        return f"'{req.mac}' is not a MAC address -- fix the port's mac in the guest metadata"
    return ""
