"""Benchmark: what the agent costs and what it changes for the hook, side by side in one run.

- ``prepare begin`` of a 4-port guest (2 uplinks, real lldpad and lldpad's bridge), exec to exit, with and
  without an agent running (alternating rounds, medians): with it, the hook reads ``agent.json`` and names
  the agent in ``nlmsg_pid``;
- the agent's CPU time over 10 s idle while it owns the 4 ports of a running guest (reconciling every
  2 s), and its RSS;
- a switch-initiated de-association repaired by the agent vs libvirt's way (one blind re-send), for a
  switch that takes the port back at once and one that refuses the first re-association.

Printed, not asserted (beyond every hook call succeeding and the agent staying up).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench.test_bench_prepare import _bench_host, _four_ports, _timed_prepare
from tests.lab.harness.agentrun import AgentProcess
from tests.lab.harness.hookrun import HookHost
from tests.lab.harness.vdplab import VdpLab
from tests.lab.test_agent import UPLINKS, _assocs_after, _guest, wait
from tests.lab.test_vdp_switch import SwitchLab, swlab  # noqa: F401 - the module-scoped lab fixture

ROOT = Path(__file__).resolve().parents[2]
LIBVIRTWAY = Path(__file__).with_name("libvirtway.py")

pytestmark = [pytest.mark.bench, pytest.mark.lab]

ROUNDS = 15
IDLE = 10.0
RECONCILE = 2.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    with VdpLab(tmp_path_factory.mktemp("bench-agent"), uplinks=2) as vdp_lab:
        yield vdp_lab


def test_agent_costs(lab: VdpLab, tmp_path: Path) -> None:
    host = _bench_host(lab, tmp_path)
    # Reconcile on, far more often than the default 60 s, so that the idle figure includes its cost.
    host.config.write_text(host.config.read_text() + f"[agent]\nreconcile_interval = {RECONCILE:g}s\n")
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
        f"agent idle (reconcile every {RECONCILE:g} s): {idle * 1000:.0f} ms CPU in {IDLE:.0f} s "
        f"({idle / IDLE * 100:.2f} %); "
        f"RSS {rss / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB)"
    )


# ------------------------------------------------------------------------------------------ repair vs libvirt
ROUNDS_REPAIR = 5


def _dropped(sw: SwitchLab, inst: str, refuse: bool) -> float:
    """The switch de-associates ``inst`` (refusing its first re-association when ``refuse``); its time."""
    control: dict[str, object] = {"commands": [{"id": f"drop-{inst}-{time.time()}", "deassoc": inst}]}
    if refuse:
        control["instances"] = {inst: {"status": "insufficient-resources", "modes": ["assoc"]}}
    sw.peer.control(control)
    event = sw.peer.wait_event(lambda e: e["event"] == "switch-deassoc" and e["instance"] == inst, 10, "drop")
    if refuse:  # the switch takes the port back once it refused one re-association
        wait(lambda: _refused(sw, inst, float(event["time"])), 30, "the switch refuses the first re-association")
        sw.peer.control({})
    return float(event["time"])


def _refused(sw: SwitchLab, inst: str, since: float) -> list[object]:
    return [r for r in sw.peer.requests(inst) if r["answer"] == "insufficient-resources" and float(r["time"]) > since]  # type: ignore[arg-type]


def _repaired(sw: SwitchLab, inst: str, since: float, within: float) -> float | None:
    """Seconds from ``since`` to the switch's accepted re-association, or None when none came ``within``."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = _assocs_after(sw, inst, since)
        if got:
            return float(got[0]["time"]) - since  # type: ignore[arg-type]
        time.sleep(0.02)
    return None


def _libvirt_round(sw: SwitchLab, i: int, refuse: bool, within: float) -> float | None:
    inst = str(uuid.uuid4())
    spec = {"ifname": "up0", "mac": f"52:54:00:ac:00:{i:02x}", "vlan": 300 + i, "instance": inst}
    argv = sw.lab.host(None).nsenter_argv([sys.executable, str(LIBVIRTWAY), json.dumps(spec)])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        since = _dropped(sw, inst, refuse)
        took = _repaired(sw, inst, since, within)
        assert proc.wait(30) == 0  # it heard the notice and re-sent once
        return took
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _withdraw(sw, inst, "up0", spec["mac"], int(spec["vlan"]))


def _withdraw(sw: SwitchLab, inst: str, ifname: str, mac: str, vlan: int) -> None:
    code = (
        f"import sys, uuid; sys.path.insert(0, {str(ROOT)!r})\n"
        "from vdp.qbg.netlink import LldpadClient, VsiRequest\n"
        "from vdp.qbg.session import QbgSession, find_lldpad_pid\n"
        "from vdp.wire.netlink import DISASSOCIATE, VsiType\n"
        f"req = VsiRequest(ifname={ifname!r}, mac={mac!r}, vlan={vlan}, vsi_type=VsiType(11, 1193047, 2),"
        f" instance=uuid.UUID({inst!r}), request=DISASSOCIATE)\n"
        "with QbgSession(exchange_timeout=10.0) as s, LldpadClient(lldpad_pid=find_lldpad_pid(), clif=s.peek) as c:\n"
        "    c.submit([req])\n"
    )
    subprocess.run(sw.lab.host(None).nsenter_argv([sys.executable, "-c", code]), check=False, capture_output=True)


def _agent_round(sw: SwitchLab, host: HookHost, refuse: bool, within: float) -> float | None:
    _guest_uuid, xml, insts = _guest(1)
    assert host.hook(xml, "prepare", "begin").rc == 0
    try:
        since = _dropped(sw, insts[0], refuse)
        return _repaired(sw, insts[0], since, within)
    finally:
        assert host.hook(xml, "release", "end").rc == 0


def test_repair_agent_vs_libvirts_one_resend(swlab: SwitchLab, tmp_path: Path) -> None:  # noqa: F811
    """A switch-initiated de-association, side by side in one run (alternating rounds): libvirt's way (its
    listener re-sends one ASSOCIATE and ignores the result) and the agent's (re-association with backoff).
    Two switches: one that takes the port back at once, one that refuses the first re-association (busy
    for a moment).  Printed: repair latency (switch DISASSOCIATE -> accepted re-ASSOCIATE, switch clock)
    and how many rounds were repaired at all within 10 s."""
    sw = swlab
    sw.peer.control({})
    host = HookHost(
        sw.lab,
        "host",
        tmp_path,
        uplinks=UPLINKS,
        extra="[agent]\nretry_initial = 200ms\nretry_max = 2s\n",
    )
    agent = AgentProcess(sw.lab.host(None), host, tmp_path / "agent.out")
    results: dict[tuple[str, bool], list[float | None]] = {}
    try:
        for refuse in (False, True):
            for i in range(ROUNDS_REPAIR):
                results.setdefault(("libvirt", refuse), []).append(_libvirt_round(sw, i, refuse, 10.0))
                results.setdefault(("agent", refuse), []).append(_agent_round(sw, host, refuse, 10.0))
    finally:
        assert agent.stop() == 0
        sw.peer.control({})
    print()
    for (way, refuse), got in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        done = [t * 1000 for t in got if t is not None]
        median = f"median {statistics.median(done):.1f} ms, max {max(done):.1f} ms" if done else "never"
        switch = "refuses the first re-association" if refuse else "takes it back at once"
        print(f"switch {switch}: {way:<8} repaired {len(done)}/{len(got)} within 10 s; {median}")
    assert all(t is not None for t in results[("agent", True)]), "the agent repairs despite a refusal"
    assert all(t is not None for t in results[("agent", False)])
