"""Benchmark: what the agent costs and what it changes for the hook, side by side in one run.

- ``prepare begin`` of a 4-port guest (2 uplinks, real lldpad and lldpad's bridge), exec to exit, with and
  without an agent running (alternating rounds, medians): with it, the hook reads ``agent.json`` and names
  the agent in ``nlmsg_pid``;
- the agent's CPU time over 10 s idle while it owns the 4 ports of a running guest, and its RSS.

Printed, not asserted (beyond every hook call succeeding and the agent staying up).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench.test_bench_prepare import _bench_host, _four_ports, _timed_prepare
from tests.lab.harness.agentrun import AgentProcess
from tests.lab.harness.vdplab import VdpLab

pytestmark = [pytest.mark.bench, pytest.mark.lab]

ROUNDS = 15
IDLE = 10.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    with VdpLab(tmp_path_factory.mktemp("bench-agent"), uplinks=2) as vdp_lab:
        yield vdp_lab


def test_agent_costs(lab: VdpLab, tmp_path: Path) -> None:
    host = _bench_host(lab, tmp_path)
    without, with_agent = [], []
    agent: AgentProcess | None = None
    try:
        for i in range(2 * ROUNDS):
            running = i % 2 == 1
            if running and agent is None:
                agent = AgentProcess(lab.host("host"), host, tmp_path / "agent.out")
            elif not running and agent is not None:
                assert agent.stop() == 0
                agent = None
            # Both arms alike: let the agent's start-up, and its look at the last release's notices, settle.
            time.sleep(1.0)
            guest_uuid = str(uuid.uuid4())
            xml = _four_ports(guest_uuid)
            (with_agent if running else without).append(_timed_prepare(host, xml))
            assert host.hook(xml, "release", "end").rc == 0
        agent = agent or AgentProcess(lab.host("host"), host, tmp_path / "agent.out")
        xml = _four_ports(str(uuid.uuid4()))
        _timed_prepare(host, xml)
        time.sleep(1.0)  # let its start-up check of the ports settle
        before = agent.cpu_seconds()
        time.sleep(IDLE)
        idle = agent.cpu_seconds() - before
        assert agent.published()
        rss, peak = agent.memory_kib("VmRSS"), agent.memory_kib("VmHWM")
        assert host.hook(xml, "release", "end").rc == 0
    finally:
        if agent is not None:
            agent.stop()
    no, yes = statistics.median(without) * 1000, statistics.median(with_agent) * 1000
    print(
        f"\n4-port prepare begin, median of {ROUNDS}: without agent {no:.1f} ms, with agent {yes:.1f} ms "
        f"(ratio {yes / no:.2f})"
    )
    print(
        f"agent idle: {idle * 1000:.0f} ms CPU in {IDLE:.0f} s ({idle / IDLE * 100:.2f} %); "
        f"RSS {rss / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB)"
    )
