"""Who decides whether a failure vetoes: emergency override > port > guest > host config.

The emergency override is a host-wide evacuation switch (``vdp-hooks emergency --for 1h``): until it
expires nothing is required on this host, so guests land whatever the state of their network.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence

from hooks.config import Config
from hooks.event import Event, PortSpec
from hooks.plain import plain

__all__ = ["Decision", "Emergency", "Policy", "clear_emergency", "read_emergency", "set_emergency"]

_EMERGENCY_FILE = "emergency"


@plain(frozen=True)
class Emergency:
    until: float  # wall-clock epoch seconds
    reason: str

    @property
    def active(self) -> bool:
        return time.time() < self.until


def read_emergency(state_dir: str) -> Emergency | None:
    """The override if one is set and not expired."""
    try:
        with open(os.path.join(state_dir, _EMERGENCY_FILE), "rb") as fh:
            doc = json.loads(fh.read())
        found = Emergency(float(doc["until"]), str(doc.get("reason", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if found.active else None


def set_emergency(state_dir: str, seconds: float, reason: str) -> Emergency:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    found = Emergency(time.time() + seconds, reason)
    path = os.path.join(state_dir, _EMERGENCY_FILE)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"until": found.until, "reason": reason}, fh)
    os.rename(tmp, path)
    return found


def clear_emergency(state_dir: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state_dir, _EMERGENCY_FILE))
        return True
    return False


@plain(frozen=True)
class Decision:
    """Whether a failure vetoes, and which level said so (for the veto line, log lines, ``replay --dry-run``)."""

    required: bool
    source: str  # "emergency override", "port MAC", "guest metadata" or "host config"


_EMERGENCY = Decision(False, "emergency override")


@plain(frozen=True)
class Policy:
    """Resolves "is this required?" for one invocation."""

    config: Config
    event: Event
    emergency: Emergency | None = None

    def decide(self, feature: str, port: PortSpec | None = None) -> Decision:
        """The first level that says anything: emergency override > port > guest > host config."""
        if self.emergency is not None:
            return _EMERGENCY
        if port is not None and port.required is not None:
            return Decision(port.required, f"port {port.key}")
        if feature in self.event.feature_policy:
            return Decision(self.event.feature_policy[feature], "guest metadata")
        return Decision(self.config.feature_required(feature), "host config")

    def decide_all(self, feature: str, ports: Sequence[PortSpec]) -> Decision:
        """For a failure of ``feature`` as a whole: it concerns every port it serves, so it vetoes if any of
        them is required (the first such decides); with no port, the guest or host level decides."""
        decisions = [self.decide(feature, p) for p in ports]
        return next((d for d in decisions if d.required), decisions[0] if decisions else self.decide(feature))
