"""Benchmark: ``release end`` for a guest with 4 hook-managed 802.1Qbg ports, exec to exit, per argument
style: libvirt 9.0's ``-`` next to libvirt >= 10.5's reasons, for VSIs made over netlink (a fresh start)
and through lldpad's client interface (an incoming migration, hint "to").

Rounds interleave the reasons (one set-up, then one ``release end`` per round), medians compared side by
side in one run: every reason within 1.5x of ``-`` (before the transport was journaled, ``migrated``
after a fresh start waited out the exchange timeout: 50x and more).
"""

from __future__ import annotations

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

ROUNDS = 9
REASONS = {"start": ["-", "destroyed", "shutdown", "migrated"], "incoming-migration": ["-", "failed", "migrated"]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    with VdpLab(tmp_path_factory.mktemp("benchrelease"), uplinks=2) as vdp_lab:
        yield vdp_lab


def _exec(host: HookHost, xml: str, op: str, subop: str, extra: str = "-") -> float:
    """Exec the entry through its shebang, as libvirt does; seconds from exec to exit."""
    start = time.monotonic()
    proc = host.runner([ENTRY, "bench", op, subop, extra], input=xml.encode(), env=host.env(), timeout=60)
    seconds = time.monotonic() - start
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr
    return seconds


@pytest.mark.parametrize("how", list(REASONS))
def test_release_end_costs_the_same_for_every_reason(lab: VdpLab, tmp_path: Path, how: str) -> None:
    host = HookHost(lab, "host", tmp_path, uplinks={"fabric-a": "up0", "fabric-b": "up1"})
    host.config.write_text(host.config.read_text().replace("debug = yes", "debug = no"))
    ports = [Port(f"52:54:00:de:00:0{i}", "fabric-a" if i < 2 else "fabric-b", vlan=310 + i) for i in range(4)]
    times: dict[str, list[float]] = {r: [] for r in REASONS[how]}
    for _ in range(ROUNDS):
        for reason in REASONS[how]:
            guest = str(uuid.uuid4())
            xml = domain_xml("bench", guest, ports=ports)
            ops = ("migrate", "prepare", "start", "started") if how == "incoming-migration" else ("prepare",)
            for op in ops:
                _exec(host, xml, op, "begin")
            times[reason].append(_exec(host, xml, "release", "end", reason))
            assert host.journal(guest) is None, host.journal(guest)
    assert lab.lldpad("host").vsi_table("up0") == [] and lab.lldpad("host").vsi_table("up1") == []
    medians = {r: statistics.median(t) * 1000 for r, t in times.items()}
    print(f"\nrelease end after {how}, 4 ports, exec to exit, median of {ROUNDS}: "
          + ", ".join(f"{r} {m:.1f} ms ({m / medians['-']:.2f}x)" for r, m in medians.items()))
    for reason, m in medians.items():
        assert m <= 1.5 * medians["-"], f"release end {reason}: {m:.1f} ms vs {medians['-']:.1f} ms for '-'"
