"""The VDP feature end to end at the hook level: the entry exec'd as libvirt does, a real lldpad station,
lldpad's own bridge role on the switch side (it says SUCCESS to everything) or no bridge at all.

Each check uses an independent view too: lldpad's own VSI table (vdptool) besides our journal.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import HookHost
from tests.lab.harness.vdplab import VdpLab

pytestmark = pytest.mark.lab

MACS = ["52:54:00:aa:00:02", "52:54:00:aa:00:03", "52:54:00:aa:00:04"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    with VdpLab(tmp_path_factory.mktemp("vdplab"), uplinks=2) as vdp_lab:
        yield vdp_lab


@pytest.fixture
def host(lab: VdpLab, tmp_path: Path) -> HookHost:
    return HookHost(lab, "host", tmp_path, uplinks={"fabric-a": "up0", "fabric-b": "up1"})


def _guest(ports: list[Port]) -> tuple[str, str]:
    guest_uuid = str(uuid.uuid4())
    return guest_uuid, domain_xml("vm", guest_uuid, ports=ports)


def _table(lab: VdpLab, ifname: str) -> list[dict[str, str]]:
    return lab.lldpad("host").vsi_table(ifname)


def _three_ports(required: bool | None = None) -> list[Port]:
    return [
        Port(MACS[0], "fabric-a", vlan=100, required=required),
        Port(MACS[1], "fabric-a", vlan=101, required=required),
        Port(MACS[2], "fabric-b", vlan=102, required=required),
    ]


@pytest.mark.parametrize("reason", ["-", "destroyed", "shutdown", "crashed", "migrated", "saved", "daemon"])
def test_fresh_start_associates_and_release_cleans_up(lab: VdpLab, host: HookHost, reason: str) -> None:
    """``release end`` as libvirt 9.0 (``-``) and libvirt >= 10.5 (the shutoff reason) call it: the VSIs,
    made over netlink, are torn down over netlink for every reason."""
    guest_uuid, xml = _guest(_three_ports())
    result = host.hook(xml, "prepare", "begin")
    assert (result.rc, result.stderr, result.stdout) == (0, "", b"")
    journal = host.journal(guest_uuid)
    assert journal is not None
    assert sorted((r["key"], r["kind"], r["state"]) for r in journal["records"]) == [
        (mac, "associate", "done") for mac in MACS
    ]
    assert len(_table(lab, "up0")) == 2 and len(_table(lab, "up1")) == 1
    for _ in ("start", "started"):
        assert host.hook(xml, _, "begin").rc == 0
    assert host.hook(xml, "stopped", "end", reason).rc == 0
    result = host.hook(xml, "release", "end", reason)
    assert result.rc == 0 and result.stderr == ""
    assert result.seconds < 5  # exchange_timeout: nothing waited out
    assert host.journal(guest_uuid) is None
    assert _table(lab, "up0") == [] and _table(lab, "up1") == []
    assert host.state_files() == []
    assert host.log_file.read_text().rstrip().endswith(f"released (libvirt's reason: {reason})")


@pytest.mark.parametrize("reason", ["-", "failed", "migrated", "destroyed"])
def test_incoming_migration_reserves_at_prepare_and_associates_at_started(
    lab: VdpLab, host: HookHost, reason: str
) -> None:
    """The VSIs of an incoming migration go through lldpad's client interface (migration hint): every
    ``release end`` reason tears them down that way (``failed``: the migration's rollback; ``migrated``:
    the guest left again)."""
    guest_uuid, xml = _guest(_three_ports())
    assert host.hook(xml, "migrate", "begin").rc == 0
    assert host.hook(xml, "prepare", "begin").rc == 0
    journal = host.journal(guest_uuid)
    assert journal is not None and journal["incoming"] is True
    assert {r["kind"] for r in journal["records"]} == {"reserve"}
    assert host.hook(xml, "start", "begin").rc == 0
    assert host.hook(xml, "started", "begin").rc == 0
    journal = host.journal(guest_uuid)
    assert journal is not None
    assert sorted((r["key"], r["kind"]) for r in journal["records"]) == [(mac, "associate") for mac in MACS]
    assert {r["data"]["via"] for r in journal["records"]} == {"clif"}
    result = host.hook(xml, "release", "end", reason)
    assert (result.rc, result.stderr) == (0, "") and result.seconds < 5, result
    assert _table(lab, "up0") == [] and _table(lab, "up1") == []
    assert host.state_files() == []


def test_marker_is_for_one_start_only(lab: VdpLab, host: HookHost) -> None:
    """A migrate begin whose migration never came must not turn the next start into a half start."""
    guest_uuid, xml = _guest(_three_ports()[:1])
    assert host.hook(xml, "migrate", "begin").rc == 0
    assert host.hook(xml, "prepare", "begin").rc == 0  # consumes it: reservation
    assert host.hook(xml, "release", "end").rc == 0
    assert host.hook(xml, "prepare", "begin").rc == 0  # a fresh start now: association
    journal = host.journal(guest_uuid)
    assert journal is not None and [r["kind"] for r in journal["records"]] == ["associate"]
    assert host.hook(xml, "release", "end").rc == 0


def test_uplink_down_vetoes_migrate_begin(lab: VdpLab, host: HookHost) -> None:
    _, xml = _guest(_three_ports())
    lab.set_link("host", "up1", False)
    try:
        result = host.hook(xml, "migrate", "begin")
    finally:
        lab.set_link("host", "up1", True)
        lab.wait_evb("host", "up1", timeout=20)
    assert result.rc == 1
    assert result.stderr.count("\n") == 1 and "up1" in result.stderr and "down" in result.stderr
    assert MACS[2] in result.stderr and "guest vm" in result.stderr
    assert host.state_files() == []  # no marker after a veto


def test_not_required_port_on_a_down_uplink_warns_and_proceeds(lab: VdpLab, host: HookHost) -> None:
    ports = _three_ports()
    ports[2] = Port(MACS[2], "fabric-b", vlan=102, required=False)
    guest_uuid, xml = _guest(ports)
    lab.set_link("host", "up1", False)
    try:
        result = host.hook(xml, "prepare", "begin")
        assert (result.rc, result.stderr) == (0, "")
        journal = host.journal(guest_uuid)
        assert journal is not None
        assert sorted(r["key"] for r in journal["records"]) == MACS[:2]
        assert "not required" in host.log_file.read_text()
    finally:
        lab.set_link("host", "up1", True)
        lab.wait_evb("host", "up1", timeout=20)
    assert host.hook(xml, "release", "end").rc == 0
    assert _table(lab, "up0") == []


def test_lldpad_down_vetoes_migrate_begin_saying_so(lab: VdpLab, host: HookHost) -> None:
    _, xml = _guest(_three_ports())
    lab.stop_lldpad("host")
    try:
        result = host.hook(xml, "migrate", "begin")
        start = host.hook(xml, "prepare", "begin")
    finally:
        lab.start_lldpad("host", wait_evb=True, timeout=20)
    assert result.rc == 1 and "lldpad" in result.stderr
    assert start.rc == 1 and "lldpad" in start.stderr
    assert host.state_files() == []


def test_emergency_override_lets_the_guest_in(lab: VdpLab, host: HookHost) -> None:
    guest_uuid, xml = _guest(_three_ports(required=True))
    assert host.cli("emergency", "--for", "1h", "--reason", "evacuation test").returncode == 0
    lab.stop_lldpad("host")
    try:
        result = host.hook(xml, "prepare", "begin")
        assert (result.rc, result.stderr) == (0, "")
        assert "emergency override" in host.log_file.read_text()
    finally:
        lab.start_lldpad("host", wait_evb=True, timeout=20)
        host.cli("emergency", "--off")
    assert host.hook(xml, "release", "end").rc == 0
    assert host.journal(guest_uuid) is None


def test_reconnect_reassociates_what_lldpad_lost(lab: VdpLab, host: HookHost) -> None:
    guest_uuid, xml = _guest(_three_ports())
    assert host.hook(xml, "prepare", "begin").rc == 0
    lab.stop_lldpad("host")  # lldpad restarts with an empty VSI table
    lab.start_lldpad("host", wait_evb=True, timeout=20)
    assert _table(lab, "up0") == []
    result = host.hook(xml, "reconnect", "begin")
    assert (result.rc, result.stderr) == (0, "")
    assert len(_table(lab, "up0")) == 2 and len(_table(lab, "up1")) == 1
    # With lldpad down, reconnect must still exit 0: libvirt would kill the guest otherwise.
    lab.stop_lldpad("host")
    try:
        assert host.hook(xml, "reconnect", "begin").rc == 0
    finally:
        lab.start_lldpad("host", wait_evb=True, timeout=20)
    assert host.hook(xml, "release", "end").rc == 0
    assert host.journal(guest_uuid) is None


def test_reconnect_waits_for_an_lldpad_that_just_restarted(lab_workdir: Path, tmp_path: Path) -> None:
    """libvirtd and lldpad restarted together: reconnect comes while lldpad still negotiates EVB (it refuses
    VSI requests, then the switch may drop what it takes) and waits for it, within the exchange timeout.

    A lab of its own, and two ports per uplink: lldpad's bridge takes an ECP frame whose sequence number
    equals the last one it received as a repeat (acknowledged, not passed on to VDP), and a restarted
    station numbers from 1 again -- so the first request after a restart is lost on an uplink where the
    previous lldpad sent exactly one frame (openlldp qbg/ecp22.c; measured).
    """
    with VdpLab(lab_workdir, uplinks=2) as lab:
        host = HookHost(lab, "host", tmp_path, uplinks={"fabric-a": "up0", "fabric-b": "up1"})
        ports = [Port(f"52:54:00:cc:00:0{i}", "fabric-a" if i < 2 else "fabric-b", vlan=110 + i) for i in range(4)]
        guest_uuid, xml = _guest(ports)
        assert host.hook(xml, "prepare", "begin").rc == 0
        lab.stop_lldpad("host")
        # Right after its control socket answers (not after its interfaces are set up: by then VDP may
        # already run on a fast day, and the hook would meet no unready lldpad at all).
        lab.lldpad("host").start()
        result = host.hook(xml, "reconnect", "begin")
        assert (result.rc, result.stderr) == (0, "")
        assert result.seconds < 5 + 2  # exchange_timeout = 5
        assert "not ready" in host.log_file.read_text()
        assert len(_table(lab, "up0")) == 2 and len(_table(lab, "up1")) == 2
        time.sleep(2)  # what the switch took stays taken
        assert len(_table(lab, "up0")) == 2 and len(_table(lab, "up1")) == 2
        assert host.hook(xml, "release", "end").rc == 0
        assert host.journal(guest_uuid) is None


def test_status_shows_journal_next_to_lldpad(lab: VdpLab, host: HookHost) -> None:
    import json

    guest_uuid, xml = _guest(_three_ports()[:2])
    assert host.hook(xml, "prepare", "begin").rc == 0
    status = host.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    (guest,) = [g for g in doc["guests"] if g["uuid"] == guest_uuid]
    assert {r["live"] for r in guest["records"]} == {"ok (status 0)"}
    lab.stop_lldpad("host")
    lab.start_lldpad("host", wait_evb=True, timeout=20)
    drift = host.cli("status", "--json")
    assert drift.returncode == 1  # drift is flagged
    assert json.loads(drift.stdout)["drift"] is True
    assert host.hook(xml, "release", "end").rc == 0


def test_prepare_for_four_ports_is_fast(lab: VdpLab, host: HookHost) -> None:
    """Smoke figure only (the benchmark compares side by side): four ports, exec to exit."""
    ports = [Port(f"52:54:00:bb:00:0{i}", "fabric-a", vlan=200 + i) for i in range(4)]
    _, xml = _guest(ports)
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 0
    print(f"prepare begin, 4 ports: {result.seconds * 1000:.0f} ms")
    assert host.hook(xml, "release", "end").rc == 0
    time.sleep(0)
