"""The agent's metrics file against the Prometheus text exposition format (0.0.4) rules: metric and label
names, one HELP and one TYPE line per family before its samples, label values escaped, counters named
``_total``, histogram buckets cumulative and ending in ``le="+Inf"`` equal to ``_count``, then ``_sum`` and
``_count``; and the file replaced atomically (a reader sees the old or the new file, never a mix).

The parser below is written from the format's rules (not from the code under test), so a rendering that
breaks a rule fails here."""

from __future__ import annotations

import math
import os
import re
import threading
from pathlib import Path

import pytest

from hooks.metrics import AgentMetrics, Registry, write_atomically

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\[\\n"])*)"(,|$)')


Sample = tuple[str, dict[str, str], str]  # name, labels, value as written


class Family:
    def __init__(self, help_text: str) -> None:
        self.help = help_text
        self.type = ""
        self.samples: list[Sample] = []


def parse(text: str) -> dict[str, Family]:
    """The families of a metrics text, asserting the format's rules on the way."""
    assert text.endswith("\n"), "the last line ends with a newline"
    families: dict[str, Family] = {}
    current = ""
    for line in text[:-1].split("\n"):
        assert line.strip() == line and line, f"no blank or padded lines: {line!r}"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert NAME.fullmatch(name) and name not in families, line
            assert help_text, f"{name}: a HELP text"
            families[name] = Family(help_text)
            current = name
            continue
        if line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and not families[name].type, f"TYPE right after HELP of {name}"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            families[name].type = kind
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, raw, value = m["name"], m["labels"] or "", m["value"]
        kind = families[current].type
        allowed = {current} if kind != "histogram" else {f"{current}_bucket", f"{current}_sum", f"{current}_count"}
        assert name in allowed, f"{name} outside its family {current}"
        labels: dict[str, str] = {}
        rest = raw
        while rest:
            lm = LABEL.match(rest)
            assert lm, f"bad labels in {line!r}"
            assert lm[1] not in labels and not lm[1].startswith("__"), line
            labels[lm[1]] = lm[2].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            rest = rest[lm.end() :]
        float(value.replace("+Inf", "inf").replace("-Inf", "-inf"))
        families[current].samples.append((name, labels, value))
    for name, fam in families.items():
        if fam.type == "counter":
            assert name.endswith("_total"), f"a counter's name ends in _total: {name}"
            assert all(float(v) >= 0 for _n, _l, v in fam.samples), name
        if fam.type == "histogram":
            check_histogram(name, fam.samples)
    return families


def check_histogram(name: str, samples: list[Sample]) -> None:
    buckets: dict[tuple[tuple[str, str], ...], list[tuple[str, float]]] = {}
    sums: dict[tuple[tuple[str, str], ...], float] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for sample, labels, value in samples:
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        if sample.endswith("_bucket"):
            assert base not in sums, "buckets come before _sum"
            buckets.setdefault(base, []).append((labels["le"], float(value)))
        elif sample.endswith("_sum"):
            sums[base] = float(value)
        else:
            assert base in sums, "_sum before _count"
            counts[base] = float(value)
    assert buckets, f"{name}: no series"
    for base, rows in buckets.items():
        assert rows[-1][0] == "+Inf", f"{name}{base}: the last bucket is le=+Inf"
        bounds = [float(b.replace("+Inf", "inf")) for b, _ in rows]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), f"{name}: le increasing"
        cumulative = [c for _, c in rows]
        assert cumulative == sorted(cumulative), f"{name}{base}: buckets are cumulative: {cumulative}"
        assert cumulative[-1] == counts[base], f"{name}{base}: le=+Inf equals _count"


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    reg = Registry()
    h = reg.histogram("x_seconds", "a latency", ["kind"], buckets=(0.1, 1.0, 10.0))
    for v in (0.05, 0.1, 0.5, 2.0, 50.0):
        h.observe(v, kind="a")
    h.observe(0.2, kind="b")
    fams = parse(reg.render())
    a = [(lab.get("le"), v) for _n, lab, v in fams["x_seconds"].samples if lab["kind"] == "a"]
    assert a == [("0.1", "2"), ("1", "3"), ("10", "4"), ("+Inf", "5"), (None, "52.65"), (None, "5")]
    assert fams["x_seconds"].type == "histogram"


def test_label_values_are_escaped_and_read_back() -> None:
    reg = Registry()
    g = reg.gauge("x_info", "weird values", ["why"])
    g.set(1, why='a "quoted" back\\slash\nnewline')
    fams = parse(reg.render())
    ((_name, labels, value),) = fams["x_info"].samples
    assert labels == {"why": 'a "quoted" back\\slash\nnewline'} and value == "1"


@pytest.mark.parametrize(
    ("make", "args"),
    [
        ("counter", ("requests", "no _total suffix")),
        ("gauge", ("bad-name", "a dash")),
        ("gauge", ("x", "reserved label", ["__x"])),
        ("histogram", ("h", "le is reserved", ["le"])),
    ],
)
def test_invalid_names_are_refused(make: str, args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        getattr(Registry(), make)(*args)


def test_counter_only_goes_up_and_labels_must_match() -> None:
    c = Registry().counter("x_total", "c", ["kind"])
    with pytest.raises(ValueError):
        c.inc(-1, kind="a")
    with pytest.raises(ValueError):
        c.inc(other="a")


def test_agent_metrics_render_by_the_rules() -> None:
    m = AgentMetrics()
    m.latency.observe(0.012, kind="reassociate")
    m.latency.observe(3.2, kind="teardown")
    m.ports.replace({("ok",): 3, ("lost",): 1})
    m.pending.replace({("teardown_unfinished",): 2, ("unconfirmed",): 0})
    m.repairs.inc(kind="reassociate")
    m.notifications.inc(kind="deassoc")
    m.last_reconcile.set(1764590000.25)
    fams = parse(m.registry.render())
    wanted = {
        "vdp_hooks_agent_associations": "gauge",
        "vdp_hooks_agent_pending_records": "gauge",
        "vdp_hooks_agent_repairs_total": "counter",
        "vdp_hooks_agent_notifications_total": "counter",
        "vdp_hooks_agent_request_seconds": "histogram",
        "vdp_hooks_agent_last_reconcile_timestamp_seconds": "gauge",
    }
    for name, kind in wanted.items():
        assert fams[name].type == kind, name
    values = {(n, tuple(sorted(lab.items()))): v for n, lab, v in fams["vdp_hooks_agent_associations"].samples}
    assert values == {
        ("vdp_hooks_agent_associations", (("state", "lost"),)): "1",
        ("vdp_hooks_agent_associations", (("state", "ok"),)): "3",
    }
    ((_n, _l, ts),) = fams["vdp_hooks_agent_last_reconcile_timestamp_seconds"].samples
    assert math.isclose(float(ts), 1764590000.25)
    # A counter that never moved is still there (0), so rate() has a start.
    repairs = {lab["kind"]: v for _n, lab, v in fams["vdp_hooks_agent_repairs_total"].samples}
    assert repairs == {"reassociate": "1", "teardown": "0"}


def test_file_is_replaced_atomically(tmp_path: Path) -> None:
    """A reader in a loop sees only whole files while the writer replaces it 300 times."""
    path = tmp_path / "vdp-hooks.prom"
    texts = [("# HELP a_total x\n# TYPE a_total counter\n" + f"a_total {i}\n" * 200) for i in range(3)]
    write_atomically(str(path), texts[0])
    seen: set[str] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            write_atomically(str(path), texts[i % 3])
    finally:
        done.set()
        reader.join()
    assert seen <= set(texts) and seen, "a reader saw a partial file"
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # node_exporter runs as its own user
    assert [p.name for p in tmp_path.iterdir()] == ["vdp-hooks.prom"], "no temporary file left"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".prom") and n != path.name]


@pytest.mark.parametrize(
    "text",
    [
        'h_bucket{le="1"} 2\n',  # no HELP/TYPE
        '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="2"} 1\n'  # not cumulative
        'h_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n',
        '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_sum 1\nh_count 2\n',  # no +Inf
        '# HELP h x\n# TYPE h histogram\nh_bucket{le="+Inf"} 3\nh_sum 1\nh_count 2\n',  # +Inf != count
        "# HELP c x\n# TYPE c counter\nc 1\n",  # counter without _total
        '# HELP g x\n# TYPE g gauge\ng{a="unescaped"quote"} 1\n',
    ],
)
def test_the_checker_catches_broken_files(text: str) -> None:
    """The rules above can fail: each of these breaks one."""
    with pytest.raises((AssertionError, KeyError)):
        parse(text)
