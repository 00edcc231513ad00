"""One exception base for the whole product.

Every error carries one admin-facing line: what failed and what to do about it.  The hook prints exactly
that line on stderr when it vetoes, so libvirt shows it in virsh's error.  Specific errors also inherit the
matching built-in exception so callers can catch them the usual way.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "FeatureError",
    "HookError",
    "JournalError",
    "PeerRefused",
    "PeerUnavailable",
    "XmlError",
]


class HookError(Exception):
    """Base of every error the product raises on purpose.

    ``msg_fmt`` is formatted with the keyword arguments; ``hint`` (what to do) is appended after " -- ".
    """

    msg_fmt = "hook error"
    hint = ""

    def __init__(self, message: str | None = None, *, hint: str | None = None, **kwargs: object) -> None:
        self.kwargs = kwargs
        text = message if message is not None else self.msg_fmt.format(**kwargs)
        use_hint = self.hint if hint is None else hint
        self.text = text
        self.hint_text = use_hint
        super().__init__(f"{text} -- {use_hint}" if use_hint else text)

    def one_line(self) -> str:
        """The message squeezed onto one line (libvirt shows stderr verbatim)."""
        return " ".join(str(self).split())


class ConfigError(HookError, ValueError):
    """The host configuration file is wrong; the message names file and line."""

    hint = "fix the file, then run 'vdp-hooks check'"


class XmlError(HookError, ValueError):
    """The domain XML (or our metadata in it) is unusable; the message names the element."""

    hint = "fix the guest's <metadata> (virsh metadata / virsh edit)"


class JournalError(HookError, OSError):
    """The state journal could not be read or written."""


class DeadlineExceeded(HookError, TimeoutError):
    """An exchange or the whole invocation ran out of time."""


class FeatureError(HookError, RuntimeError):
    """A feature could not set something up (or tear it down)."""


class PeerUnavailable(FeatureError, ConnectionError):
    """The daemon or device we must talk to is not there (lldpad down, no such interface, ...)."""


class PeerRefused(FeatureError):
    """The peer answered, and the answer is no (switch refused the VSI, kernel said EOPNOTSUPP, ...)."""
