"""The agent hears libvirt: domain events through python3-libvirt, on a connection of its own.

Never used by a hook (a hook must not call libvirt: libvirtd waits for it, and a hook calling back into
libvirtd can deadlock it).  Only the agent (:mod:`hooks.agent`) opens this connection, read-only: it
never changes anything in libvirt, it only learns what happened to guests.

How it fits the agent's single-threaded ``select()`` loop:

* libvirt's own event loop (``virEventRegisterDefaultImpl``) runs in a daemon thread; it is what delivers
  the callbacks (and the connection's keep-alives).
* A second daemon thread owns the connection: it opens it (``openReadOnly``), registers the callbacks and
  a close callback, and waits; when libvirtd goes away (the close callback, or keep-alive loss: 5 s x 3)
  it reopens with backoff (``_RECONNECT_INITIAL`` doubling to ``_RECONNECT_MAX``: a refused connect() on
  a unix socket costs nothing, and after a libvirtd restart the agent should be back within seconds).
* Callbacks only append a :class:`Note` to a queue and write one byte to a socketpair: the agent adds
  :meth:`Listener.fileno` to its ``select()`` and :meth:`Listener.drain` s the queue in its own thread.
  Everything the agent then does with a guest happens there, under the guest's journal lock.

Without python3-libvirt, or with ``[agent] libvirt_uri`` empty, :func:`open_listener` returns None and
logs that libvirt events are off: the agent still does everything that needs only the journal and lldpad.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import uuid
from collections.abc import Mapping

from hooks.config import Option
from hooks.log import EventLog
from hooks.plain import plain

TYPE_CHECKING = False
# Any: the libvirt binding is untyped (its connection, domains and callbacks).
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CONNECTED", "DISCONNECTED", "LIBVIRT_OPTIONS", "Listener", "NotConnected", "Note", "open_listener"]

#: ``[agent]`` keys of this module (merged into hooks.agent.AGENT_OPTIONS).
LIBVIRT_OPTIONS: Mapping[str, Option] = {
    "libvirt_uri": Option(
        str,
        "qemu:///system",
        "libvirt connection the agent hears domain events on (read-only); empty: libvirt events off",
    ),
}

_RECONNECT_INITIAL = 0.5
_RECONNECT_MAX = 5.0
_KEEPALIVE = (5, 3)  # seconds between libvirt keep-alives, misses before the connection counts as dead

#: Kinds of :class:`Note` besides libvirt's own event names.
CONNECTED, DISCONNECTED = "connected", "disconnected"
LIFECYCLE, DEVICE_ADDED, DEVICE_REMOVED, METADATA = "lifecycle", "device-added", "device-removed", "metadata"


class NotConnected(Exception):
    """libvirtd cannot be asked right now (not connected, or it went away during the call)."""


@plain(frozen=True)
class Note:
    """One thing libvirt told us: ``kind`` (lifecycle, device-added, ..., connected, disconnected), the
    guest (None for connection notes), libvirt's event and detail numbers, and a word for the log."""

    kind: str
    uuid: uuid.UUID | None = None
    name: str = ""
    event: int = -1
    detail: int = -1
    text: str = ""


#: (when asked, libvirt's (state, reason) or None for "not running here", the live XML)
View = tuple[float, "tuple[int, int] | None", "bytes | None"]

_LIFECYCLE_NAMES = (
    "defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown", "pmsuspended", "crashed",
)


class Listener:
    """A read-only libvirt connection kept open by its own thread; events queued for the agent's loop."""

    def __init__(self, libvirt: Any, uri: str, log: EventLog) -> None:
        self._lv = libvirt
        self.uri = uri
        self.log = log
        self._queue: collections.deque[Note] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conn: Any = None
        self._lost = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        #: What libvirt said about a guest just before an attempt (hooks.libvirtsync.look), for the attempt.
        self.views: dict[uuid.UUID, View | NotConnected] = {}

    # -- for the agent's loop ---------------------------------------------------------------------

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def drain(self) -> list[Note]:
        """Everything queued since the last call (oldest first); empties the wake socket."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        notes = []
        while self._queue:
            notes.append(self._queue.popleft())
        return notes

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def running(self) -> dict[uuid.UUID, str]:
        """The guests libvirt runs here (active domains, paused ones too): UUID -> name."""
        conn = self._need()
        try:
            doms = conn.listAllDomains(self._lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            return {uuid.UUID(d.UUIDString()): d.name() for d in doms}
        except self._lv.libvirtError as exc:
            raise NotConnected(f"libvirt: {exc}") from None

    def state(self, guest: uuid.UUID) -> tuple[int, int] | None:
        """libvirt's (state, reason) of an active guest; None when it is not running here."""
        conn = self._need()
        try:
            dom = conn.lookupByUUIDString(str(guest))
            if not dom.isActive():
                return None
            state, reason = dom.state()
            return int(state), int(reason)
        except self._lv.libvirtError as exc:
            if exc.get_error_code() == self._lv.VIR_ERR_NO_DOMAIN:
                return None
            raise NotConnected(f"libvirt: {exc}") from None

    def live_xml(self, guest: uuid.UUID) -> bytes | None:
        """The running guest's live domain XML (interfaces as they are now, metadata as edited with
        ``--live``); None when it is not running here."""
        conn = self._need()
        try:
            dom = conn.lookupByUUIDString(str(guest))
            if not dom.isActive():
                return None
            return bytes(dom.XMLDesc(0).encode())
        except self._lv.libvirtError as exc:
            if exc.get_error_code() == self._lv.VIR_ERR_NO_DOMAIN:
                return None
            raise NotConnected(f"libvirt: {exc}") from None

    def _need(self) -> Any:
        conn = self._conn
        if conn is None:
            raise NotConnected(f"not connected to libvirt ({self.uri})")
        return conn

    # -- the threads ------------------------------------------------------------------------------

    def start(self) -> None:
        self._lv.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised; never printed
        self._lv.virEventRegisterDefaultImpl()  # before the first connection, once per process
        for name, target in (("libvirt-events", self._event_loop), ("libvirt-connect", self._connect_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop reconnecting and close the connection (the event-loop thread dies with the process)."""
        self._stopping.set()
        self._lost.set()
        for thread in self._threads[1:]:
            thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def _event_loop(self) -> None:
        while not self._stopping.is_set():
            if self._lv.virEventRunDefaultImpl() < 0:
                self._stopping.wait(0.1)

    def _connect_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                conn = self._open()
            except self._lv.libvirtError as exc:
                failures += 1
                if failures == 1:
                    self.log.warning("libvirt (%s) unreachable: %s; retrying with backoff", self.uri, exc,
                                     outcome="retry")
                self._stopping.wait(min(_RECONNECT_MAX, _RECONNECT_INITIAL * 2 ** min(failures - 1, 8)))
                continue
            failures = 0
            self._lost.clear()
            self._conn = conn
            self.log.info("libvirt events on (%s)", self.uri, outcome="ok")
            self._post(Note(CONNECTED))
            self._lost.wait()
            self._conn = None
            with contextlib.suppress(Exception):  # libvirtd is gone already, or we stop
                conn.unregisterCloseCallback()
            with contextlib.suppress(Exception):
                conn.close()
            if not self._stopping.is_set():
                self.log.warning("libvirt (%s) went away; reconnecting", self.uri, outcome="retry")
                self._post(Note(DISCONNECTED))

    def _open(self) -> Any:
        lv = self._lv
        conn = lv.openReadOnly(self.uri)
        try:
            conn.setKeepAlive(*_KEEPALIVE)
            conn.registerCloseCallback(lambda _conn, _reason, _opaque: self._lost.set(), None)
            conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
            conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, self._on_device_added, None)
            conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._on_device_removed, None)
            conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, self._on_metadata, None)
        except lv.libvirtError:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        return conn

    # -- callbacks (libvirt's event-loop thread: queue and wake, nothing else) ----------------------

    def _post(self, note: Note) -> None:
        self._queue.append(note)
        with contextlib.suppress(OSError):  # full: the agent has a wake-up pending already; closed: stopping
            self._wake_w.send(b"!")

    def _note(self, kind: str, dom: Any, event: int = -1, detail: int = -1, text: str = "") -> None:
        self._post(Note(kind, uuid.UUID(dom.UUIDString()), dom.name(), event, detail, text))

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        name = _LIFECYCLE_NAMES[event] if 0 <= event < len(_LIFECYCLE_NAMES) else str(event)
        self._note(LIFECYCLE, dom, event, detail, f"{name} ({detail})")

    def _on_device_added(self, _conn: Any, dom: Any, alias: str, _opaque: Any) -> None:
        self._note(DEVICE_ADDED, dom, text=alias)

    def _on_device_removed(self, _conn: Any, dom: Any, alias: str, _opaque: Any) -> None:
        self._note(DEVICE_REMOVED, dom, text=alias)

    def _on_metadata(self, _conn: Any, dom: Any, mtype: int, nsuri: str, _opaque: Any) -> None:
        self._note(METADATA, dom, mtype, text=nsuri or "")


def open_listener(settings: Mapping[str, Any], log: EventLog) -> Listener | None:
    """The started listener, or None (logged) when libvirt events are off here."""
    uri = str(settings.get("libvirt_uri", "")).strip()
    if not uri:
        log.info("libvirt events off ([agent] libvirt_uri is empty)")
        return None
    try:
        import libvirt
    except ImportError as exc:
        log.warning(
            "libvirt events off: python3-libvirt is not installed (%s); guests resumed after a migration, hot-plug "
            "and guests that vanished without release end are not handled", exc, outcome="off",
        )
        return None
    listener = Listener(libvirt, uri, log)
    listener.start()
    return listener
