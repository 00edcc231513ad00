"""The host-side checks of an 802.1Qbg uplink before anything is reserved: lldpad reachable, EVB
negotiated, VDP configured -- and, for an lldpad that started moments ago, the wait for it to get there.
"""

from __future__ import annotations

import time

from hooks.errors import HookError, PeerUnavailable
from hooks.links import link_state
from vdp.qbg import readiness

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Callable

    from hooks.log import EventLog
    from vdp.qbg.session import QbgSession

__all__ = ["check_qbg", "when_ready"]


def check_qbg(session: QbgSession, ifname: str) -> None:
    """Raise the reason ``ifname`` cannot take 802.1Qbg requests now (PeerUnavailable, ...), if any."""
    if session.clif_available():
        try:
            _check_clif(session, ifname)
        except HookError:
            session.drop_clif()  # each check starts on a fresh connection, as lldpad's tools do
            raise
    elif session.lldpad_pid() is None:
        raise PeerUnavailable("lldpad is not running", hint="start lldpad (systemctl start lldpad)")
    else:
        session.table(ifname)  # lldpad refuses uplinks without VDP with a clear error


def _check_clif(session: QbgSession, ifname: str) -> None:
    conn = session.clif()
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


def when_ready(
    check: Callable[[], HookError | None],
    ifname: str,
    session: QbgSession,
    give_up: float,
    log: EventLog,
) -> HookError | None:
    """``check()``, waiting (as prepare begin does, ``vdp.qbg.readiness``) for an lldpad that started
    moments ago: a guest restored or migrated in at host boot meets lldpad before EVB is up.  An lldpad
    that has run for a while, or none at all, is answered at once."""
    error = check()
    if not isinstance(error, PeerUnavailable) or link_state(ifname):
        return error
    pid = session.lldpad_pid()
    age = readiness.lldpad_age(pid) if pid is not None else None
    if age is None or age >= readiness.YOUNG:
        return error
    start = time.monotonic()
    while isinstance(error, PeerUnavailable) and time.monotonic() + readiness.RETRY < give_up:
        log.info("lldpad started %.1f s ago and is not ready (%s); retrying", age, error.text)
        time.sleep(readiness.RETRY)
        error = check()
    if not isinstance(error, PeerUnavailable):
        return error
    return readiness.NotReady(
        f"{error.text}; still so after waiting {time.monotonic() - start:.1f} s for lldpad (started "
        f"{age:.0f} s before) to become ready",
        hint=error.hint_text or None,
    )
