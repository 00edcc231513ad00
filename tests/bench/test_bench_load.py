"""Benchmark: GUESTS guests x 2 ports on one uplink starting at once (a host boot, an evacuation landing),
then all of them released at once: exec-to-exit p50 / p99 / max, vetoes, records left pending.

Every hook is exec'd through its shebang as libvirt does, all GUESTS processes started together (each
with its XML on stdin), on the lab host (real lldpad station) against the lab's switch peer (a switch
that answers every request, and whose table holds every VSI it granted: lldpad's own bridge role and
GETLINK show at most ~92 VSIs per uplink, see tests/lab/harness/lldpad.py).  The config is the
product's defaults (exchange_timeout 10 s, invocation_timeout 30 s).

What is asserted, whatever the machine's load: no guest vetoed, no record left pending, and afterwards
nothing at lldpad or the switch.  What is printed: the figures, next to a single guest's prepare begin on
the idle uplink and a bare interpreter start measured in the same run (ratios; this machine is shared).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import ENTRY, HookHost
from tests.lab.harness.switchpeer import SwitchPeer
from tests.lab.harness.vdplab import VdpLab

pytestmark = [pytest.mark.bench, pytest.mark.lab]

GUESTS = int(os.environ.get("VDP_BENCH_GUESTS", "128"))
PORTS = 2


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VdpLab, SwitchPeer]]:
    workdir = tmp_path_factory.mktemp("load")
    with VdpLab(workdir, uplinks=1, switch="none") as vdp_lab:
        assert vdp_lab.switch is not None
        peer = SwitchPeer(vdp_lab.switch, [vdp_lab.switch_ifname(None, "up0")], workdir / "peer")
        try:
            vdp_lab.lldpad().wait_evb("up0", timeout=20)
            yield vdp_lab, peer
        finally:
            peer.stop()


def _host(lab: VdpLab, tmp_path: Path) -> HookHost:
    host = HookHost(lab, "host", tmp_path, uplinks={"fabric-a": "up0"})
    text = host.config.read_text().replace("debug = yes", "debug = no")
    text = text.replace("exchange_timeout = 5", "exchange_timeout = 10").replace(
        "invocation_timeout = 15", "invocation_timeout = 30"
    )
    host.config.write_text(text)
    return host


def _guests(count: int) -> list[tuple[str, str, list[str]]]:
    """(uuid, xml, instances) per guest: PORTS ports each on fabric-a, explicit instance ids."""
    out = []
    for g in range(count):
        guest_uuid = str(uuid.uuid4())
        instances = [str(uuid.uuid4()) for _ in range(PORTS)]
        ports = [
            Port(
                f"52:54:02:{g // 256:02x}:{g % 256:02x}:{p:02x}",
                "fabric-a",
                vlan=100 + p,
                params={"managerid": "11", "typeid": "1193047", "typeidversion": "2", "instanceid": inst},
            )
            for p, inst in enumerate(instances)
        ]
        out.append((guest_uuid, domain_xml(f"load{g}", guest_uuid, ports=ports), instances))
    return out


Guest = tuple[str, str, list[str]]  # uuid, xml, instances


def _all_at_once(
    host: HookHost, guests: list[Guest], op: str, subop: str
) -> tuple[list[tuple[int, str, float]], float]:
    """Exec the entry for every guest at the same moment: (rc, stderr, seconds exec to exit) per guest,
    and the CPU seconds (user + system) all of them used."""
    assert host.lab is not None
    lab_host = host.lab.host("host")
    results: list[tuple[int, str, float]] = [(-1, "", 0.0)] * len(guests)
    go = threading.Event()

    def one(i: int, xml: str) -> None:
        go.wait()
        start = time.monotonic()
        proc = subprocess.Popen(
            lab_host.nsenter_argv([ENTRY, f"load{i}", op, subop, "-"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=host.env(),
        )
        _, err = proc.communicate(xml.encode(), timeout=300)
        results[i] = (proc.returncode, err.decode(errors="replace"), time.monotonic() - start)

    threads = [threading.Thread(target=one, args=(i, xml)) for i, (_, xml, _) in enumerate(guests)]
    for t in threads:
        t.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    go.set()
    for t in threads:
        t.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return results, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _figures(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {statistics.median(ordered):.2f} s, p99 {p99:.2f} s, max {ordered[-1]:.2f} s"


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def test_many_guests_on_one_uplink_at_once(lab: tuple[VdpLab, SwitchPeer], tmp_path: Path) -> None:
    vdp_lab, peer = lab
    host = _host(vdp_lab, tmp_path)
    # Side by side: a bare interpreter start and one guest alone on the idle uplink.
    bare_start = time.monotonic()
    assert host.runner(["/usr/bin/python3", "-S", "-c", "pass"], input=b"", env=host.env(), timeout=60).returncode == 0
    bare = time.monotonic() - bare_start
    ((_, alone_xml, _),) = _guests(1)
    alone = host.hook(alone_xml, "prepare", "begin")
    assert (alone.rc, alone.stderr) == (0, "")
    assert host.hook(alone_xml, "release", "end").rc == 0

    guests = _guests(GUESTS)
    instances = {i for _, _, insts in guests for i in insts}
    load_before = _load()
    started, cpu_start = _all_at_once(host, guests, "prepare", "begin")
    load_after = _load()
    vetoes = [(i, err.strip()) for i, (rc, err, _) in enumerate(started) if rc != 0]
    granted = {i for vsis in peer.table().values() for i in vsis}
    pending_start = [
        r for g, _, _ in guests for r in (host.journal(g) or {"records": []})["records"] if r["state"] != "done"
    ]
    released, cpu_release = _all_at_once(host, guests, "release", "end")
    left = [g for g, _, _ in guests if host.journal(g) is not None]
    still_granted = instances & {i for vsis in peer.table().values() for i in vsis}
    held = instances & set(vdp_lab.lldpad().vsi_uuids("up0", instances))
    print(
        f"\n{GUESTS} guests x {PORTS} ports on one uplink at once (load before {load_before}, after {load_after}; "
        f"bare interpreter {bare * 1000:.0f} ms, one guest alone {alone.seconds * 1000:.0f} ms):\n"
        f"  prepare begin: {_figures([s for _, _, s in started])}, CPU {cpu_start:.1f} s; {len(vetoes)} vetoed; "
        f"switch granted {len(instances & granted)}/{len(instances)}; {len(pending_start)} records not done\n"
        f"  release end:   {_figures([s for _, _, s in released])}, CPU {cpu_release:.1f} s; "
        f"{sum(rc != 0 for rc, _, _ in released)} non-zero; journals left {len(left)}; "
        f"switch still holds {len(still_granted)}, lldpad {len(held)}\n"
        f"  max/alone: start {max(s for _, _, s in started) / alone.seconds:.0f}x, "
        f"release {max(s for _, _, s in released) / alone.seconds:.0f}x"
    )
    assert not vetoes, vetoes[:3]
    assert instances <= granted and not pending_start
    assert not left and not still_granted and not held
