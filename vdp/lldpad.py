"""Where the netlink client of lldpad used to live; kept for callers not moved yet (the agent, benches).

The code is ``vdp.qbg.netlink`` (the dialogue) and ``vdp.qbg.session`` (finding lldpad); new code imports
those.  ``LldpadClient`` here still finds lldpad by itself when no pid is given.
"""

from __future__ import annotations

from vdp.qbg import netlink
from vdp.qbg.netlink import DISASSOCIATED, NOTHING_HELD, VsiRequest, VsiResult
from vdp.qbg.session import LLDPAD_PID_FILE, QbgSession, find_lldpad_pid
from vdp.wire.netlink import ASSOCIATE, DISASSOCIATE, PREASSOCIATE, PREASSOCIATE_RR, VsiType

__all__ = [
    "ASSOCIATE",
    "DISASSOCIATE",
    "DISASSOCIATED",
    "LLDPAD_PID_FILE",
    "NOTHING_HELD",
    "PREASSOCIATE",
    "PREASSOCIATE_RR",
    "LldpadClient",
    "VsiRequest",
    "VsiResult",
    "VsiType",
    "find_lldpad_pid",
]


class LldpadClient(netlink.LldpadClient):
    """``vdp.qbg.netlink.LldpadClient`` that finds lldpad itself (``find_lldpad_pid``) unless told, and
    asks lldpad's client interface what netlink does not tell through a session of its own."""

    def __init__(self, *, lldpad_pid: int | None = None, port_id: int | None = None, exchange_timeout: float = 10.0):
        self._session = QbgSession(exchange_timeout=exchange_timeout)
        super().__init__(
            lldpad_pid=find_lldpad_pid() if lldpad_pid is None else lldpad_pid,
            port_id=port_id,
            exchange_timeout=exchange_timeout,
            clif=self._session.peek,
        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._session.close()
