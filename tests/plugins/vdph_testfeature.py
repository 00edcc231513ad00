"""A test-only feature plugin for libvirt-vdp-hooks, found through its entry points like any third party's.

``tests/plugins`` holds this module and ``vdph_testfeature-0.dist-info`` (METADATA + entry_points.txt), so
putting the directory on PYTHONPATH is enough for ``importlib.metadata`` to find the features ``rec1`` and
``rec2`` (two instances of :class:`Recorder`, to see feature order) and two deliberately bad entry points
(``recbroken``: the attribute does not exist; ``recnotafeature``: not a Feature subclass).

Its behaviour is steered entirely by its config section, so a test writes a config file and execs the
real hook entry.  Every setup step and every teardown call is appended as one JSON line to the file named
by ``log``, so a test can assert what happened and in which order.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hooks import errors
from hooks.config import Option, parse_bool
from hooks.errors import DeadlineExceeded, FeatureError, HookError
from hooks.event import Event
from hooks.feature import BEGIN_OPS, Context, Feature, Outcome
from hooks.journal import Record

__all__ = ["NotAFeature", "Recorder", "Recorder1", "Recorder2"]


def _names(text: str) -> tuple[str, ...]:
    return tuple(n for n in text.replace(",", " ").split() if n)


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"'{text}' must not be negative")
    return value


def _failures(text: str) -> dict[str, str]:
    """``KEY[=ErrorClass] ...`` -> key -> name of a hooks.errors class (default PeerRefused)."""
    found = {}
    for item in _names(text):
        key, _, cls = item.partition("=")
        cls = cls or "PeerRefused"
        if not (isinstance(getattr(errors, cls, None), type) and issubclass(getattr(errors, cls), HookError)):
            raise ValueError(f"'{cls}' is not a class of hooks.errors")
        found[key.lower()] = cls
    return found


class Recorder(Feature):
    """Journals one record per port and kind, confirms it, and logs every step; fails where told to."""

    name: ClassVar[str] = "recorder"
    handles = frozenset(BEGIN_OPS | {("reconnect", "begin")})
    options: ClassVar[Mapping[str, Option]] = {
        "log": Option(str, "", "append one JSON line per step to this file"),
        "ops": Option(_names, ("prepare",), "operations setup acts on (others: nothing to do)"),
        "kinds": Option(_names, ("assoc",), "records per port, journaled in this order"),
        "fail": Option(_failures, {}, "KEY[=ErrorClass]: these ports fail (intent journaled, never confirmed)"),
        "fail_kind": Option(str, "", "the kind at which the failing ports fail (default: the last)"),
        "crash": Option(parse_bool, False, "raise a plain RuntimeError after the first intent"),
        "sleep_before": Option(_seconds, 0.0, "seconds to wait before journaling intent (deadline-bounded)"),
        "sleep_after": Option(_seconds, 0.0, "seconds to wait between intent and confirm (deadline-bounded)"),
        "teardown_fail": Option(_names, (), "keys whose teardown fails ('*' = all)"),
        "teardown_sleep": Option(_seconds, 0.0, "seconds teardown waits (deadline-bounded)"),
        "drift": Option(_names, (), "keys live_state reports as gone"),
        "declare": Option(parse_bool, False, "release end also tears down declared ports (kind 'declared')"),
    }

    def describe(self) -> str:
        return f"test recorder {self.name}"

    def _log(self, call: str, **fields: Any) -> None:
        path = self.settings["log"]
        if not path:
            return
        line = json.dumps({"feature": self.name, "call": call, "pid": os.getpid(), "t": time.time(), **fields})
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")  # one write per line: lines of concurrent processes never mix
        finally:
            os.close(fd)

    def _sleep(self, seconds: float, ctx: Context, what: str) -> None:
        """Wait like a feature waiting for its peer: never past the deadline it was given."""
        if seconds <= 0:
            return
        remaining = ctx.deadline.remaining()
        if seconds > remaining:
            time.sleep(remaining)
            self._log("deadline", what=what)
            raise DeadlineExceeded(f"recorder {self.name}: no answer before the deadline ({what})")
        time.sleep(seconds)

    def setup(self, event: Event, ctx: Context) -> list[Outcome]:
        if event.op not in self.settings["ops"]:
            return []
        keys = self.targets(event)
        op = f"{event.op} {event.subop}"
        self._log("setup", op=op, keys=keys, incoming=ctx.incoming)
        self._sleep(self.settings["sleep_before"], ctx, "before intent")
        kinds = self.settings["kinds"]
        fail_kind = self.settings["fail_kind"] or kinds[-1]
        fail = self.settings["fail"]
        outcomes: dict[str, Outcome] = {}
        alive = list(keys)
        for kind in kinds:
            if not alive:
                break
            records = ctx.intend_many([(key, kind, {"op": op}) for key in alive])
            for record in records:
                self._log("intent", op=op, key=record.key, kind=kind, id=record.id)
            if self.settings["crash"]:
                raise RuntimeError("recorder crashed on purpose")
            self._sleep(self.settings["sleep_after"], ctx, "after intent")
            good = [r for r in records if not (kind == fail_kind and r.key in fail)]
            ctx.confirm(good, {r.key: {"confirmed_by": op} for r in good})
            for record in records:
                if record in good:
                    self._log("confirm", op=op, key=record.key, kind=kind, id=record.id)
                else:
                    error_class = getattr(errors, fail[record.key])
                    outcomes[record.key] = Outcome(
                        record.key, error_class(f"recorder {self.name}: {kind} of {record.key} refused on purpose")
                    )
            alive = [k for k in alive if k not in outcomes]
        return [outcomes.get(k, Outcome(k, None, f"{self.name} recorded {k}")) for k in keys]

    def teardown(self, records: Sequence[Record], ctx: Context) -> list[Outcome]:
        op = f"{ctx.event.op} {ctx.event.subop}"
        failing = self.settings["teardown_fail"]
        for record in records:
            self._log("teardown", op=op, key=record.key, kind=record.kind, id=record.id, state=record.state)
        try:
            self._sleep(self.settings["teardown_sleep"], ctx, "teardown")
        except DeadlineExceeded as exc:
            return [Outcome(r.key, exc) for r in records]
        return [
            Outcome(r.key, FeatureError(f"recorder {self.name}: teardown of {r.key} refused on purpose"))
            if "*" in failing or r.key in failing
            else Outcome(r.key)
            for r in records
        ]

    def declared(self, event: Event) -> list[tuple[str, str, Mapping[str, Any]]]:
        return [(p.key, "declared", {}) for p in event.ports] if self.settings["declare"] else []

    def live_state(self, records: Sequence[Record]) -> dict[str, str]:
        return {r.key: ("gone" if r.key in self.settings["drift"] else "ok") for r in records}


class Recorder1(Recorder):
    name = "rec1"


class Recorder2(Recorder):
    name = "rec2"


class NotAFeature:
    """Registered as a feature by mistake: the framework must say so instead of crashing."""
