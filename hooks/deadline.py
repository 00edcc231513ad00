"""Deadlines on the monotonic clock: one per invocation, one per exchange inside it."""

from __future__ import annotations

import time

__all__ = ["Deadline"]


class Deadline:
    """An absolute point on ``time.monotonic()``; ``None`` seconds would mean never, so it is not allowed."""

    def __init__(self, seconds: float, *, at: float | None = None) -> None:
        self.at = at if at is not None else time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def sooner(self, seconds: float) -> Deadline:
        """This deadline or ``seconds`` from now, whichever comes first (an exchange inside the invocation)."""
        return Deadline(0, at=min(self.at, time.monotonic() + seconds))

    def minus(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` before this one (keeps time in reserve for rollback)."""
        return Deadline(0, at=self.at - seconds)
