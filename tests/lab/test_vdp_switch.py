"""The VDP feature at the hook level against a switch that can say no: the entry exec'd as libvirt does
(HookHost), a real lldpad station per host, the lab's switch peer on the switch side (per-port or
one-port model; see tests/lab/harness/switchpeer.py).

Every check uses independent views besides our journal: the switch peer's table.json and events.jsonl
(what the switch holds and received) and lldpad's own VSI table (vdptool).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import HookHost
from tests.lab.harness.switchpeer import SwitchPeer
from tests.lab.harness.vdplab import VdpLab
from tests.lab.test_lldpad_client import drive

pytestmark = pytest.mark.lab

MACS = ["52:54:00:aa:10:02", "52:54:00:aa:10:03", "52:54:00:aa:10:04"]
UPLINKS = {"fabric-a": "up0", "fabric-b": "up1"}


@dataclass
class SwitchLab:
    lab: VdpLab
    peer: SwitchPeer


def _wait_vdp(lab: VdpLab, host: str | None, uplinks: list[str]) -> None:
    """EVB negotiated with the peer and lldpad's VDP22 running on every uplink (GETLINK answers)."""
    for uplink in uplinks:
        lab.lldpad(host).wait_evb(uplink, timeout=15)
    if host is not None:
        time.sleep(1.0)  # drive() runs in the only host; VDP starts well within this after EVB
        return
    end = time.monotonic() + 10
    for uplink in uplinks:
        while "error" in drive(lab, [{"op": "table", "ifname": uplink}]):
            assert time.monotonic() < end, f"VDP did not start on {uplink}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def swlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchLab]:
    workdir = tmp_path_factory.mktemp("vdpswitch")
    with VdpLab(workdir, uplinks=2, switch="none") as lab:
        assert lab.switch is not None
        peer = SwitchPeer(lab.switch, [lab.switch_ifname(None, u) for u in ("up0", "up1")], workdir / "peer")
        try:
            _wait_vdp(lab, None, ["up0", "up1"])
            yield SwitchLab(lab, peer)
        finally:
            peer.stop()


@pytest.fixture
def sw(swlab: SwitchLab) -> Iterator[SwitchLab]:
    swlab.peer.control({})
    yield swlab
    swlab.peer.control({})


def _host(sw: SwitchLab, tmp_path: Path, *, exchange_timeout: int = 5, extra: str = "") -> HookHost:
    host = HookHost(sw.lab, "host", tmp_path, uplinks=UPLINKS, extra=extra)
    text = host.config.read_text().replace("exchange_timeout = 5", f"exchange_timeout = {exchange_timeout}")
    host.config.write_text(text)
    return host


def _three_ports(*, second_required: bool | None = None) -> tuple[list[Port], list[str]]:
    instances = [str(uuid.uuid4()) for _ in MACS]
    params = [{"managerid": "11", "typeid": "1193047", "typeidversion": "2", "instanceid": i} for i in instances]
    ports = [
        Port(MACS[0], "fabric-a", vlan=100, params=params[0]),
        Port(MACS[1], "fabric-a", vlan=101, required=second_required, params=params[1]),
        Port(MACS[2], "fabric-b", vlan=102, params=params[2]),
    ]
    return ports, instances


def _switch_holds(sw: SwitchLab) -> dict[str, str]:
    """instance -> switch port, for every VSI the switch holds."""
    return {inst: port for port, vsis in sw.peer.table().items() for inst in vsis}


def _lldpad_holds(sw: SwitchLab, host: str | None = None) -> dict[str, dict[str, str]]:
    """instance -> lldpad's row (vdptool -t), over both uplinks."""
    out = {}
    for ifname in ("up0", "up1"):
        out.update({row["uuid"]: row for row in sw.lab.lldpad(host).vsi_table(ifname)})
    return out


def _seen(sw: SwitchLab, inst: str) -> list[tuple[str, str]]:
    """(mode, answer) of every non-keep-alive request the switch received for ``inst``."""
    return [(r["mode"], r["answer"]) for r in sw.peer.requests(inst) if not r["keepalive"]]


def test_switch_refuses_one_of_three_required_ports(sw: SwitchLab, tmp_path: Path) -> None:
    host = _host(sw, tmp_path)
    ports, insts = _three_ports()
    sw.peer.control({"instances": {insts[1]: {"status": "insufficient-resources"}}})
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1, result
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    for word in ("vm", MACS[1], "insufficient resources"):
        assert word in result.stderr, result.stderr
    time.sleep(0.2)
    assert not set(insts) & set(_switch_holds(sw)), sw.peer.table()
    assert not set(insts) & set(_lldpad_holds(sw))
    assert _seen(sw, insts[1]) == [("assoc", "insufficient-resources")]
    for inst in (insts[0], insts[2]):
        assert _seen(sw, inst) == [("assoc", "success"), ("deassoc", "success")]
    assert host.journal(guest) is None
    assert host.hook(xml, "release", "end").rc == 0


def test_refused_port_not_required_warns_and_proceeds(sw: SwitchLab, tmp_path: Path) -> None:
    host = _host(sw, tmp_path)
    ports, insts = _three_ports(second_required=False)
    sw.peer.control({"instances": {insts[1]: {"status": "insufficient-resources"}}})
    guest = str(uuid.uuid4())
    xml = domain_xml("vm", guest, ports=ports)
    result = host.hook(xml, "prepare", "begin")
    assert (result.rc, result.stderr, result.stdout) == (0, "", b""), result
    log = host.log_file.read_text()
    warnings = [line for line in log.splitlines() if MACS[1] in line and "not required" in line]
    assert warnings and "insufficient resources" in warnings[0], log
    holds = _switch_holds(sw)
    assert insts[0] in holds and insts[2] in holds and insts[1] not in holds
    lldpad = _lldpad_holds(sw)
    assert insts[1] not in lldpad and {lldpad[i]["mode"] for i in (insts[0], insts[2])} == {"assoc"}
    journal = host.journal(guest)
    assert journal is not None
    assert sorted(r["key"] for r in journal["records"]) == [MACS[0], MACS[2]]
    release = host.hook(xml, "release", "end")
    assert release.rc == 0
    assert not set(insts) & set(_switch_holds(sw)) and not set(insts) & set(_lldpad_holds(sw))
    assert host.journal(guest) is None, (host.journal(guest), host.log_file.read_text()[-3000:])
