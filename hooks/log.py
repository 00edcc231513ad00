"""Logging: syslog (journald picks it up) and/or a file, one line per fact, with the invocation's fields.

Every line carries guest name and UUID, operation, feature, port, outcome and milliseconds, so an admin
can grep one guest's story across hosts.  Nothing here ever writes to stdout or stderr.

Deliberately not the ``logging`` package: the hook runs for every guest event and ``logging`` (with
``re``, ``enum``, ``threading``, ``traceback``, ...) costs more to import than everything else we do for a
guest whose ports are already up.  The ``syslog`` module is a thin C binding.
"""

from __future__ import annotations

import contextlib
import os
import time

__all__ = ["DEBUG", "ERROR", "INFO", "WARNING", "EventLog", "Sink", "escape", "setup_logging"]

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
_FIELDS = ("guest", "uuid", "op", "feature", "port", "outcome", "ms")


def escape(text: str) -> str:
    """``text`` with every non-printable character (newline, CR, ESC, NUL, U+2028, ...) written as
    ``\\n``/``\\xNN``/``\\uNNNN``: a guest name or an XML attribute must not start a forged log line."""
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(c if c.isprintable() else _ESCAPES.get(c) or _hex(c) for c in text)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hex(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class Sink:
    """Where lines go: syslog (facility daemon) and/or a file opened for appending (one write per line,
    so concurrent hook processes never interleave within a line)."""

    def __init__(self, *, syslog: bool = False, log_file: str = "", debug: bool = False) -> None:
        self.level = DEBUG if debug else INFO
        self._syslog = None
        if syslog and os.path.exists("/dev/log"):
            import syslog as _syslog

            _syslog.openlog("libvirt-vdp-hooks", _syslog.LOG_PID, _syslog.LOG_DAEMON)
            self._syslog = _syslog
        self._fd = -1
        if log_file:
            self._fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def emit(self, level: int, text: str) -> None:
        if level < self.level:
            return
        text = escape(text)  # one fact, one line, whatever a guest's name or an error text holds
        if self._syslog is not None:
            priority = {
                DEBUG: self._syslog.LOG_DEBUG,
                INFO: self._syslog.LOG_INFO,
                WARNING: self._syslog.LOG_WARNING,
            }.get(level, self._syslog.LOG_ERR)
            self._syslog.syslog(priority, text)
        if self._fd >= 0:
            now = time.time()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
            line = f"{stamp} [{os.getpid()}] {_NAMES.get(level, 'ERROR')} {text}\n"
            with contextlib.suppress(OSError):  # a full disk must not turn into a veto
                os.write(self._fd, line.encode("utf-8", "replace"))


def setup_logging(*, syslog: bool, log_file: str, debug: bool) -> Sink:
    return Sink(syslog=syslog, log_file=log_file, debug=debug)


class EventLog:
    """A logger bound to one invocation; ``feature``, ``port``, ``outcome``, ``ms`` may be given per call.

    ``msg`` is formatted with ``args`` only if the line is emitted (``%`` style, like ``logging``).
    """

    def __init__(self, sink: Sink, *, guest: str = "-", uuid: str = "-", op: str = "-", feature: str = "-") -> None:
        self.sink = sink
        self.fields = {"guest": guest, "uuid": uuid, "op": op, "feature": feature}
        self.started = time.monotonic()

    def bind(self, feature: str | None = None) -> EventLog:
        child = EventLog(self.sink, **self.fields)
        if feature:
            child.fields["feature"] = feature
        child.started = self.started
        return child

    def log(self, level: int, msg: str, *args: object, **fields: str) -> None:
        if level < self.sink.level:
            return
        values = {**self.fields, **fields}
        values.setdefault("ms", f"{(time.monotonic() - self.started) * 1000:.1f}")
        head = " ".join(f"{k}={values.get(k, '-')}" for k in _FIELDS)
        self.sink.emit(level, f"{head}: {msg % args if args else msg}")

    def debug(self, msg: str, *args: object, **fields: str) -> None:
        self.log(DEBUG, msg, *args, **fields)

    def info(self, msg: str, *args: object, **fields: str) -> None:
        self.log(INFO, msg, *args, **fields)

    def warning(self, msg: str, *args: object, **fields: str) -> None:
        self.log(WARNING, msg, *args, **fields)

    def error(self, msg: str, *args: object, **fields: str) -> None:
        self.log(ERROR, msg, *args, **fields)

    def exception(self, msg: str, *args: object, **fields: str) -> None:
        """An error line followed by the traceback of the exception being handled (for bug reports)."""
        import traceback

        self.log(ERROR, msg, *args, **fields)
        for line in traceback.format_exc().rstrip().splitlines():
            self.log(ERROR, "  %s", line, **fields)
