"""lldpad's client-interface events for a VSI the client interface made, as the agent relies on them.

Measured with lldpad 1.1 against the switch peer: every VDP22 event (``M<module>E<level>{vsi}``) goes to
every attached client connection -- not only to the one that made the VSI, and also after that one has
closed (as the hook's has when the switch drops a migrated-in guest's port).  Netlink listeners hear
nothing of such a VSI (tests/lab/test_agent.py::test_netlink_reassociation_does_not_route_a_clif_vsis_
notices_to_the_agent), so this is the agent's only prompt way to learn of its loss.  Fails when a future
lldpad changes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.lab.test_agent import ROOT, _holds, lldpad_rows, sw, wait  # noqa: F401 - sw: a fixture
from tests.lab.test_vdp_switch import SwitchLab, swlab  # noqa: F401 - the module-scoped lab fixture

pytestmark = pytest.mark.lab

# One attached listener (vdp.qbg.clif.ClifEvents): a JSON line per VDP22 event record until stdin closes.
_LISTEN = """
import json, os, select, sys, time
sys.path.insert(0, %r)
from vdp.qbg.clif import ClifEvents
with ClifEvents() as events:
    print(json.dumps({"ready": True}), flush=True)
    while True:
        ready, _, _ = select.select([0, events.fileno()], [], [])
        if events.fileno() in ready:
            for record in events.read():
                print(json.dumps({"t": time.time(), **record}), flush=True)
        if 0 in ready and not os.read(0, 64):
            break
"""

# Makes one VSI through the library's connection (ASSOCIATE, M-bit: a migration target) and exits.
_MAKE = """
import sys, uuid
sys.path.insert(0, %r)
from vdp.qbg.clif import Clif
with Clif() as conn:
    r = conn.vsi("up1", mode="assoc", manager_id=11, type_id=1193047, type_version=2,
                 instance=uuid.UUID(%r), mac="52:54:00:aa:30:01", vlan=200, hints="to", wait=10)
assert r.ok, r
"""


def _records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_every_attached_connection_hears_the_switch_drop_a_vsi_another_connection_made(
    sw: SwitchLab, tmp_path: Path  # noqa: F811 - the fixture imported above
) -> None:
    inst = str(uuid.uuid4())
    listeners: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for n in range(2):
            out = tmp_path / f"listener{n}.out"
            with out.open("wb") as f:
                proc = subprocess.Popen(
                    sw.lab.host(None).nsenter_argv([sys.executable, "-c", _LISTEN % str(ROOT)]),
                    stdin=subprocess.PIPE,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                )
            listeners.append((proc, out))
            wait(lambda p=proc, o=out: '"ready"' in o.read_text() or p.poll() is not None, 30, "listener attached")
            assert proc.poll() is None, out.read_text()
        made = sw.lab.run_in_host(None, [sys.executable, "-c", _MAKE % (str(ROOT), inst)], timeout=60)
        assert made.returncode == 0, made.stderr.decode()[-2000:]  # its connection is closed now
        assert inst in _holds(sw)
        sw.peer.control({"commands": [{"id": f"drop-{inst}", "deassoc": inst}]})
        dropped = sw.peer.wait_event(lambda e: e["event"] == "switch-deassoc" and e["instance"] == inst, 10, "drop")
        for _proc, out in listeners:
            wait(
                lambda: any(r.get("uuid") == inst and r.get("mode") == "deassoc" for r in _records(out)),  # noqa: B023
                10,
                f"{out.name} hears the de-association",
            )
            heard = next(r for r in _records(out) if r.get("uuid") == inst and r.get("mode") == "deassoc")
            ms = 1000 * (float(heard["t"]) - float(dropped["time"]))
            print(f"\n{out.name}: switch drop -> client event {ms:.1f} ms")
        wait(lambda: inst not in lldpad_rows(sw), 10, "lldpad forgets the dropped VSI")
    finally:
        for proc, _out in listeners:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
