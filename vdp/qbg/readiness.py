"""Waiting for an lldpad that has just started (a host boot, an lldpad restart) instead of vetoing.

Measured here (lldpad 1.1, restarted, then one ASSOCIATE over netlink every 50 ms): for ~1 s lldpad acks
ENXIO (its interfaces are not set up yet), then EPROTONOSUPPORT until ~0.7 s after EVB reports the bridge
(longer while EVB is not negotiated), then 0.  Neither answer means lldpad took the request: nothing is
pending, so sending it again is safe.  ENXIO is also lldpad's lasting answer for an interface without VDP,
so it counts as "not ready" only from an lldpad that started moments ago (its age from /proc).

Begin operations wait like ``reconnect begin`` does: within the exchange timeout (and the invocation's
deadline), retrying every :data:`RETRY` seconds; the veto, if readiness never came, says so.
"""

from __future__ import annotations

import errno
import os
import time

from hooks.errors import PeerUnavailable

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Callable

    from hooks.log import EventLog
    from vdp.ports import PortResult

__all__ = ["RETRY", "YOUNG", "NotReady", "lldpad_age", "not_ready", "retry_until_ready"]

RETRY = 0.25  # seconds between attempts
YOUNG = 60.0  # an lldpad started less than this long ago may still be setting up its interfaces


class NotReady(PeerUnavailable):
    """lldpad runs but does not take VDP requests on the uplink yet (it just started, EVB pending)."""


def lldpad_age(pid: int) -> float | None:
    """Seconds since process ``pid`` started (from /proc), None when that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in clock ticks
    except (OSError, ValueError, IndexError):
        return None


def not_ready(err: int, lldpad_pid: int) -> bool:
    """Does lldpad's refusal ``err`` (negative errno) of a request mean "not ready yet"?"""
    if err == -errno.EPROTONOSUPPORT:
        return True
    if err == -errno.ENXIO:
        age = lldpad_age(lldpad_pid)
        return age is not None and age < YOUNG
    return False


def retry_until_ready(
    results: dict[str, PortResult],
    send: Callable[[list[str]], dict[str, PortResult]],
    *,
    give_up: float,
    waited_for: str,
    log: EventLog | None = None,
) -> dict[str, PortResult]:
    """Send again (``send(keys)``) what ``results`` failed as :class:`NotReady`, until it goes through or
    ``give_up`` (a ``time.monotonic()`` value) comes; the last failures then say how long was waited
    (``waited_for`` names the limit, e.g. "exchange_timeout (5 s)").  ``log`` (an EventLog) gets a line
    per retry."""
    start = time.monotonic()
    while True:
        waiting = [k for k, r in results.items() if isinstance(r.error, NotReady)]
        if not waiting:
            return results
        if time.monotonic() + RETRY >= give_up:
            break
        first = results[waiting[0]].error
        if log is not None and first is not None:
            log.info("lldpad is not ready (%s); retrying", first.text)
        time.sleep(RETRY)
        results.update(send(waiting))
    waited = time.monotonic() - start
    for key in waiting:
        error = results[key].error
        assert error is not None
        results[key].error = NotReady(
            # lldpad's own line may carry a hint already: one "what to do" is enough
            f"{error.text.split(' -- ')[0]}; still so after waiting {waited:.1f} s for lldpad to become ready",
            hint=f"lldpad or EVB did not come up within {waited_for}: check EVB on the uplink "
            "(lldptool -t -n -i UPLINK -g ncb -V evb) and lldpad's log",
        )
    return results
