"""The agent's metrics in the Prometheus text exposition format (version 0.0.4), for node_exporter's textfile
collector: ``[agent] metrics_file`` is rewritten atomically (a temporary file in the same directory, then
``rename``), so the collector never reads half a file.

Deliberately tiny (no client library: the agent must stay lean and dependency-free): counters, gauges and
one histogram kind, each family rendered with its ``# HELP`` and ``# TYPE`` lines, label values escaped,
histogram buckets cumulative and ending in ``le="+Inf"`` followed by ``_sum`` and ``_count``.
"""

from __future__ import annotations

import math
import os
import re
import threading

__all__ = ["LATENCY_BUCKETS", "AgentMetrics", "Registry", "write_atomically"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: Seconds: from one netlink round trip (~ms) to the hook's exchange timeout (10 s) and beyond.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class _Family:
    def __init__(self, name: str, kind: str, help_text: str, labelnames: Sequence[str]) -> None:
        if not _NAME.match(name) or any(not _LABEL.match(n) or n.startswith("__") for n in labelnames):
            raise ValueError(f"not a valid metric or label name: {name} {labelnames}")
        self.name, self.kind, self.help = name, kind, help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()  # the agent's workers update from several threads

    def _key(self, labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, not {sorted(labels)}")
        return tuple((n, str(labels[n])) for n in self.labelnames)

    def render(self) -> list[str]:
        raise NotImplementedError

    def header(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}",
            f"# TYPE {self.name} {self.kind}",
        ]


class _Values(_Family):
    """A counter or a gauge: one number per label set."""

    def __init__(self, name: str, kind: str, help_text: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, kind, help_text, labelnames)
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if self.kind == "counter" and amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        self.values[self._key(labels)] = float(value)

    def replace(self, values: Mapping[tuple[str, ...], float]) -> None:
        """A gauge's whole set of label values at once (label sets absent now disappear)."""
        self.values = {tuple(zip(self.labelnames, k)): float(v) for k, v in values.items()}

    def render(self) -> list[str]:
        with self._lock:
            values = sorted(self.values.items())
        return self.header() + [f"{self.name}{_labels(k)} {_number(v)}" for k, v in values]


class _Histogram(_Family):
    def __init__(self, name: str, help_text: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, "histogram", help_text, labelnames)
        if "le" in labelnames or list(buckets) != sorted(set(buckets)):
            raise ValueError("histogram buckets must be increasing and 'le' is reserved")
        self.bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        self.series: dict[tuple[tuple[str, str], ...], list[float]] = {}  # per bucket counts, then sum, count

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            row = self.series.setdefault(key, [0.0] * (len(self.bounds) + 2))
            for i, bound in enumerate(self.bounds):
                if value <= bound:
                    row[i] += 1  # not cumulative here; render() adds up
                    break
            row[-2] += value
            row[-1] += 1

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            series = sorted((k, list(row)) for k, row in self.series.items())
        for key, row in series:
            running = 0.0
            for bound, count in zip(self.bounds, row):
                running += count
                lines.append(f"{self.name}_bucket{_labels((*key, ('le', _number(bound))))} {_number(running)}")
            lines.append(f"{self.name}_bucket{_labels((*key, ('le', '+Inf')))} {_number(row[-1])}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(row[-2])}")
            lines.append(f"{self.name}_count{_labels(key)} {_number(row[-1])}")
        return lines


class Registry:
    """The agent's metric families, rendered in the order they were made."""

    def __init__(self) -> None:
        self.families: list[_Family] = []

    def _add(self, family: _Family) -> _Family:
        if any(f.name == family.name for f in self.families):
            raise ValueError(f"metric {family.name} exists")
        self.families.append(family)
        return family

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> _Values:
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name}")
        family = _Values(name, "counter", help_text, labelnames)
        self._add(family)
        return family

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> _Values:
        family = _Values(name, "gauge", help_text, labelnames)
        self._add(family)
        return family

    def histogram(
        self, name: str, help_text: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> _Histogram:
        family = _Histogram(name, help_text, labelnames, buckets)
        self._add(family)
        return family

    def render(self) -> str:
        lines: list[str] = []
        for family in self.families:
            lines += family.render()
        return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the new one, never a mix
    (mode 0644: node_exporter runs as its own user)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, 0o644)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


class AgentMetrics:
    """The families the agent exports (``vdp_hooks_agent_*``)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.up = r.gauge("vdp_hooks_agent_up", "1 while the agent runs (the file is removed when it stops)")
        self.ports = r.gauge(
            "vdp_hooks_agent_associations",
            "ports of running guests by what lldpad said at the last reconcile "
            "(ok, in_progress, lost, unknown: lldpad could not be asked, unchecked: not an lldpad port)",
            ["state"],
        )
        self.pending = r.gauge(
            "vdp_hooks_agent_pending_records",
            "journal records the agent has to finish, by cause (teardown_unfinished: a teardown the switch "
            "did not confirm; unconfirmed: a set-up of a guest that is not running)",
            ["cause"],
        )
        self.jobs = r.gauge("vdp_hooks_agent_jobs", "guests with work queued in the agent, by reason", ["reason"])
        self.repairs = r.counter(
            "vdp_hooks_agent_repairs_total",
            "ports the agent associated again (reassociate) or records whose teardown it finished (teardown)",
            ["kind"],
        )
        self.attempts = r.counter(
            "vdp_hooks_agent_attempts_total", "attempts at a guest's work, by result (ok, failed, busy)", ["result"]
        )
        self.notifications = r.counter(
            "vdp_hooks_agent_notifications_total",
            "netlink messages from lldpad, by what they were (deassoc: a running guest's VSI ended; "
            "unowned: a VSI no running guest holds; ignored: not from lldpad or not a VSI notice)",
            ["kind"],
        )
        self.latency = r.histogram(
            "vdp_hooks_agent_request_seconds",
            "time of one attempt's requests to lldpad (re-association or teardown of one guest's ports)",
            ["kind"],
        )
        self.drift = r.gauge("vdp_hooks_agent_drift", "differences the last reconcile found and reported")
        self.reconciles = r.counter("vdp_hooks_agent_reconciles_total", "reconciles run")
        self.last_reconcile = r.gauge(
            "vdp_hooks_agent_last_reconcile_timestamp_seconds", "when the last reconcile ran (Unix time)"
        )
        self.reconcile_seconds = r.gauge("vdp_hooks_agent_last_reconcile_duration_seconds", "how long it took")
        self.up.set(1)
        for kind in ("reassociate", "teardown"):
            self.repairs.inc(0, kind=kind)
        for result in ("ok", "failed", "busy"):
            self.attempts.inc(0, result=result)
        for kind in ("deassoc", "unowned", "ignored"):
            self.notifications.inc(0, kind=kind)
