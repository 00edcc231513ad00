"""The agent hears libvirt (hooks.domainevents, hooks.libvirtsync) in the e2e lab: real libvirtd 9.0 + QEMU
on hosts A and B, station lldpads, the switch peer in its one-port model (a VSI lives at one port at a
time: where migration timing matters), and ``vdp-hooks agent`` in each libvirtd's namespaces, connected
to it as ``qemu:///system``.

Outcomes are checked from outside: the switch's request log and table, lldpad's table, ``virsh``.
Latencies (the resume gap, the source's re-association) are printed, never asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.agentrun import AgentProcess
from tests.lab.harness.e2e import LOGICAL_UPLINK, E2EHost, E2ELab, EventWatch, Guest, wait_until
from tests.lab.harness.guestxml import NS, Port
from tests.lab.harness.libvirt import LIBVIRTD

pytestmark = [
    pytest.mark.lab,
    pytest.mark.libvirt,
    pytest.mark.skipif(not os.access(LIBVIRTD, os.X_OK), reason="apt-get install libvirt-daemon-driver-qemu"),
]

HOLD = 4.0  # the one-port switch keeps the source's VSI this long after the destination's M-hinted associate
AGENT = (
    "[agent]\nretry_initial = 200ms\nretry_max = 2s\nscan_interval = 2s\nlldpad_check_interval = 1s\n"
    "attempt_timeout = 12s\n"
)
FIGURES: list[str] = []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ELab]:
    with E2ELab(tmp_path_factory.mktemp("agent-libvirt"), model="one-port", migration_timeout=HOLD) as the_lab:
        yield the_lab
    print("\nagent + libvirt figures:\n  " + "\n  ".join(FIGURES))


@pytest.fixture
def agents(lab: E2ELab, tmp_path: Path) -> Iterator[dict[str, AgentProcess]]:
    lab.accept_all()
    procs: dict[str, AgentProcess] = {}
    try:
        for key, host in lab.hosts.items():
            host.set_config(AGENT)
            procs[key] = host.start_agent(tmp_path / f"agent-{key}.out")
        for host in lab.hosts.values():
            wait_until(lambda h=host: "libvirt events on" in h.log_file.read_text(), 20, f"agent on {host.name}")
        yield procs
    finally:
        for key, proc in procs.items():
            assert proc.stop() == 0, (tmp_path / f"agent-{key}.out").read_text()[-2000:]
        for host in lab.hosts.values():
            host.set_config("")
        lab.accept_all()


def _requests(lab: E2ELab, host: E2EHost, guest: Guest, since: float, mode: str) -> list[dict[str, object]]:
    return [e for e in lab.switch_requests(host, since=since, instances=guest.instances(), keepalives=True)
            if e["mode"] == mode and e["answer"] == "success"]


def _agent_lines(host: E2EHost, mark: int, guest: Guest) -> list[str]:
    return [x.text for x in host.hook_lines(mark) if x.fields.get("uuid") == guest.uuid
            and str(x.fields.get("op", "")).startswith("agent")]


def _cleanup(lab: E2ELab, guest: Guest) -> None:
    for host in lab.hosts.values():
        host.destroy(guest.name)


def _gone_everywhere(lab: E2ELab, guest: Guest) -> None:
    for host in lab.hosts.values():
        wait_until(lambda h=host: not set(guest.instances()) & set(h.switch_table()), 20, f"nothing at {host.name}")
        wait_until(lambda h=host: not [p for p in h.state_dir.glob(f"{guest.uuid}*")], 20, f"no journal on {host.name}")


# -- associate_at = resume -------------------------------------------------------------------------


def test_associate_at_resume_source_keeps_its_vsi_through_the_transfer(lab: E2ELab, agents: dict) -> None:
    """B reserves at prepare begin, associates nothing at started begin; its agent associates (hint M) when
    libvirt says the guest resumed.  On the one-port switch A's VSIs stay at A through the RAM transfer."""
    lab.b.set_config(AGENT + "[vdp]\nassociate_at = resume\n")
    guest = lab.guest("res")
    try:
        r, _ = lab.a.create(guest)
        assert r.returncode == 0, r.stderr
        since = time.time()
        mark_b = lab.b.log_mark()
        with EventWatch(lab.b) as events_b:
            r, seconds = lab.migrate(lab.a, lab.b, guest.name)
            assert r.returncode == 0, r.stderr
            wait_until(lambda: len(_requests(lab, lab.b, guest, since, "assoc")) == len(guest.ports), 20,
                       "B's agent associates after the resume")
            resumed = min(t for t, _, text in events_b.events(guest.name) if text == "Resumed Migrated")
        assoc_b = {e["instance"]: float(e["time"]) for e in _requests(lab, lab.b, guest, since, "assoc")}
        deassoc_a = {e["instance"]: float(e["time"]) for e in _requests(lab, lab.a, guest, since, "deassoc")}
        # B reserved before the transfer and associated only after the guest resumed there ...
        assert len(_requests(lab, lab.b, guest, since, "preassoc-rr")) == len(guest.ports)
        assert min(assoc_b.values()) >= resumed
        assert all(e["hints"]["M"] for e in lab.switch_requests(lab.b, since=since, instances=guest.instances()))
        # ... so nothing moved A's VSIs during the transfer: no switch-initiated de-associate at A at all.
        assert [e for e in lab.peer.events("switch-deassoc") if e["instance"] in guest.instances()
                and e["time"] >= since] == []
        started = [x.message for x in lab.b.hook_lines(mark_b)
                   if x.fields.get("uuid") == guest.uuid and x.fields.get("op") == "started begin"]
        assert any("the agent associates" in m for m in started), started
        wait_until(lambda: not set(guest.instances()) & set(lab.a.switch_table()), 10, "A let go")
        assert set(guest.instances()) <= set(lab.b.switch_table())
        journal = lab.b.journal(guest.uuid)
        assert journal is not None
        assert sorted((r["kind"], r["state"]) for r in journal["records"]) == [("associate", "done")] * 2
        gaps = [1000 * (assoc_b[i] - deassoc_a[i]) for i in guest.instances()]
        after = [1000 * (assoc_b[i] - resumed) for i in guest.instances()]
        FIGURES.append(f"associate_at = resume, one-port switch: migration {seconds:.1f} s; gap A deassoc -> B assoc "
                       f"{', '.join(f'{g:.0f}' for g in gaps)} ms; B resume -> B assoc "
                       f"{', '.join(f'{a:.0f}' for a in after)} ms")
        print("\n  " + FIGURES[-1])
    finally:
        _cleanup(lab, guest)
        lab.b.set_config(AGENT)
    _gone_everywhere(lab, guest)


# -- the source resumes after a failed outgoing migration ------------------------------------------


def test_source_resumed_after_failed_migration_gets_its_ports_back(lab: E2ELab, agents: dict) -> None:
    """associate_at = started: B's M-hinted associate at started begin puts A's VSIs on hold; the migration
    (not live: A is paused for the transfer) is aborted, A resumes ("Resumed Migrated", reason
    migration-canceled) and its agent associates A's ports again, which takes them back at the switch:
    the hold never expires into a de-association."""
    guest = lab.guest("fail")
    try:
        r, _ = lab.a.create(guest)
        assert r.returncode == 0, r.stderr
        since = time.time()
        mark = lab.a.log_mark()
        with EventWatch(lab.a) as events_a:
            argv = ["virsh", "-q", "-c", lab.a.libvirt.uri, "migrate", "--p2p", guest.name, lab.b.libvirt.p2p_uri,
                    "--migrateuri", f"tcp://{lab.b.libvirt.migration_addr}", "--bandwidth", "1"]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_until(lambda: "paused" in lab.a.domstate(guest.name), 60, "A paused for the transfer")
                assert len(lab.peer.events("migration-hold")) > 0
                lab.a.virsh("domjobabort", guest.name, check=False, timeout=30)
                _, stderr = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode != 0 and "canceled" in stderr, stderr
            wait_until(lambda: any(text == "Resumed Migrated" for _, _, text in events_a.events(guest.name)), 20,
                       "A resumed")
            resumed = min(t for t, _, text in events_a.events(guest.name) if text == "Resumed Migrated")
        assert lab.a.domstate(guest.name) == "running (migration canceled)"
        wait_until(lambda: len([e for e in _requests(lab, lab.a, guest, resumed, "assoc")]) >= len(guest.ports), 20,
                   "A's agent associates again")
        again = [float(e["time"]) for e in _requests(lab, lab.a, guest, resumed, "assoc")]
        wait_until(lambda: sum("associated again on" in line for line in _agent_lines(lab.a, mark, guest))
                   == len(guest.ports), 20, "the agent logs each port associated again")
        holds = [e for e in lab.peer.events("migration-hold")
                 if e["instance"] in guest.instances() and e["time"] >= since]
        assert {e["iface"] for e in holds} == {lab.a.switch_port()}
        # Past the hold: A still holds every VSI at the switch, none was de-associated by it.
        time.sleep(HOLD + 1)
        assert [e for e in lab.peer.events("switch-deassoc") if e["instance"] in guest.instances()
                and e["time"] >= since] == []
        assert set(guest.instances()) <= set(lab.a.switch_table())
        assert set(guest.instances()) <= lab.a.vsi_uuids()
        FIGURES.append("failed outgoing migration, one-port switch: A resume -> A associated again "
                       f"{', '.join(f'{1000 * (t - resumed):.0f}' for t in sorted(again)[:len(guest.ports)])} ms")
        print("\n  " + FIGURES[-1])
    finally:
        _cleanup(lab, guest)
    _gone_everywhere(lab, guest)


# -- a guest that vanished without release end -----------------------------------------------------


@pytest.mark.parametrize("status", ["kept", "lost"])
def test_guest_vanished_with_libvirtd_killed_is_torn_down(lab: E2ELab, agents: dict, status: str) -> None:
    """libvirtd SIGKILLed, then its guest's QEMU: no hook ran.  libvirtd 9.0 started again finds the guest's
    status file and runs release end itself (measured: ``kept``); with that file gone too (``lost``) libvirt
    only says the guest is not running, and the agent (reconnected) tears the guest's ports down."""
    guest = lab.guest(f"gone{status}")
    host = lab.a
    try:
        r, _ = host.create(guest)
        assert r.returncode == 0, r.stderr
        assert set(guest.instances()) <= set(host.switch_table())
        mark = host.log_mark()
        qemus = host.kill_libvirtd()
        for pid in qemus:
            os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        assert set(guest.instances()) <= set(host.switch_table())  # nothing happened yet: no hook ran
        if status == "lost":
            (host.libvirt.dir / "run" / "qemu" / f"{guest.name}.xml").unlink()
        t0 = time.time()
        host.libvirt.start()
        wait_until(lambda: not set(guest.instances()) & set(host.switch_table()), 60, "the guest's ports torn down")
        gone = time.time()
        assert guest.name not in host.domains()
        wait_until(lambda: not [p for p in host.state_dir.glob(f"{guest.uuid}*")], 20, "journal gone")
        lines = [x for x in host.hook_lines(mark) if x.fields.get("uuid") == guest.uuid]
        by = sorted({str(x.fields.get("op")) for x in lines if "torn down" in x.message})
        print("\n  torn down by: " + ", ".join(by) + "\n  " + "\n  ".join(x.text for x in lines))
        FIGURES.append(f"vanished guest (libvirtd, QEMU SIGKILLed; status file {status}): down {gone - t0:.1f} s "
                       f"after libvirtd was started again, by {', '.join(by)}")
        if status == "kept":
            assert by == ["release end"], by
        else:  # the agent's job for the guest, whose reasons include the check after (re)connecting
            assert len(by) == 1 and by[0].startswith("agent ") and "libvirt" in by[0].split()[1].split("+"), by
    finally:
        if host.libvirt.daemon is None:
            host.libvirt.start()
        _cleanup(lab, guest)
    _gone_everywhere(lab, guest)


# -- hot-plug and metadata --live ------------------------------------------------------------------


def _nic_xml(mac: str) -> str:
    # usb-net: QEMU unplugs it without the guest's help (a PCI NIC waits for the guest OS to eject it, and
    # this guest has none: it idles in the BIOS, so libvirt would never report it removed).
    return f"<interface type='ethernet'><mac address='{mac}'/><model type='usb-net'/></interface>"


def test_hotplugged_interface_gets_its_port_and_metadata_edit_removes_it(lab: E2ELab, agents: dict) -> None:
    """No qemu hook runs for hot-plug: DEVICE_ADDED with a MAC the metadata declares -> associated,
    DEVICE_REMOVED -> torn down, attached again -> associated, dropped from ``--live`` metadata -> torn down."""
    guest = lab.guest("hot")
    extra_mac = guest.macs[-1][:-2] + "09"
    extra = Port(extra_mac, LOGICAL_UPLINK, vlan=130, required=False,
                 params={"managerid": "11", "typeid": "1193047", "typeidversion": "2",
                         "instanceid": str(uuidlib.uuid4())})
    inst = str(uuidlib.UUID(extra.params["instanceid"]))
    guest.ports.append(extra)  # declared, but the guest starts without that NIC: not required, skipped
    host = lab.a
    try:
        # ACPI: without it QEMU's PCI bus takes no hot-plugged device.
        r, _ = host.create(guest, xml=guest.xml().replace("</os>", "</os>\n  <features><acpi/></features>"))
        assert r.returncode == 0, r.stderr
        assert inst not in host.switch_table()
        nic = lab.workdir / f"{guest.name}-nic.xml"
        nic.write_text(_nic_xml(extra_mac))
        host.virsh("attach-device", guest.name, str(nic), "--live")
        wait_until(lambda: inst in host.switch_table(), 20, "the hot-plugged NIC's port associated")
        assert host.switch_table()[inst]["filters"][0]["vlan"] == 130
        journal = host.journal(guest.uuid)
        assert journal is not None and (extra_mac, "done") in [(r["key"], r["state"]) for r in journal["records"]]
        host.virsh("detach-device", guest.name, str(nic), "--live")
        wait_until(lambda: inst not in host.switch_table(), 20, "the unplugged NIC's port torn down")
        # The switch drops the VSI before the agent hears the answer and removes the record: wait for both.
        wait_until(
            lambda: extra_mac not in [r["key"] for r in (host.journal(guest.uuid) or {"records": []})["records"]],
            20,
            "the unplugged NIC's record removed",
        )
        assert host.journal(guest.uuid) is not None
        assert set(guest.instances()[:-1]) <= set(host.switch_table())
        host.virsh("attach-device", guest.name, str(nic), "--live")
        wait_until(lambda: inst in host.switch_table(), 20, "plugged again: associated again")
        # The admin drops the port from the live metadata: torn down.
        # virsh metadata --set wants the element without its namespace (libvirt adds it, prefix = --key).
        bare = guest.metadata(ports=guest.ports[:-1]).replace(f' xmlns:vdp="{NS}"', "").replace("vdp:", "")
        host.virsh("metadata", guest.name, NS, "--key", "vdp", "--live", "--set", bare)
        wait_until(lambda: inst not in host.switch_table(), 20, "the port dropped from the metadata torn down")
        assert set(guest.instances()[:-1]) <= set(host.switch_table())
    finally:
        _cleanup(lab, guest)
    _gone_everywhere(lab, guest)
