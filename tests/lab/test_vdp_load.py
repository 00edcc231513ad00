"""Bounded under load and bad timing, at the hook level (the entry exec'd as libvirt does, a real lldpad
station, the lab's switch peer on the switch side; its table and request log are the independent views):

- a guest declaring absurdly many ports is refused at once, naming the cap;
- a slow switch (3 s per answer): the requests of one uplink go one at a time, and when the time left
  cannot cover the rest and their rollback the hook stops before sending them, saying which settings to
  raise -- never half-way;
- lldpad just (re)started, as at a host boot: prepare begin waits for it instead of vetoing, and says so
  when it never became ready;
- no lock file for an uplink that is not an interface of this host.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import HookHost
from tests.lab.harness.switchpeer import SwitchPeer
from tests.lab.harness.vdplab import VdpLab

pytestmark = pytest.mark.lab

SLOW_MS = 3000


def _peer_lab(workdir: Path) -> tuple[VdpLab, SwitchPeer]:
    lab = VdpLab(workdir, uplinks=1, switch="none")
    try:
        assert lab.switch is not None
        peer = SwitchPeer(lab.switch, [lab.switch_ifname(None, "up0")], workdir / "peer")
        lab.switch_peer = peer
        lab.lldpad().wait_evb("up0", timeout=20)
    except BaseException:
        lab.close()
        raise
    return lab, peer


@pytest.fixture(scope="module")
def swlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VdpLab, SwitchPeer]]:
    lab, peer = _peer_lab(tmp_path_factory.mktemp("load"))
    try:
        _settle(lab, HookHost(lab, "host", tmp_path_factory.mktemp("warm"), uplinks={"fabric-a": "up0"}))
        yield lab, peer
    finally:
        peer.stop()
        lab.close()


def _settle(lab: VdpLab, host: HookHost) -> None:
    """Until one guest starts: lldpad takes VDP requests a moment after EVB looks negotiated."""
    end = time.monotonic() + 20
    while True:
        _, xml, _ = _guest(1)
        result = host.hook(xml, "prepare", "begin")
        assert host.hook(xml, "release", "end").rc == 0
        if result.rc == 0:
            return
        assert time.monotonic() < end, result.stderr


def _guest(count: int, *, uplink: str = "fabric-a") -> tuple[str, str, list[str]]:
    instances = [str(uuid.uuid4()) for _ in range(count)]
    ports = [
        Port(
            f"52:54:00:{i // 256:02x}:{i % 256:02x}:{int(inst[:2], 16):02x}",
            uplink,
            vlan=100 + i % 100,
            params={"managerid": "11", "typeid": "1193047", "typeidversion": "2", "instanceid": inst},
        )
        for i, inst in enumerate(instances)
    ]
    guest_uuid = str(uuid.uuid4())
    return guest_uuid, domain_xml("vm", guest_uuid, ports=ports), instances


@pytest.fixture
def host(swlab: tuple[VdpLab, SwitchPeer], tmp_path: Path) -> Iterator[HookHost]:
    lab, peer = swlab
    peer.control({})
    yield HookHost(lab, "host", tmp_path, uplinks={"fabric-a": "up0"})
    peer.control({})


def _records(host: HookHost, guest_uuid: str) -> list[dict[str, object]]:
    journal = host.journal(guest_uuid)
    return [] if journal is None else list(journal["records"])  # type: ignore[arg-type]


def test_a_guest_with_hundreds_of_ports_is_refused_at_once(swlab: tuple[VdpLab, SwitchPeer], host: HookHost) -> None:
    lab, peer = swlab
    guest_uuid, xml, instances = _guest(300)
    asked = len(peer.requests())
    for op in ("migrate", "prepare"):
        result = host.hook(xml, op, "begin")
        assert result.rc == 1, result
        print(f"\n  300 ports, {op} begin: veto after {result.seconds:.2f} s: {result.stderr.strip()}")
        assert "300 VDP ports, more than max_ports = 64" in result.stderr and "[vdp]" in result.stderr
    assert len(peer.requests()) == asked and _records(host, guest_uuid) == []
    assert not set(instances) & lab.lldpad().vsi_uuids("up0", instances[:10])
    # The cap is a setting: raised, the same kind of guest (fewer ports here, to stay quick) goes.
    host.write_config(uplinks={"fabric-a": "up0"}, extra="[vdp]\nmax_ports = 2\n")
    guest_uuid, xml, _ = _guest(3)
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1 and "max_ports = 2" in result.stderr


def test_slow_switch_stops_before_the_deadline_instead_of_half_way(
    swlab: tuple[VdpLab, SwitchPeer], host: HookHost
) -> None:
    """exchange_timeout 5, invocation_timeout 15 (10 s for setup, 5 kept for the rollback); 3 s per answer.

    Four ports on one uplink need 12 s, and their rollback 12 more: after the first answer the hook knows
    the switch's pace and stops; it rolls back the one port it set up.  The next guest is refused at once
    (the pace is remembered with the uplink).  Two ports fit, and go.
    """
    lab, peer = swlab
    peer.control({"default": {"status": "success", "delay_ms": SLOW_MS}})
    guest_uuid, xml, instances = _guest(4)
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1, result
    for word in ("not enough time left", "about 3", "invocation_timeout", "exchange_timeout", "up0"):
        assert word in result.stderr, result.stderr
    print(f"\n  4 ports at 3 s per answer: veto after {result.seconds:.1f} s: {result.stderr.strip()}")
    sent = [r["instance"] for r in peer.requests() if r["instance"] in instances and r["mode"] == "assoc"]
    assert sent == instances[:1]  # stopped before sending the others
    assert _records(host, guest_uuid) == []
    assert not set(instances) & set(lab.switch_table(None, "up0"))
    assert not set(instances) & lab.lldpad().vsi_uuids("up0", instances)

    again_uuid, again_xml, again = _guest(4)
    result = host.hook(again_xml, "prepare", "begin")
    assert result.rc == 1 and "not enough time left" in result.stderr, result
    print(f"  the next such guest: veto after {result.seconds:.2f} s, nothing sent")
    assert not [r for r in peer.requests() if r["instance"] in again] and _records(host, again_uuid) == []

    fits_uuid, fits_xml, fits = _guest(2)
    result = host.hook(fits_xml, "prepare", "begin")
    assert (result.rc, result.stderr) == (0, ""), result
    print(f"  2 ports at 3 s per answer: proceed after {result.seconds:.1f} s")
    assert set(fits) <= set(lab.switch_table(None, "up0"))
    assert host.hook(fits_xml, "release", "end").rc == 0
    assert _records(host, fits_uuid) == [] and not set(fits) & set(lab.switch_table(None, "up0"))


def test_no_lock_file_for_an_uplink_that_is_no_interface_here(
    swlab: tuple[VdpLab, SwitchPeer], host: HookHost
) -> None:
    _, xml, _ = _guest(1, uplink="nosuch0")
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1 and "nosuch0" in result.stderr, result
    assert host.hook(xml, "release", "end").rc == 0
    assert not (host.state_dir / "uplink-nosuch0.lock").exists()
    assert [p.name for p in host.state_dir.iterdir() if p.name.startswith("uplink-")] in ([], ["uplink-up0.lock"])


@contextlib.contextmanager
def _lldpad_just_restarted(lab_workdir: Path, tmp_path: Path) -> Iterator[tuple[VdpLab, HookHost]]:
    """A lab of its own whose station lldpad was restarted a moment ago (its control socket answers, VDP
    is not up yet): a restarted station numbers its ECP frames from 1 again, and a switch takes a frame
    with the same number as the last one it got as a repeat (so no earlier frames here)."""
    lab, peer = _peer_lab(lab_workdir)
    try:
        host = HookHost(lab, "host", tmp_path, uplinks={"fabric-a": "up0"})
        lab.stop_lldpad("host")
        lab.lldpad().start()
        yield lab, host
    finally:
        peer.stop()
        lab.close()


def test_prepare_begin_waits_for_an_lldpad_that_just_restarted(lab_workdir: Path, tmp_path: Path) -> None:
    """Host boot: lldpad started a moment ago answers ENXIO, then EPROTONOSUPPORT until EVB is up."""
    guest_uuid, xml, instances = _guest(2)
    with _lldpad_just_restarted(lab_workdir, tmp_path) as (lab, host):
        result = host.hook(xml, "prepare", "begin")
        assert (result.rc, result.stderr) == (0, ""), result
        retries = host.log_file.read_text().count("lldpad is not ready")
        print(f"\n  right after an lldpad restart: proceed after {result.seconds:.1f} s, {retries} retries")
        assert retries
        assert {r["state"] for r in _records(host, guest_uuid)} == {"done"}
        assert set(instances) <= set(lab.switch_table(None, "up0"))
        assert set(instances) <= lab.lldpad().vsi_uuids("up0", instances)
        assert host.hook(xml, "release", "end").rc == 0
        assert _records(host, guest_uuid) == [] and not set(instances) & set(lab.switch_table(None, "up0"))


@pytest.mark.parametrize("op", ["restore", "migrate"])
def test_preflight_waits_for_an_lldpad_that_just_restarted(lab_workdir: Path, tmp_path: Path, op: str) -> None:
    """Host boot: libvirt-guests restores a saved guest (or a guest migrates in) while lldpad is still
    bringing EVB up; the preflight waits for it instead of vetoing."""
    _, xml, _ = _guest(2)
    with _lldpad_just_restarted(lab_workdir, tmp_path) as (_lab, host):
        result = host.hook(xml, op, "begin")
        assert (result.rc, result.stderr) == (0, ""), result
        print(f"\n  {op} begin right after an lldpad restart: proceed after {result.seconds:.1f} s")


def test_prepare_begin_says_so_when_lldpad_never_becomes_ready(lab_workdir: Path, tmp_path: Path) -> None:
    """No switch answers EVB at all: lldpad refuses with EPROTONOSUPPORT for good; the veto comes after
    the exchange timeout and says that lldpad never became ready."""
    with VdpLab(lab_workdir, uplinks=1, switch="none") as lab:
        host = HookHost(lab, "host", tmp_path, uplinks={"fabric-a": "up0"})
        guest_uuid, xml, instances = _guest(2)
        result = host.hook(xml, "prepare", "begin")
        assert result.rc == 1, result
        print(f"\n  no bridge ever: veto after {result.seconds:.1f} s: {result.stderr.strip()}")
        assert "lldpad to become ready" in result.stderr and "exchange_timeout (5 s)" in result.stderr
        assert result.seconds >= 4.5  # it did wait
        assert _records(host, guest_uuid) == []
        assert not set(instances) & lab.lldpad().vsi_uuids("up0", instances)
