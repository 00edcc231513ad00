"""The NETLINK_ROUTE socket both wire clients (lldpad for 802.1Qbg, the kernel for 802.1Qbh) talk through.

Bound to a port id the kernel chooses, with sequence numbers that start at random (so replies meant for an
earlier client are never taken for ours) and a receive that honours a deadline.
"""

from __future__ import annotations

import os
import select
import socket
import time

from vdp.wire import netlink

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RouteSocket"]

_RECV_SIZE = 65536


class RouteSocket:
    """One NETLINK_ROUTE socket; a context manager that closes it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self._sock.bind((0, 0))
            self.own_port_id: int = self._sock.getsockname()[0]
        except OSError:
            self._sock.close()
            raise
        self._seq = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _recv_messages(self, until: float) -> list[tuple[netlink.NetlinkHeader, bytes]]:
        """Messages of one datagram, or [] when ``until`` (monotonic) passes first."""
        wait = until - time.monotonic()
        if wait > 0:
            ready, _, _ = select.select([self._sock], [], [], wait)
            if not ready:
                return []
        try:
            data = self._sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return []
        return netlink.split_messages(data)
