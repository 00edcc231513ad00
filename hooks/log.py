"""Logging: syslog (journald picks it up) and/or a file, one line per fact, with the invocation's fields.

Every line carries guest name and UUID, operation, feature, port, outcome and milliseconds, so an admin
can grep one guest's story across hosts.  Nothing here ever writes to stdout or stderr.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from collections.abc import MutableMapping
from typing import Any

__all__ = ["LOGGER_NAME", "EventLog", "setup_logging"]

LOGGER_NAME = "vdp-hooks"
_FORMAT = (
    "guest=%(guest)s uuid=%(uuid)s op=%(op)s feature=%(feature)s port=%(port)s outcome=%(outcome)s "
    "ms=%(ms)s: %(message)s"
)
_DEFAULTS = {"guest": "-", "uuid": "-", "op": "-", "feature": "-", "port": "-", "outcome": "-", "ms": "-"}


class _Defaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _DEFAULTS.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def setup_logging(*, syslog: bool, log_file: str, debug: bool) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.addFilter(_Defaults())
    if syslog and os.path.exists("/dev/log"):
        handler: logging.Handler = logging.handlers.SysLogHandler(
            "/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        handler.setFormatter(logging.Formatter(f"libvirt-vdp-hooks[{os.getpid()}]: {_FORMAT}"))
        logger.addHandler(handler)
    if log_file:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter(f"%(asctime)s [{os.getpid()}] %(levelname)s {_FORMAT}"))
        logger.addHandler(fh)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


class EventLog(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]  # generic in newer stubs only
    """A logger bound to one invocation; ``feature``, ``port``, ``outcome``, ``ms`` per call."""

    def __init__(self, logger: logging.Logger, *, guest: str, uuid: str, op: str) -> None:
        super().__init__(logger, {"guest": guest, "uuid": uuid, "op": op})
        self.started = time.monotonic()

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = dict(self.extra or {})
        for key in ("feature", "port", "outcome", "ms"):
            if key in kwargs:
                fields[key] = kwargs.pop(key)
        fields.setdefault("ms", f"{(time.monotonic() - self.started) * 1000:.1f}")
        kwargs["extra"] = fields
        return msg, kwargs

    def bind(self, feature: str | None = None) -> EventLog:
        extra = dict(self.extra or {})
        child = EventLog(self.logger, guest=str(extra["guest"]), uuid=str(extra["uuid"]), op=str(extra["op"]))
        child.started = self.started
        if feature:
            child.extra = {**extra, "feature": feature}
        return child
