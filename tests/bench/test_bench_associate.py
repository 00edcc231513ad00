"""Benchmark: how long one ASSOCIATE takes until confirmed, three ways, against real lldpad (LAB.md A).

(a) floor: send the SETLINK, then GETLINK in a tight loop until the response shows up;
(b) ``LldpadClient.submit()`` (exponential back-off from 1 ms, busy probe, confirmation);
(c) libvirt's way: one GETLINK right after the SETLINK, then a 125 ms sleep before each next one (10 s cap);
(d) a whole Python process as a hook would run it: exec, imports, 4 ASSOCIATEs on two uplinks, exit.

Each round uses a fresh VSI per method and disassociates it afterwards (not timed).  The three run
interleaved in the same process inside the station host's namespaces, so they share conditions.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.vdplab import VdpLab

pytestmark = [pytest.mark.lab, pytest.mark.bench]

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 20

BENCH = r"""
import json, socket, statistics, sys, time, uuid
from vdp.wire import netlink as nlmsg
from vdp.qbg.netlink import LldpadClient, VsiRequest
from vdp.qbg.session import QbgSession, find_lldpad_pid
from vdp.wire.netlink import VsiType

IFNAME, ROUNDS = sys.argv[1], int(sys.argv[2])
MAC, VLAN, VSI = "52:54:00:11:22:33", 10, VsiType(11, 5, 4)
pid = find_lldpad_pid()
ifindex = socket.if_nametoindex(IFNAME)
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
sock.bind((0, 0))
port = sock.getsockname()[0]
seq = [int(time.time())]


def exchange(data, want_seq):
    sock.sendto(data, (pid, 0))
    while True:
        for hdr, msg in nlmsg.split_messages(sock.recv(65536)):
            if hdr.seq == want_seq and hdr.type in (nlmsg.NLMSG_ERROR, nlmsg.NLMSG_DONE):
                return hdr, msg


def setlink(inst, request):
    seq[0] += 1
    hdr, msg = exchange(nlmsg.encode_qbg_request(seq=seq[0], port_id=port, ifindex=ifindex, ifname=IFNAME,
                        mac=MAC, vlan=VLAN, vsi_type=VSI, instance=inst, request=request), seq[0])
    assert nlmsg.decode_error(msg) == 0, nlmsg.decode_error(msg)


def response(inst):
    seq[0] += 1
    hdr, msg = exchange(nlmsg.encode_getlink(seq=seq[0], port_id=port, ifindex=ifindex), seq[0])
    assert hdr.type == nlmsg.NLMSG_DONE, hdr
    for p in nlmsg.decode_ports(msg):
        if p.instance == inst:
            return p.response
    raise AssertionError("VSI missing")


def floor(inst):
    t0 = time.monotonic()
    setlink(inst, nlmsg.ASSOCIATE)
    while (r := response(inst)) is None:
        pass
    assert r == 0, r
    return time.monotonic() - t0


def libvirt_way(inst):
    t0 = time.monotonic()
    setlink(inst, nlmsg.ASSOCIATE)
    end = t0 + 10.0
    while (r := response(inst)) is None:
        assert time.monotonic() < end, "libvirt way: no answer in 10 s"
        time.sleep(0.125)
    assert r == 0, r
    return time.monotonic() - t0


with QbgSession(exchange_timeout=10.0) as session, LldpadClient(lldpad_pid=pid, clif=session.peek) as client:
    def ours(inst):
        t0 = time.monotonic()
        (res,) = client.submit([VsiRequest(IFNAME, MAC, VLAN, VSI, inst, nlmsg.ASSOCIATE)])
        took = time.monotonic() - t0
        assert res.ok, res.message
        return took

    def drop(inst):
        (res,) = client.submit([VsiRequest(IFNAME, MAC, VLAN, VSI, inst, nlmsg.DISASSOCIATE)])
        assert res.ok, res.message

    times = {"floor": [], "client": [], "libvirt": []}
    for _ in range(ROUNDS):
        for name, fn in (("floor", floor), ("client", ours), ("libvirt", libvirt_way)):
            inst = uuid.uuid4()
            times[name].append(fn(inst) * 1000)
            drop(inst)

# (d) a whole process, as a hook is: exec, import, 4 ASSOCIATEs on two uplinks, exit (then 4 DISASSOCIATEs).
import os, subprocess
CHILD = (
    "import time\n"
    "t0 = time.monotonic()\n"
    "import sys, uuid\n"
    "from vdp.qbg.netlink import LldpadClient, VsiRequest\n"
    "from vdp.qbg.session import QbgSession, find_lldpad_pid\n"
    "from vdp.wire.netlink import VsiType\n"
    "t1 = time.monotonic()\n"
    "insts = [uuid.UUID(u) for u in sys.argv[2:]]\n"
    "with QbgSession(exchange_timeout=10.0) as s, LldpadClient(lldpad_pid=find_lldpad_pid(), clif=s.peek) as c:\n"
    "    res = c.submit([VsiRequest(('up0', 'up1')[i % 2], '52:54:00:00:00:%02x' % i, 20 + i, VsiType(11, 5, 4),"
    " inst, int(sys.argv[1])) for i, inst in enumerate(insts)])\n"
    "t2 = time.monotonic()\n"
    "bad = [r.message for r in res if not r.ok]\n"
    "print((t1 - t0) * 1000, (t2 - t1) * 1000)\n"
    "sys.exit('; '.join(bad) if bad else 0)\n"
)
for key in ("process_4_ports", "import", "submit_4_ports"):
    times[key] = []
for _ in range(ROUNDS // 2):
    insts = [str(uuid.uuid4()) for _ in range(4)]
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", CHILD, str(nlmsg.ASSOCIATE), *insts], check=True,
                         capture_output=True, text=True).stdout.split()
    times["process_4_ports"].append((time.monotonic() - t0) * 1000)
    times["import"].append(float(out[0]))
    times["submit_4_ports"].append(float(out[1]))
    subprocess.run([sys.executable, "-c", CHILD, str(nlmsg.DISASSOCIATE), *insts], check=True, capture_output=True)
times["python_startup"] = []
for _ in range(ROUNDS // 2):
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    times["python_startup"].append((time.monotonic() - t0) * 1000)
print(json.dumps({k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
                  for k, v in times.items()}))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    with VdpLab(tmp_path_factory.mktemp("bench"), uplinks=2) as vdp_lab:
        yield vdp_lab


def test_bench_associate(lab: VdpLab) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(ROOT)}
    res = lab.run_in_host(None, [sys.executable, "-c", BENCH, "up0", str(ROUNDS)], env=env, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    fig = json.loads(res.stdout)
    a, b, c = fig["floor"]["median"], fig["client"]["median"], fig["libvirt"]["median"]
    for name, label in (("floor", "(a) SETLINK + tight GETLINK loop"), ("client", "(b) LldpadClient.submit()"),
                        ("libvirt", "(c) libvirt: GETLINK, then 125 ms sleeps"),
                        ("process_4_ports", "(d) process: exec, import, 4 ASSOCIATEs, exit"),
                        ("python_startup", "    of which: bare 'python3 -c pass'"),
                        ("import", "    of which: import vdp.qbg.session"),
                        ("submit_4_ports", "    of which: submit() 4 ports on 2 uplinks")):
        f = fig[name]
        print(f"{label:42s} median {f['median']:7.2f} ms  min {f['min']:7.2f}  max {f['max']:7.2f}  "
              f"({f['n']} rounds)")
    print(f"ratios: client/floor = {b / a:.2f}, libvirt/client = {c / b:.1f}")
    assert b <= 2 * a, f"client {b:.2f} ms is more than twice the floor {a:.2f} ms"
    assert c >= 10 * b, f"libvirt way {c:.2f} ms is less than 10x the client's {b:.2f} ms"
    # (d) is reported, not asserted: on this 2-core machine shared with other labs its spread is CPU
    # contention (import alone ranged 34-190 ms under load); the wire part is bounded like (b).
    e = fig["submit_4_ports"]["median"]
    assert e <= 4 * 2 * a, f"4 ports on 2 uplinks took {e:.1f} ms, over 4x two floor exchanges ({2 * a:.1f} ms)"
