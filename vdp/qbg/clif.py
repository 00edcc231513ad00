"""lldpad's client interface: the connection, through ``liblldp_clif.so.1`` (ctypes), and its own loop for
VSI requests with migration hints (:meth:`Clif.vsi_many`); and a listen-only attached connection for its
events (:class:`ClifEvents`).  Over 400 lines: the connections and the one loop that rides on them, with
the measured lldpad behaviour each part relies on.

lldpad listens on the abstract unix datagram socket ``@/com/intel/lldpad`` (one per network namespace);
a client binds ``@/com/intel/lldpad/<pid>`` and exchanges ASCII messages with it.  The library opens and
closes that connection (so our socket is named as lldpad's tools name theirs); the messages themselves are
built and parsed by the pure codec, ``vdp.clif`` (its docstring has their layout).

Why the library's own ``clif_request()``/``clif_getpid()``/``clif_vsi*()`` are not even declared: ``clif_request``
prints ``timeout`` on **stdout** when lldpad does not answer within its fixed 2 s (stdout of a ``migrate begin``
hook is parsed as domain XML), cannot honour a shorter deadline, and drops event messages that arrive while it
waits; ``clif_vsi()`` sends the documented comma form, which this lldpad rejects.  Exchanges therefore run on
the library's socket (``clif_get_fd``) with ``poll()`` and the caller's deadline: ``clif_open``,
``clif_get_fd`` and ``clif_close`` are all this module calls.

One connection per process at a time: the client address is derived from the pid, so a second
``clif_open()`` in the same process fails until the first is closed (:class:`Clif` enforces this).

Imported only when a Qbg request needs the client interface (``vdp.qbg.session`` says where): ctypes
alone costs 6-10 ms here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import socket
import time
import uuid
from collections.abc import Sequence

from hooks.errors import DeadlineExceeded, FeatureError, HookError, PeerRefused, PeerUnavailable
from hooks.plain import as_dict
from vdp.messages import clif_status_text
from vdp.wire.clif import (
    CMD_GETTLV,
    CMD_RESPONSE,
    LLDP_MOD_MAND,
    LLDP_MOD_VDP22,
    MAX_CLIF_MSGBUF,
    OP_ARG,
    OP_CONFIG,
    OP_LOCAL,
    REQUEST_LABELS,
    TLVID_EVB22,
    TLVID_VDP_DRAFT,
    VDP22_MODES,
    Evb22Tlv,
    EvbStatus,
    Reply,
    VsiCommand,
    VsiReply,
    build_command,
    config_request,
    evb_request,
    parse_args,
    parse_evb_reply,
    parse_event,
    parse_reply,
    parse_vsi_list,
    vdp22_table_request,
    vsi_reply_from_event,
    vsi_request,
)
from vdp.wire.clif import strip_command_header as _strip_command_header
from vdp.wire.clif import vsi_records as _vsi_records
from vdp.wire.codes import (
    CMD_AGENT_NOT_FOUND,
    CMD_BAD_PARAMS,
    CMD_DEVICE_NOT_FOUND,
    CMD_INVALID,
    CMD_NOT_APPLICABLE,
    CMD_NOT_CAPABLE,
    CMD_VDP_BUSY,
    CMD_VDP_PROT_NO_SUPPORT,
    VDP22_NONE,
    VDP22_SUCCESS,
)

__all__ = ["CLIF_LIBRARY", "Clif", "ClifEvents", "NotSent", "library_available", "lldpad_pid"]

CLIF_LIBRARY = "liblldp_clif.so.1"
LLDPAD_SOCKET = "\0/com/intel/lldpad"  # abstract address, per network namespace

_INSTALL_HINT = "install lldpad (Debian/Ubuntu: apt-get install lldpad; RHEL/Fedora: dnf install lldpad)"
_START_HINT = "start lldpad (systemctl start lldpad) in this host's network namespace, or " + _INSTALL_HINT

# -- the library -------------------------------------------------------------------------------------------


def _status_error(status: int, what: str, ifname: str) -> HookError:
    """Map a non-zero lldpad command status to the product's exception with an admin hint."""
    text = clif_status_text(status)
    msg = f"lldpad refused {what} on {ifname}: {text}"
    if status in (CMD_DEVICE_NOT_FOUND, CMD_AGENT_NOT_FOUND):
        return PeerUnavailable(
            msg,
            hint=f"check that {ifname} exists and is up, and is listed for EVB in lldpad's configuration "
            f"(lldptool -T -i {ifname} -g ncb -V evb -c enableTx=yes -c evbmode=station)",
        )
    if status in (CMD_NOT_APPLICABLE, CMD_NOT_CAPABLE):
        return PeerUnavailable(
            msg + " (the interface runs VDP in bridge role or not at all)",
            hint=f'set evbmode = "station" for {ifname} in lldpad\'s configuration and restart lldpad',
        )
    if status == CMD_VDP_PROT_NO_SUPPORT:
        return PeerUnavailable(msg, hint=f"check EVB negotiation: lldptool -t -n -i {ifname} -g ncb -V evb")
    if status == CMD_VDP_BUSY:
        return PeerRefused(msg, hint="a request for this VSI is still in progress; retry in a moment")
    if status in (CMD_INVALID, CMD_BAD_PARAMS):
        return PeerRefused(msg, hint="check the port's MAC, VLAN, VSI type and instance id in the guest metadata")
    return FeatureError(msg, hint="see lldpad's log (run lldpad -V7 for details)")


class _ClifStruct(ctypes.Structure):
    """``struct clif`` is opaque to us; only pointers to it are passed around."""


_ClifPtr = ctypes.POINTER(_ClifStruct)

# The functions of include/clif.h this module calls, (name, restype, argtypes), declared in one place so a
# wrong prototype shows up in review, not as a crash.  The others are left undeclared on purpose (see the
# module docstring).
_PROTOTYPES: tuple[tuple[str, object, tuple[object, ...]], ...] = (
    ("clif_open", _ClifPtr, ()),
    ("clif_close", None, (_ClifPtr,)),
    ("clif_get_fd", ctypes.c_int, (_ClifPtr,)),
)

_lib: ctypes.CDLL | None = None
_lib_error: str | None = None


def _load() -> ctypes.CDLL:
    """The library with every prototype declared; loaded once.  PeerUnavailable when it is missing."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        try:
            lib = ctypes.CDLL(CLIF_LIBRARY, use_errno=True)
            for name, restype, argtypes in _PROTOTYPES:
                fn = getattr(lib, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib = lib
        except (OSError, AttributeError) as exc:
            _lib_error = str(exc)
    if _lib is None:
        raise PeerUnavailable(f"cannot load {CLIF_LIBRARY} ({_lib_error})", hint=_INSTALL_HINT)
    return _lib


def library_available() -> bool:
    """True when ``liblldp_clif.so.1`` loads (it comes with lldpad)."""
    try:
        _load()
    except PeerUnavailable:
        return False
    return True


def _call(name: str, *args: object) -> object:
    """Call library function ``name``; a NULL pointer or a negative int result raises PeerUnavailable.

    The library reports failures only as NULL/-1 (with errno from the failed socket call); lldpad being
    absent is by far the most common cause, so the message says how to get it running.
    """
    fn = getattr(_load(), name)
    ctypes.set_errno(0)
    result = fn(*args)
    failed = (isinstance(result, _ClifPtr) and not result) or (isinstance(result, int) and result < 0)
    if failed:
        err = ctypes.get_errno()
        why = os.strerror(err) if err else "failed"
        raise PeerUnavailable(f"lldpad client interface: {name}() failed: {why}", hint=_START_HINT)
    return result


def _lldpad_listening() -> bool:
    """Is there an lldpad control socket in this network namespace?  (Checked before ``clif_open()``,
    which would print ``connect: Connection refused`` on stderr, and the hook's stderr is what the
    admin reads.)"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(LLDPAD_SOCKET)
    except OSError:
        return False
    finally:
        probe.close()
    return True


# -- the connection ----------------------------------------------------------------------------------------


_LIST_FIRST = 0.005  # first look at lldpad's VSI listing this long after the requests went out ...
_LIST_GROWTH = 1.25  # ... then each interval this much longer ...
_LIST_CAP = 0.100  # ... up to this


class NotSent(DeadlineExceeded):
    """A VSI request left unsent: the switch did not answer an earlier request on the same uplink."""


_open_in_process: Clif | None = None


class Clif:
    """One control connection to the lldpad of the current network namespace (a context manager).

    ``timeout`` bounds each command's wait for lldpad's reply.  Raises PeerUnavailable when the library
    or lldpad is missing, DeadlineExceeded when lldpad does not answer in time.
    """

    def __init__(self, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._conn: object = None
        self._fd = -1
        self._attached = False
        self._events: list[bytes] = []

    # -- life cycle -------------------------------------------------------------------------------------

    def open(self) -> Clif:
        """Connect (done by ``with``)."""
        global _open_in_process
        if self._conn is not None:
            return self
        _load()
        if _open_in_process is not None:
            raise FeatureError(
                "an lldpad client connection is already open in this process",
                hint="use that connection (liblldp_clif allows one per process)",
            )
        if not _lldpad_listening():
            raise PeerUnavailable(
                "lldpad is not running (no control socket @/com/intel/lldpad in this network namespace)",
                hint=_START_HINT,
            )
        conn = _call("clif_open")
        try:
            fd = _call("clif_get_fd", conn)
            if not isinstance(fd, int):  # restype c_int: ctypes always hands back an int
                raise TypeError(f"clif_get_fd() returned {fd!r}")
            self._fd = fd
        except BaseException:
            _call("clif_close", conn)
            raise
        self._conn = conn
        _open_in_process = self
        return self

    def close(self) -> None:
        """Detach (if attached) and close; safe to call twice."""
        global _open_in_process
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._attached:
                self._attached = False
                # Closing the socket ends the attachment on lldpad's side as well, so a failure is harmless.
                with contextlib.suppress(HookError):
                    self._command(b"D", what="detach")
        finally:
            self._fd = -1
            if _open_in_process is self:
                _open_in_process = None
            _call("clif_close", conn)

    def __enter__(self) -> Clif:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- message exchange -------------------------------------------------------------------------------

    def _recv(self, until: float) -> bytes | None:
        """One datagram, or None at ``until``; a past ``until`` still takes what is already there.

        poll(), not select(): any fd number works.
        """
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            left = until - time.monotonic()
            if poller.poll(max(0, int(left * 1000 + 0.999))):
                return os.read(self._fd, MAX_CLIF_MSGBUF * 2)
            if left <= 0:
                return None

    def _command(self, message: bytes, *, what: str, timeout: float | None = None) -> Reply:
        """Send ``message``, return lldpad's reply; events arriving meanwhile are kept for :meth:`_event`."""
        if self._conn is None:
            raise FeatureError("lldpad client connection is not open", hint="use 'with Clif() as c:'")
        try:
            os.write(self._fd, message)
        except OSError as exc:
            raise PeerUnavailable(f"cannot send {what} to lldpad: {exc.strerror}", hint=_START_HINT) from exc
        until = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                raw = self._recv(until)
            except OSError as exc:
                raise PeerUnavailable(
                    f"lldpad connection failed during {what}: {exc.strerror}", hint=_START_HINT
                ) from exc
            if raw is None:
                raise DeadlineExceeded(
                    f"lldpad did not answer {what} within {self.timeout if timeout is None else timeout:g} s",
                    hint="lldpad may be hung or overloaded: check 'lldptool -p' and lldpad's log; restart lldpad",
                )
            if raw[:1] == CMD_RESPONSE.encode():
                return parse_reply(raw)
            self._events.append(raw)

    def _attach(self) -> None:
        if not self._attached:
            reply = self._command(f"A{LLDP_MOD_VDP22:x}".encode(), what="attach")
            if not reply.ok:
                raise FeatureError(
                    f"lldpad refused to attach this client (status {reply.status})", hint="see lldpad's log"
                )
            self._attached = True

    def _drop_events(self, instance: str) -> None:
        """Discard events about VSI ``instance`` already queued or waiting on the socket."""
        now = time.monotonic()
        while True:
            raw = self._recv(now)
            if raw is None:
                break
            self._events.append(raw)
        self._events = [
            raw
            for raw in self._events
            if not any(dict(r).get("uuid", "").lower() == instance for r in _vsi_records(raw))
        ]

    # -- public API -------------------------------------------------------------------------------------

    def ping(self) -> int:
        """lldpad's pid (``P`` -> ``R00PPONG<pid>``)."""
        reply = self._command(b"P", what="ping")
        m = re.match(r"PPONG(\d+)", reply.body)
        if not reply.ok or not m:
            raise FeatureError(f"unexpected answer to ping from lldpad: {reply.body[:40]!r}", hint="restart lldpad")
        return int(m.group(1))

    def _evb_tlv(self, ifname: str, *, neighbour: bool) -> Evb22Tlv | None:
        reply = self._command(evb_request(ifname, neighbour=neighbour), what="an EVB query")
        if not reply.ok:
            raise _status_error(reply.status, "the EVB query", ifname)
        return parse_evb_reply(reply.body)

    def _config(self, ifname: str, tlvid: int, arg: str, *, module: int = LLDP_MOD_MAND) -> str | None:
        """One configuration value (``lldptool -t -i IF -V TLV -c ARG``); None when lldpad has none."""
        reply = self._command(config_request(ifname, tlvid, arg, module=module), what=f"a query for {arg}")
        if not reply.ok:
            if reply.status in (CMD_DEVICE_NOT_FOUND, CMD_AGENT_NOT_FOUND):
                raise _status_error(reply.status, f"the query for {arg}", ifname)
            return None
        values = dict(parse_args(_strip_command_header(reply.body)))
        return values.get(arg)

    def evb_status(self, ifname: str) -> EvbStatus:
        """EVB22 on ``ifname``: enabled here, configured role, local and neighbour TLV (like
        ``lldptool -t [-n] -i IF -g ncb -V evb``).  PeerUnavailable when lldpad does not know ``ifname``."""
        enabled = self._config(ifname, TLVID_EVB22, "enableTx") == "yes"
        role = self._config(ifname, TLVID_EVB22, "evbmode")
        return EvbStatus(
            ifname=ifname,
            enabled=enabled,
            role=role,
            local=self._evb_tlv(ifname, neighbour=False),
            neighbour=self._evb_tlv(ifname, neighbour=True),
        )

    def vsi_list(self, ifname: str, mode: str = "assoc") -> list[dict[str, str]]:
        """lldpad's VSIs on ``ifname`` in ``mode`` (what ``vdptool -t`` lists): one dict per VSI with the
        keys lldpad reports (``uuid``, ``filter`` = ``VLAN-MAC`` with the VLAN the switch chose, ...)."""
        reply = self._command(vdp22_table_request(ifname, mode), what="a VSI query")
        if not reply.ok:
            return []
        return [dict(record) for record in parse_vsi_list(_strip_command_header(reply.body))]

    def holds_vsi(self, ifname: str, instance: str) -> bool | None:
        """Does lldpad hold VSI ``instance`` on ``ifname`` in any mode?  Asked for this VSI alone (what
        ``vdptool -t -V MODE -c uuid=U`` sends: GETTLV with CONFIG|ARG|LOCAL), which answers at any table
        size, unlike the whole listing; None when lldpad refuses the query."""
        wanted = instance.lower()
        for mode in ("deassoc", "assoc", "preassoc-rr", "preassoc"):  # a VSI being withdrawn: deassoc
            command = build_command(
                LLDP_MOD_VDP22, CMD_GETTLV, OP_CONFIG | OP_ARG | OP_LOCAL, ifname, VDP22_MODES[mode],
                [("uuid", wanted)],
            )
            reply = self._command(command, what="a VSI query")
            if not reply.ok:
                return None
            listed = parse_vsi_list(_strip_command_header(reply.body))
            if any(dict(r).get("uuid", "").lower() == wanted for r in listed):
                return True
        return False

    def vdp_mode(self, ifname: str) -> str | None:
        """Which lldpad module takes VSI requests for ``ifname``: ``"vdp22"`` (IEEE 802.1Qbg-2012, station
        role), ``"draft"`` (VDP draft 0.2 enabled), or None (neither configured, unknown interface, or
        bridge role).  This is lldpad's routing; whether a switch answers is :meth:`evb_status`."""
        reply = self._command(vdp22_table_request(ifname), what="a VDP22 query")
        if reply.ok:
            return "vdp22"
        try:
            draft = self._config(ifname, TLVID_VDP_DRAFT, "enableTx")
        except PeerUnavailable:
            return None
        return "draft" if draft == "yes" else None

    def vsi(
        self,
        ifname: str,
        *,
        mode: str,
        manager_id: int,
        type_id: int,
        type_version: int,
        instance: uuid.UUID,
        mac: str,
        vlan: int,
        hints: str = "none",
        wait: float = 2.0,
    ) -> VsiReply:
        """One VDP22 VSI request with migration hints, answered by the switch within ``wait`` seconds.

        ``mode``: ``assoc``, ``preassoc``, ``preassoc-rr`` or ``deassoc``; ``hints``: ``to`` (M-bit: this
        host is the migration target), ``from`` (S-bit: the source), ``none``.  ``vlan`` 0 asks the switch
        to choose (read it from the reply).  lldpad 1.1 puts on the wire the hints of the request that
        created the VSI, for every later request about it too (measured; see tests/lab/test_clif.py).
        Raises PeerRefused/PeerUnavailable when lldpad refuses the command, DeadlineExceeded when the
        switch does not answer within ``wait`` (lldpad keeps the VSI pending then).
        """
        command = VsiCommand(
            ifname=ifname,
            mode=mode,
            manager_id=manager_id,
            type_id=type_id,
            type_version=type_version,
            instance=instance,
            mac=mac,
            vlan=vlan,
            hints=hints,
        )
        result = self.vsi_many([command], wait=wait)[0]
        if isinstance(result, HookError):
            raise result
        return result

    def vsi_many(
        self, commands: Sequence[VsiCommand], *, wait: float, deadline: float | None = None
    ) -> list[VsiReply | HookError]:
        """Several VSI requests (see :meth:`vsi`); one result per command, in order.

        Uplinks run in parallel, the requests of one uplink one after another (lldpad 1.1 loses switch
        responses with several VSIs in flight on one uplink, see vdp.qbg.netlink.LldpadClient.submit).  Each
        request gets ``wait`` seconds from its sending, capped by ``deadline`` (a ``time.monotonic()``
        value).  When the switch leaves one unanswered, that uplink's later requests fail unsent; when
        lldpad itself fails (no answer, connection lost), every request not settled yet fails with it.
        """
        results: list[VsiReply | HookError | None] = [None] * len(commands)
        queues: dict[str, list[int]] = {}
        for i, c in enumerate(commands):
            queues.setdefault(c.ifname, []).append(i)
        in_flight: dict[str, tuple[int, float]] = {}  # instance -> (index, end of its wait)
        self._attach()
        # lldpad sends no client event when the switch refuses a change of a VSI it holds with KEEP (e.g.
        # an ASSOCIATE after PREASSOCIATE_RR; measured with lldpad 1.1): only its VSI listing shows the new
        # status.  A status listed before the request was sent is not its answer.
        before = {ifname: self._listed(ifname) for ifname in queues}
        poll_at, interval = time.monotonic() + _LIST_FIRST, _LIST_FIRST

        def launch(ifname: str) -> None:
            queue = queues[ifname]
            while queue:
                i = queue.pop(0)
                c = commands[i]
                wanted = str(c.instance).lower()
                end = time.monotonic() + wait if deadline is None else min(time.monotonic() + wait, deadline)
                # lldpad repeats events (e.g. when the switch retransmits a response): drop what is queued
                # for this VSI; below only an event in the requested state or "deassoc" (a refusal) counts.
                self._drop_events(wanted)
                reply = self._command(
                    vsi_request(**as_dict(c)),
                    what=f"the VSI {c.mode} request",
                    timeout=min(self.timeout, max(end - time.monotonic(), 0.001)),
                )
                if reply.ok:
                    in_flight[wanted] = (i, end)
                    return
                label = REQUEST_LABELS.get(c.mode, c.mode)
                results[i] = _status_error(reply.status, f"{label} of VSI {c.instance}", c.ifname)

        try:
            for ifname in queues:
                launch(ifname)
            while in_flight:
                raw = self._next_event(min(poll_at, *(end for _, end in in_flight.values())))
                if raw is None and time.monotonic() >= poll_at:
                    for wanted, (i, _end) in list(in_flight.items()):
                        c = commands[i]
                        listed, prior = self._listed(c.ifname).get(wanted), before[c.ifname].get(wanted)
                        if listed is not None and (prior is None or listed.fields != prior.fields):
                            refusal = vsi_reply_from_event(c.mode, listed.fields)
                            if refusal.response & 0xFF not in (VDP22_SUCCESS, VDP22_NONE):
                                del in_flight[wanted]
                                results[i] = refusal
                                launch(c.ifname)
                    interval = min(interval * _LIST_GROWTH, _LIST_CAP)
                    poll_at = time.monotonic() + interval
                    continue
                if raw is None:  # the earliest wait is over: that switch port is silent
                    now = time.monotonic()
                    for wanted, (i, end) in list(in_flight.items()):
                        if end <= now:
                            del in_flight[wanted]
                            c = commands[i]
                            results[i] = DeadlineExceeded(
                                f"{REQUEST_LABELS.get(c.mode, c.mode)} on {c.ifname}: no VDP answer from the switch "
                                f"within {wait:g} s (VSI {c.instance})",
                                hint=f"check the uplink and EVB negotiation (lldptool -t -n -i {c.ifname} -g ncb "
                                "-V evb); lldpad keeps the request pending",
                            )
                            for j in queues[c.ifname]:
                                results[j] = NotSent(
                                    f"VSI {commands[j].instance} on {c.ifname} not sent: the switch did not answer "
                                    "the previous request",
                                    hint=f"check the uplink and EVB negotiation (lldptool -t -n -i {c.ifname} "
                                    "-g ncb -V evb)",
                                )
                            queues[c.ifname].clear()
                    continue
                for record in _vsi_records(raw):
                    values = dict(record)
                    wanted = values.get("uuid", "").lower()
                    if wanted not in in_flight:
                        continue
                    i = in_flight[wanted][0]
                    reply = vsi_reply_from_event(commands[i].mode, record)
                    # The answer: the requested state, "deassoc" (refused), or a refusal that left the VSI
                    # in its previous state (KEEP: e.g. an ASSOCIATE refused after PREASSOCIATE_RR reports
                    # mode preassoc-rr with the keep status) -- not a repeat of an earlier success.
                    refused = reply.response & 0xFF not in (VDP22_SUCCESS, VDP22_NONE)
                    if reply.mode not in (commands[i].mode, "deassoc") and not refused:
                        continue
                    del in_flight[wanted]
                    results[i] = reply
                    launch(commands[i].ifname)
        except HookError as exc:  # lldpad failed us: whatever is not settled fails the same way
            return [exc if r is None else r for r in results]
        return [r for r in results if r is not None]

    def _listed(self, ifname: str) -> dict[str, VsiReply]:
        """lldpad's VSI listing of ``ifname`` by instance (``hints`` there is the VSI's last status)."""
        try:
            rows = self.vsi_list(ifname)
        except HookError:  # an optional look: the events and the wait still decide
            return {}
        return {r.get("uuid", "").lower(): vsi_reply_from_event(r.get("mode", ""), list(r.items())) for r in rows}

    def _next_event(self, until: float) -> bytes | None:
        """The next queued or arriving event, or None when ``until`` passes first."""
        if self._events:
            return self._events.pop(0)
        try:
            return self._recv(until)
        except OSError as exc:
            raise PeerUnavailable(f"lldpad connection failed: {exc.strerror}", hint=_START_HINT) from exc


class ClifEvents:
    """An attached client connection that only listens: lldpad's VDP22 events (``M<module>E<level>{vsi}``).

    lldpad 1.1 sends every VDP22 event to every attached client connection, whichever connection made the
    VSI, and also after the one that made it has closed: a switch-initiated de-association of a VSI a hook
    made through this interface (a migrated-in guest's) reaches a listener here within a few ms, while no
    netlink listener hears of it (measured; tests/lab/test_clif_events.py).  So the agent keeps one.

    A plain socket, not the library: liblldp_clif binds one address per process (see :class:`Clif`),
    and the agent opens :class:`Clif` connections for its requests while this one stays attached.  Bound to
    ``@/com/intel/lldpad/<pid>.events`` so ``ss -x`` names it like lldpad's tools' connections.  lldpad
    forgets its attached clients when it restarts: open a new one then (the caller watches lldpad's pid).
    """

    def __init__(self, *, timeout: float = 2.0) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(f"{LLDPAD_SOCKET}/{os.getpid()}.events")
            sock.connect(LLDPAD_SOCKET)
            sock.settimeout(timeout)
            sock.send(f"A{LLDP_MOD_VDP22:x}".encode())
            while True:  # events may come before the reply
                raw = sock.recv(MAX_CLIF_MSGBUF * 2)
                if raw[:1] == CMD_RESPONSE.encode():
                    break
            if not parse_reply(raw).ok:
                raise PeerRefused(f"lldpad refused to attach a client ({raw[:8]!r})", hint="see lldpad's log")
            sock.setblocking(False)
        except (OSError, ValueError) as exc:
            sock.close()
            raise PeerUnavailable(f"cannot attach to lldpad's client interface: {exc}", hint=_START_HINT) from exc
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._fd = sock.fileno()  # kept: a closed socket's fileno() is -1, and the caller's select map has this

    def fileno(self) -> int:
        return self._fd

    def read(self) -> list[dict[str, str]]:
        """The VSI records of every VDP22 event waiting now (``mode``, ``uuid``, ``filter``, ...); other
        messages are skipped.  PeerUnavailable when the connection failed (lldpad went away)."""
        records: list[dict[str, str]] = []
        while True:
            try:
                raw = self._sock.recv(MAX_CLIF_MSGBUF * 2)
            except BlockingIOError:
                return records
            except OSError as exc:
                raise PeerUnavailable(f"lldpad client connection failed: {exc.strerror}", hint=_START_HINT) from exc
            if not raw:  # lldpad sends no empty message: a closed connection
                raise PeerUnavailable("lldpad client connection closed", hint=_START_HINT)
            event = parse_event(raw)
            if event is not None and event[0] == LLDP_MOD_VDP22:
                records.extend(dict(r) for r in event[1])

    def close(self) -> None:
        """Detach (best effort: closing ends the attachment on lldpad's side too) and close."""
        with contextlib.suppress(OSError):
            self._sock.send(b"D")
        self._sock.close()

    def __enter__(self) -> ClifEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lldpad_pid() -> int | None:
    """lldpad's pid in this network namespace (it is also its netlink port id), or None when the library
    or the daemon is missing.  Asks lldpad itself (a ping), so it is right across mount namespaces.

    Not ``clif_getpid()``: that prints to stdout/stderr on failure and binds the same client address as
    an open :class:`Clif`, so it fails while one is open; this reuses an open connection instead.
    """
    try:
        if _open_in_process is not None:
            return _open_in_process.ping()
        with Clif() as conn:
            return conn.ping()
    except HookError:
        return None
