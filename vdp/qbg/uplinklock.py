"""One VDP request in flight per uplink across hook processes, and what the last holder measured.

lldpad 1.1 loses switch responses when several VSIs of one uplink are pending at once (measured: 4 in 20
four-VSI bursts), so every hook process that sends requests on an uplink holds ``STATE/uplink-IF.lock``
(``flock``) while it does.  When many guests start at once (a host boot, an evacuation landing: 128
guests, measured in tests/bench/test_bench_load.py) most of them wait here, so the wait must cost nothing:
it happens in the kernel (a blocking ``flock`` in a helper thread, the main thread waits on that thread
with a timeout), not in a poll loop of sleeping and retrying processes that, 127 of them, ate the CPU the
holder needed.  No SIGALRM: an alarm would interrupt whatever else the process is doing.

The lock file also carries one number, written by each holder: the seconds per request it measured on
the uplink (send to the switch's answer).  A waiter reads it before waiting (no lock needed) to know
how long its own requests will take, see :mod:`vdp.qbg.budget`.

Lock files are made only for interfaces of this host: a name from the guest's XML that is no interface
here creates nothing (the request then fails on its own, naming the uplink).
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator, Sequence

from hooks.errors import DeadlineExceeded
from hooks.journal import open_lock
from hooks.runner import state_dir

__all__ = ["Held", "UplinkBusy", "estimate", "hold", "lock_path"]


class UplinkBusy(DeadlineExceeded):
    """The uplink's lock did not come before the time this invocation could still use it."""


def lock_path(ifname: str) -> str | None:
    """The lock file of ``ifname``, or None when ``ifname`` is no interface of this host."""
    try:
        socket.if_nametoindex(ifname)  # the kernel's names never contain "/": safe in a path
    except OSError:
        return None
    return os.path.join(state_dir(), f"uplink-{ifname}.lock")


#: A figure older than this says nothing about the switch now: without it the next call sends and measures
#: again (else one slow minute would refuse every later guest unsent, and nothing would ever re-measure).
ESTIMATE_TTL = 120.0


def _read_estimate(fd: int) -> float:
    try:
        if time.time() - os.fstat(fd).st_mtime > ESTIMATE_TTL:
            return 0.0
        value = float(os.pread(fd, 32, 0).decode("ascii", "replace").strip() or 0)
    except (OSError, ValueError):
        return 0.0
    return value if 0 < value < 3600 else 0.0


def estimate(ifname: str) -> float:
    """Seconds per request on ``ifname`` as last measured by any hook (0.0: not known)."""
    path = lock_path(ifname)
    if path is None:
        return 0.0
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0.0
    try:
        return _read_estimate(fd)
    finally:
        os.close(fd)


def _flock_within(fd: int, until: float) -> bool:
    """Lock ``fd`` exclusively; False (and ``fd`` closed) when ``until`` passes first.

    Uncontended, one non-blocking try.  Contended, a helper thread blocks in ``flock`` and this thread
    waits for it with a timeout; a thread that gets the lock after we gave up closes ``fd`` itself,
    which releases it (the handshake under ``guard`` decides who owns ``fd``).
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    done = _thread.allocate_lock()
    done.acquire()
    guard = _thread.allocate_lock()
    state = {"finished": False, "got": False, "gave_up": False}

    def wait() -> None:
        got = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            got = False
        with guard:
            if state["gave_up"]:
                os.close(fd)  # releases the lock we no longer want
            else:
                state["finished"], state["got"] = True, got
        done.release()

    _thread.start_new_thread(wait, ())
    done.acquire(timeout=max(0.0, until - time.monotonic()))
    with guard:
        if state["finished"]:
            if state["got"]:
                return True
            os.close(fd)
            return False
        state["gave_up"] = True
    return False


class Held:
    """The uplink locks one invocation holds; ``estimates`` (ifname -> seconds per request, 0.0 when not
    known) as found, :meth:`measured` records this holder's figure for the next one."""

    def __init__(self, fds: dict[str, int]) -> None:
        self._fds = fds
        self.estimates = {ifname: _read_estimate(fd) for ifname, fd in fds.items()}
        self._measured: dict[str, float] = {}

    def measured(self, ifname: str, seconds_per_request: float) -> None:
        if ifname in self._fds and seconds_per_request > 0:
            self._measured[ifname] = seconds_per_request

    def _release(self) -> None:
        for ifname, fd in self._fds.items():
            value = self._measured.get(ifname)
            if value is not None:
                with contextlib.suppress(OSError):  # a figure for the next holder only, never a failure
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{value:.4f}\n".encode(), 0)
            os.close(fd)


@contextlib.contextmanager
def hold(ifnames: Sequence[str], *, until: float, what: str = "") -> Iterator[Held]:
    """Hold the locks of ``ifnames`` (sorted here: one order in every process, no deadlock).

    ``until`` is a ``time.monotonic()`` value: raises :class:`UplinkBusy` when a lock has not come by
    then.  Interfaces that do not exist here are skipped (no lock file is made for them).
    """
    fds: dict[str, int] = {}
    started = time.monotonic()
    try:
        for ifname in sorted(set(ifnames)):
            path = lock_path(ifname)
            if path is None:
                continue
            # < 0: a read-only or full state directory; a teardown must still go out, unserialised.
            fd = open_lock(path)
            if fd < 0:
                continue
            if not _flock_within(fd, until):
                raise UplinkBusy(
                    f"uplink {ifname} stayed busy with other guests' VDP requests for "
                    f"{time.monotonic() - started:.1f} s{what}",
                    hint="raise invocation_timeout in [hooks] of vdp-hooks.conf, or spread the guests' "
                    "ports over more uplinks",
                )
            fds[ifname] = fd
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    held = Held(fds)
    try:
        yield held
    finally:
        held._release()
