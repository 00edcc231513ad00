"""Benchmark: a whole ``prepare begin`` for a guest with 4 hook-managed 802.1Qbg ports, exec to exit.

Side by side in one run, medians, all exec'd the same way inside the lab host (nsenter):

- ``interpreter``: the entry's interpreter doing nothing (``/usr/bin/python3 -S -c pass``),
- ``imports``: the same interpreter importing what the slow path imports, the way it does (site-packages
  added by hand, hooks/boot.py, our modules, lxml, pyroute2's netlink part), then leaving,
- ``prepare``: the real hook exec'd through its shebang as libvirt does, 4 ports on 2 uplinks through real
  lldpad and lldpad's bridge: for a fresh start 4 ASSOCIATEs over netlink, for an incoming migration (after
  ``migrate begin``) 4 PREASSOCIATE_RRs with the migration hint through lldpad's client interface,
- ``libvirt way``: the same 4 requests the way libvirt 9.0 does them, one port after another, each
  polled after 125 ms sleeps (measured in-process, so it excludes any interpreter start).

The hook's state directory is on tmpfs, under the lab host's /run, as on a libvirt host.  The split printed
is interpreter / imports / the rest (I/O: journal writes, netlink and lldpad round trips).
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hooks.hostcheck import HOOK_IMPORTS
from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import ENTRY, HookHost
from tests.lab.harness.vdplab import VdpLab
from vdp.wire import netlink as nlmsg

pytestmark = [pytest.mark.bench, pytest.mark.lab]

ROUNDS = 15
REPO = str(Path(ENTRY).parents[1])
ENTRY_PYTHON = "/usr/bin/python3"  # the entry's shebang
IMPORTS = HOOK_IMPORTS.format(lib=REPO) + "import os; os._exit(0)\n"  # what `vdp-hooks check` imports, then leave
LIBVIRT_WAY = """
import socket, sys, time, uuid
sys.path.insert(0, %r)
from vdp.qbg.netlink import LldpadClient, VsiRequest
from vdp.qbg.session import QbgSession, find_lldpad_pid
from vdp.wire import netlink as nlmsg
reqs = [VsiRequest(ifname=ifn, mac=mac, vlan=vlan, vsi_type=nlmsg.VsiType(11, 1193047, 2),
        instance=uuid.UUID(inst), request=%d) for ifn, mac, vlan, inst in %r]
start = time.monotonic()
with QbgSession(exchange_timeout=10.0) as s, LldpadClient(lldpad_pid=find_lldpad_pid(), clif=s.peek) as client:
    for req in reqs:  # one port after another, as libvirt does
        client._send(nlmsg.encode_qbg_request(seq=client._next_seq(), port_id=client.port_id,
            ifindex=socket.if_nametoindex(req.ifname), ifname=req.ifname, mac=req.mac, vlan=req.vlan,
            vsi_type=req.vsi_type, instance=req.instance, request=req.request))
        first = True
        while True:
            if not first:
                time.sleep(0.125)
            first = False
            states = {s.instance: s for s in client.table(req.ifname)}
            got = states.get(req.instance)
            if got is not None and got.response is not None:
                break
print(time.monotonic() - start)
"""

SUBMIT = """
import sys, uuid
sys.path.insert(0, %r)
from vdp.qbg.netlink import LldpadClient, VsiRequest
from vdp.qbg.session import QbgSession, find_lldpad_pid
from vdp.wire import netlink as nlmsg
reqs = [VsiRequest(ifname=ifn, mac=mac, vlan=vlan, vsi_type=nlmsg.VsiType(11, 1193047, 2),
        instance=uuid.UUID(inst), request=%d) for ifn, mac, vlan, inst in %r]
with QbgSession(exchange_timeout=30) as s, LldpadClient(
        lldpad_pid=find_lldpad_pid(), exchange_timeout=30, clif=s.peek) as client:
    bad = [r.message for r in client.submit(reqs) if not r.ok]
    assert not bad, bad
"""
BUSY = 100  # other guests' VSIs on each uplink


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    with VdpLab(tmp_path_factory.mktemp("bench"), uplinks=2) as vdp_lab:
        yield vdp_lab


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _submit(host: HookHost, request: int, spec: list[tuple[str, str, int, str]]) -> None:
    """Send ``request`` for every (uplink, MAC, VLAN, instance) of ``spec`` with our client; all must succeed."""
    out = host.runner([sys.executable, "-c", SUBMIT % (REPO, request, spec)], input=b"", env=host.env(), timeout=600)
    assert out.returncode == 0, out.stderr


def _bench_host(lab: VdpLab, tmp_path: Path) -> HookHost:
    tmp_path.mkdir(exist_ok=True)
    host = HookHost(lab, "host", tmp_path, uplinks={"fabric-a": "up0", "fabric-b": "up1"})
    host.config.write_text(host.config.read_text().replace("debug = yes", "debug = no"))
    # The state directory where hosts have it: under /run, a tmpfs (the lab host's own; read from here
    # through /proc/PID/root of a process in its mount namespace).
    state = f"/run/vdp-hooks-bench-{uuid.uuid4().hex[:8]}"
    host.extra_env["VDP_HOOKS_STATE_DIR"] = state
    host.state_dir = Path(f"/proc/{lab.host('host').holder.pid}/root{state}")
    return host


def _timed_prepare(host: HookHost, xml: str) -> float:
    """Exec the entry through its shebang, as libvirt does: ``prepare begin``, seconds from exec to exit."""
    start = time.monotonic()
    proc = host.runner([ENTRY, "vm", "prepare", "begin", "-"], input=xml.encode(), env=host.env(), timeout=60)
    seconds = time.monotonic() - start
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr
    return seconds


def _four_ports(guest_uuid: str) -> str:
    ports = [Port(f"52:54:00:dd:00:0{i}", "fabric-a" if i < 2 else "fabric-b", vlan=300 + i) for i in range(4)]
    return domain_xml("bench", guest_uuid, ports=ports)


@pytest.mark.parametrize("incoming", [False, True], ids=["start", "incoming-migration"])
def test_prepare_begin_four_ports(lab: VdpLab, tmp_path: Path, incoming: bool) -> None:
    host = _bench_host(lab, tmp_path)
    python = sys.executable
    request = nlmsg.PREASSOCIATE_RR if incoming else nlmsg.ASSOCIATE
    interp, imports, prepare, libvirt = [], [], [], []
    for _ in range(ROUNDS):
        guest_uuid = str(uuid.uuid4())
        xml = _four_ports(guest_uuid)
        for code, bucket in (("pass", interp), (IMPORTS, imports)):
            argv = [ENTRY_PYTHON, "-S", "-c", code]
            start = time.monotonic()
            assert host.runner(argv, input=b"", env=host.env(), timeout=60).returncode == 0
            bucket.append(time.monotonic() - start)
        if incoming:
            assert host.hook(xml, "migrate", "begin").rc == 0
        prepare.append(_timed_prepare(host, xml))
        journal = host.journal(guest_uuid)
        assert journal is not None and len(journal["records"]) == 4, journal
        assert host.hook(xml, "release", "end").rc == 0
        spec = [
            (f"up{i // 2}", f"52:54:00:dd:00:0{i}", 300 + i, str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{guest_uuid}{i}")))
            for i in range(4)
        ]
        out = host.runner([python, "-c", LIBVIRT_WAY % (REPO, request, spec)], input=b"", env=host.env(), timeout=60)
        assert out.returncode == 0, out.stderr
        libvirt.append(float(out.stdout.decode().strip()))
        _submit(host, nlmsg.DISASSOCIATE, spec)
    i, m, p, lv = (_median_ms(x) for x in (interp, imports, prepare, libvirt))
    print(
        f"\nprepare begin ({'incoming migration' if incoming else 'start'}), 4 ports, exec to exit: median {p:.1f} ms "
        f"(interpreter {i:.1f} ms, imports {m - i:.1f} ms, I/O and the rest {p - m:.1f} ms; "
        f"{p / i:.1f}x a bare interpreter start); libvirt way (4 ports one by one, 125 ms polls, no interpreter "
        f"start): {lv:.1f} ms, ratio {lv / p:.1f}x"
    )
    # The goal is 100 ms here, where a bare interpreter start takes ~13-15 ms: ~7x.  What is asserted, side
    # by side in one run: several times faster than libvirt's way, and within 8x a bare interpreter start.
    assert lv / p >= 4.0, f"only {lv / p:.1f}x faster than libvirt's way"
    assert p / i <= 8.0, f"{p:.1f} ms is {p / i:.1f}x a bare interpreter start ({i:.1f} ms)"


def test_prepare_begin_next_to_busy_uplinks(tmp_path: Path) -> None:
    """lldpad's GETLINK reply lists every VSI of the uplink, and the hook polls it: with BUSY other VSIs on
    each uplink, a 4-port ``prepare begin`` (start) may cost at most 1.5x what it costs on idle uplinks.

    One host with four uplinks: the same guest's ports on up0/up1 (idle) and on up2/up3 (busy), rounds
    interleaved."""
    with VdpLab(tmp_path / "lab", uplinks=4) as lab:
        idle_host = _bench_host(lab, tmp_path / "idle")
        busy_host = _bench_host(lab, tmp_path / "busy")
        busy_host.write_config(uplinks={"fabric-a": "up2", "fabric-b": "up3"})
        busy_host.config.write_text(busy_host.config.read_text().replace("debug = yes", "debug = no"))
        others = [
            (f"up{2 + i % 2}", f"52:54:01:00:{i // 256:02x}:{i % 256:02x}", 1000 + i, str(uuid.uuid4()))
            for i in range(2 * BUSY)
        ]
        _submit(busy_host, nlmsg.ASSOCIATE, others)
        samples: dict[str, list[float]] = {"idle": [], "busy": []}
        for _ in range(ROUNDS):
            for name, host in (("idle", idle_host), ("busy", busy_host)):
                xml = _four_ports(str(uuid.uuid4()))
                samples[name].append(_timed_prepare(host, xml))
                assert host.hook(xml, "release", "end").rc == 0
        _submit(busy_host, nlmsg.DISASSOCIATE, others)
    idle, busy = _median_ms(samples["idle"]), _median_ms(samples["busy"])
    print(
        f"\nprepare begin (start), 4 ports: idle uplinks {idle:.1f} ms, with {BUSY} other VSIs on each uplink "
        f"{busy:.1f} ms, ratio {busy / idle:.2f}x"
    )
    assert busy / idle <= 1.5, f"{BUSY} other VSIs per uplink make prepare begin {busy / idle:.2f}x slower"
