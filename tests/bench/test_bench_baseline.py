"""Benchmark: this checkout's hook against another checkout's, side by side in one run (before / after).

``VDP_BENCH_BASELINE=/path/to/other/checkout`` names the other tree (for a re-layout: a worktree of the
commit before it, ``git worktree add --detach /tmp/base REV``); without it the test is skipped.  Both
entries are exec'd through their shebang as libvirt does, inside the same lab host, rounds interleaved
(ours, theirs, ours, ...), each with its own state directory on the lab host's /run (tmpfs):

- ``fast path``: ``prepare begin`` of a guest with nothing for us (tests/data/plain.xml),
- ``one ASSOCIATE``: ``prepare begin`` of a guest with one 802.1Qbg port (fresh start),
- ``4 ports``: ``prepare begin`` with 4 ports on 2 uplinks, fresh start and incoming migration,
- ``busy uplinks``: the same 4-port start on 2 uplinks that hold ``BUSY`` other VSIs each.

Medians are printed with the ratio ours / theirs.  A ratio above ``LIMIT`` fails: the re-layout may move
code, not add cost.

Run: ``VDP_BENCH_BASELINE=/tmp/base .venv/bin/python -m pytest -q -s tests/bench/test_bench_baseline.py``
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import ENTRY, HookHost
from tests.lab.harness.vdplab import VdpLab

pytestmark = [pytest.mark.bench, pytest.mark.lab]

BASELINE = os.environ.get("VDP_BENCH_BASELINE", "")
ROUNDS = 21
BUSY = 100  # other guests' VSIs on each busy uplink
LIMIT = 1.3
PLAIN = (Path(ENTRY).parents[1] / "tests" / "data" / "plain.xml").read_text()


def _entries() -> dict[str, str]:
    theirs = Path(BASELINE) / "etc-libvirt-hooks" / "qemu"
    if not BASELINE:
        pytest.skip("VDP_BENCH_BASELINE names no other checkout")
    assert theirs.is_file(), f"{theirs}: no hook entry in VDP_BENCH_BASELINE"
    return {"ours": ENTRY, "theirs": str(theirs)}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    _entries()
    with VdpLab(tmp_path_factory.mktemp("baseline"), uplinks=4) as vdp_lab:
        yield vdp_lab


def _host(lab: VdpLab, workdir: Path, uplinks: tuple[str, str]) -> HookHost:
    workdir.mkdir(parents=True, exist_ok=True)
    host = HookHost(lab, "host", workdir, uplinks={"fabric-a": uplinks[0], "fabric-b": uplinks[1]})
    host.config.write_text(host.config.read_text().replace("debug = yes", "debug = no"))
    state = f"/run/vdp-hooks-baseline-{uuid.uuid4().hex[:8]}"
    host.extra_env["VDP_HOOKS_STATE_DIR"] = state
    host.state_dir = Path(f"/proc/{lab.host('host').holder.pid}/root{state}")
    return host


def _run(host: HookHost, entry: str, xml: str, op: str, subop: str) -> float:
    start = time.monotonic()
    proc = host.runner([entry, "vm", op, subop, "-"], input=xml.encode(), env=host.env(), timeout=120)
    seconds = time.monotonic() - start
    assert (proc.returncode, proc.stderr) == (0, b""), (entry, op, proc.stderr)
    return seconds


def _ports(count: int, *, prefix: str = "52:54:00:ee", vlan: int = 300) -> list[Port]:
    return [
        Port(f"{prefix}:{i // 256:02x}:{i % 256:02x}", "fabric-a" if i % 2 == 0 else "fabric-b", vlan=vlan + i)
        for i in range(count)
    ]


def _scenario(host: HookHost, entry: str, ports: list[Port], *, incoming: bool = False) -> float:
    """One timed ``prepare begin`` (after an untimed ``migrate begin`` when incoming), then an untimed
    ``release end`` that must leave nothing."""
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports) if ports else PLAIN
    if incoming:
        _run(host, entry, xml, "migrate", "begin")
    seconds = _run(host, entry, xml, "prepare", "begin")
    if ports:
        journal = host.journal(guest)
        assert journal is not None and len(journal["records"]) == len(ports), journal
        _run(host, entry, xml, "release", "end")
        assert host.journal(guest) is None, f"{entry} left a journal"
    return seconds


def _side_by_side(name: str, hosts: dict[str, HookHost], ports: list[Port], *, incoming: bool = False) -> str:
    entries = _entries()
    samples: dict[str, list[float]] = {"ours": [], "theirs": []}
    for who in samples:  # warm the page cache and lldpad; not counted
        _scenario(hosts[who], entries[who], ports, incoming=incoming)
    for _ in range(ROUNDS):
        for who, times in samples.items():
            times.append(_scenario(hosts[who], entries[who], ports, incoming=incoming))
    ours, theirs = (statistics.median(samples[w]) * 1000 for w in ("ours", "theirs"))
    line = f"{name}: ours {ours:.1f} ms, theirs {theirs:.1f} ms, ratio {ours / theirs:.2f}"
    print(f"\n{line}")
    assert ours / theirs <= LIMIT, line
    return line


@pytest.mark.parametrize(
    ("name", "count", "incoming"),
    [
        ("fast path", 0, False),
        ("one ASSOCIATE", 1, False),
        ("4 ports, start", 4, False),
        ("4 ports, incoming", 4, True),
    ],
)
def test_against_baseline(lab: VdpLab, tmp_path: Path, name: str, count: int, incoming: bool) -> None:
    hosts = {who: _host(lab, tmp_path / who, ("up0", "up1")) for who in ("ours", "theirs")}
    _side_by_side(name, hosts, _ports(count), incoming=incoming)


def test_against_baseline_on_busy_uplinks(lab: VdpLab, tmp_path: Path) -> None:
    hosts = {who: _host(lab, tmp_path / who, ("up2", "up3")) for who in ("ours", "theirs")}
    filler = _host(lab, tmp_path / "filler", ("up2", "up3"))
    # BUSY VSIs per uplink, made by our own hook: guests of 50 ports (max_ports is 64), half on each uplink.
    guests = [
        domain_xml(f"busy{g}", str(uuid.uuid4()), ports=_ports(50, prefix=f"52:54:01:{g:02x}", vlan=1000))
        for g in range(2 * BUSY // 50)
    ]
    for xml in guests:
        _run(filler, ENTRY, xml, "prepare", "begin")
    try:
        _side_by_side(f"4 ports, start, {BUSY} other VSIs per uplink", hosts, _ports(4))
    finally:
        for xml in guests:
            _run(filler, ENTRY, xml, "release", "end")
