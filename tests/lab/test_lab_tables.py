"""The lab's views of what lldpad and the switch hold must stay true at scale (a leak check that reads an
empty table because the tool went blind would pass anything).

Measured with lldpad 1.1: ``vdptool -t`` prints nothing once an uplink holds ~32 VSIs; lldpad's GETLINK
reply lists at most the first ~92 VSIs of an uplink (one 4 KiB buffer) and drops the rest silently;
``vdptool -t -c uuid=U`` answers for one VSI at any size.  The harness (tests/lab/harness/lldpad.py) lists
over netlink, refuses (TableTooBig) when that listing may be cut short, and then asks per instance.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.lldpad import TableTooBig
from tests.lab.harness.vdplab import VdpLab

pytestmark = pytest.mark.lab

COUNT = 120  # past vdptool's ~32 and GETLINK's ~92

# VSIs through lldpad's client interface (each answered by an event, whatever the table's size).
_CLIF = """
import sys, uuid
sys.path.insert(0, %r)
from vdp.wire import clif
from vdp.qbg import clif as qclif
cmds = [clif.VsiCommand(ifname="up0", mode=%r, manager_id=11, type_id=1193047, type_version=2,
        instance=uuid.UUID(inst), mac="52:54:03:00:" + inst[:2] + ":" + inst[2:4], vlan=100, hints="none")
        for inst in %r]
with qclif.Clif() as conn:
    bad = [str(r) for r in conn.vsi_many(cmds, wait=10) if isinstance(r, Exception) or not r.ok]
assert not bad, bad[:3]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    with VdpLab(tmp_path_factory.mktemp("tables"), uplinks=1) as vdp_lab:
        yield vdp_lab


def _clif(lab: VdpLab, mode: str, instances: list[str]) -> None:
    root = str(Path(__file__).resolve().parents[2])
    out = lab.run_in_host(None, [sys.executable, "-c", _CLIF % (root, mode, instances)], timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-2000:]


def test_tables_are_read_truly_past_what_the_tools_can_list(lab: VdpLab) -> None:
    lldpad = lab.lldpad()
    instances = [str(uuid.uuid4()) for _ in range(COUNT)]
    assert lldpad.vsi_table("up0") == [] and lab.switch_table(None, "up0") == {}
    _clif(lab, "assoc", instances[:20])
    assert lldpad.vsi_uuids("up0") == set(instances[:20])  # a short table is listed whole
    _clif(lab, "assoc", instances[20:])
    try:
        # The blind spots this harness exists for: vdptool lists nothing, GETLINK too little.
        assert lldpad.vdptool("-i", "up0", "-t", "-V", "assoc").stdout.strip() == ""
        with pytest.raises(TableTooBig):
            lldpad.vsi_uuids("up0")  # never a blind "nothing"
        assert lldpad.vsi_uuids("up0", instances) == set(instances)
        rows = lldpad.vsi_table("up0", [*instances[:3], str(uuid.uuid4())])
        assert sorted(r["uuid"] for r in rows) == sorted(instances[:3])
        assert {r["mode"] for r in rows} == {"assoc"}
        # The switch side (lldpad's bridge, seen through the tap) holds them all too.
        switch = lab.switch_table(None, "up0")
        assert set(switch) == set(instances) and {e["mode"] for e in switch.values()} == {"assoc"}
    finally:
        _clif(lab, "deassoc", instances)
    assert lldpad.vsi_uuids("up0", instances) == set()
    assert lldpad.vsi_table("up0") == [] and lab.switch_table(None, "up0") == {}
