"""The time plan of one invocation's VDP requests: start a request only when it can finish.

Requests on one uplink go out one after another (lldpad loses answers otherwise, see vdp.qbg.uplinklock),
so a slow switch adds its answer time per port: 4 ports at 3 s are 12 s, and the rollback of a veto needs
as long again.  Running into the deadline half-way leaves VSIs pending at lldpad and the switch and
records behind; so before each request this plan asks whether the time left covers the requests still to
go *and* the rollback of everything this call set up on the uplink, at the answer time measured so far
(this call's slowest answer, else what the last holder of the uplink measured, see
:func:`vdp.qbg.uplinklock.estimate`).  When it does not, the remaining requests are not sent and the veto
says why and which settings to raise.

``setup_deadline`` is the invocation's deadline minus the rollback reserve (hooks/transaction.py
run_setup keeps ``exchange_timeout`` for it); the rollback may use that reserve and whatever the setup
leaves unused.
"""

from __future__ import annotations

import time

from hooks.errors import DeadlineExceeded

__all__ = ["Budget", "NoTime"]


class NoTime(DeadlineExceeded):
    """The time left cannot cover the requests still to go (and their rollback): nothing more was sent."""


class Budget:
    """Plans one call's serialised requests per uplink (see the module docstring)."""

    def __init__(
        self,
        *,
        setup_deadline: float,
        reserve: float,
        estimates: dict[str, float],
        settings: str,
        rollback: bool = True,
    ) -> None:
        self.setup_deadline = setup_deadline
        self.reserve = reserve if rollback else 0.0
        self.rollback = rollback  # False for teardown: nothing to undo, what does not fit stays pending
        self.history = dict(estimates)
        self.settings = settings  # "invocation_timeout = 15 s, exchange_timeout = 5 s": named in refusals
        self._slowest: dict[str, float] = {}
        self._answers: dict[str, list[float]] = {}
        self.skipped: set[object] = set()  # the requests not sent because of the plan (nothing to undo)

    def per_request(self, ifname: str) -> float:
        """Seconds one request on ``ifname`` is expected to take (0.0: nothing known yet)."""
        return self._slowest.get(ifname, self.history.get(ifname, 0.0))

    def latest_start(self, ifname: str, count: int) -> float:
        """The last moment (``time.monotonic()``) at which ``count`` requests on ``ifname`` may start."""
        est = self.per_request(ifname)
        undo = 2 if self.rollback else 1
        return min(self.setup_deadline - count * est, self.setup_deadline + self.reserve - undo * count * est)

    def refuse(self, ifname: str, remaining: int, done: int) -> str | None:
        """None when the next of ``remaining`` requests may go (``done`` already set up by this call on
        ``ifname``), else the reason, one line."""
        est = self.per_request(ifname)
        left = self.setup_deadline - time.monotonic()
        if not self.rollback:
            if done == 0:
                # A teardown's first request on an uplink always goes: unanswered in time it stays pending
                # (nothing half-done), and it is the only way a later attempt can find the VSI gone.
                return None
            remaining = 1  # then it sends what fits, one at a time; the rest stays pending
        need = remaining * est
        rollback = (done + remaining) * est if self.rollback else 0.0
        if est <= 0 or (need <= left and need + rollback <= left + self.reserve):
            return None
        return self.reason(ifname, remaining, done)

    def reason(self, ifname: str, remaining: int, done: int) -> str:
        """Why ``remaining`` requests on ``ifname`` are not sent (see :meth:`refuse`)."""
        est = self.per_request(ifname)
        left = max(self.setup_deadline - time.monotonic(), 0.0) + self.reserve
        if not self.rollback:
            remaining = 1
        need = remaining * est + ((done + remaining) * est if self.rollback else 0.0)
        undo = f" and the rollback of {done + remaining}" if self.rollback else ""
        return (
            f"not enough time left for the VDP requests on {ifname}: the switch answers in about {est:.1f} s "
            f"per request and they go one at a time, so {remaining} more request(s){undo} would need about "
            f"{need:.0f} s, {left:.1f} s are left; stopped before sending them -- raise invocation_timeout "
            f"({self.settings}) in [hooks] of vdp-hooks.conf, or spread the guest's ports over more uplinks"
        )

    def skip(self, request: object) -> None:
        """``request`` is not sent because of the plan."""
        self.skipped.add(request)

    def answered(self, ifname: str, seconds: float) -> None:
        """One request on ``ifname`` took ``seconds`` from sending to its answer."""
        self._slowest[ifname] = max(self._slowest.get(ifname, 0.0), seconds)
        self._answers.setdefault(ifname, []).append(seconds)

    def measured(self) -> dict[str, float]:
        """This call's mean answer time per uplink (for the next holder of the uplink)."""
        return {i: sum(a) / len(a) for i, a in self._answers.items() if a}
