"""802.1Qbh at the hook level: the entry exec'd as libvirt does, with policy, rollback and journal.

Two kinds of kernel side: the enic peer (``tests/lab/harness/enicpeer.py``, a real NETLINK_ROUTE socket
that plays the kernel + enic driver, reached through ``VDP_HOOKS_QBH_PEER``, an override libvirt's
stripped environment can never carry), and the real kernel on a veth, which cannot do port profiles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness.enicpeer import BADSTATE, ERROR, INSUFFICIENT_RESOURCES, INVALID
from tests.lab.harness.guestxml import Port, domain_xml
from tests.lab.harness.hookrun import HookHost, netns_runner
from tests.lab.harness.netns import Netns, unique_suffix

pytestmark = pytest.mark.lab

MAC1, MAC2 = "52:54:00:cc:00:01", "52:54:00:cc:00:02"
REPO = Path(__file__).resolve().parents[2]


class Peer:
    """The enic peer as a process inside ``netns``, steered through its control file."""

    def __init__(self, netns: Netns, workdir: Path, devices: list[dict[str, Any]]) -> None:
        self.control = workdir / "enic-control.json"
        self.log = workdir / "enic-rx.jsonl"
        ready = workdir / "enic-port.txt"
        self.devices = devices
        self.script({})
        self.proc = subprocess.Popen(
            netns.argv(
                [
                    sys.executable,
                    "-m",
                    "tests.lab.harness.enicpeer",
                    "--control",
                    str(self.control),
                    "--ready",
                    str(ready),
                    "--log",
                    str(self.log),
                ]
            ),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 20
        while not ready.exists():
            assert self.proc.poll() is None and time.monotonic() < end, "enic peer did not start"
            time.sleep(0.02)
        self.port_id = int(ready.read_text())

    def script(self, associate: dict[str, Any]) -> None:
        """Change how the 'adapter' answers (pre)associations from now on (the peer re-reads the file);
        disassociations always succeed, as on the real adapter."""
        rules = [{"ifindex": None, "vf": None, "request": r, **associate} for r in (1, 2)]
        control = {"devices": self.devices, "firmware": rules}
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(control))
        tmp.replace(self.control)
        time.sleep(0.12)  # the peer polls the file's mtime every 50 ms

    def requests(self) -> list[int]:
        """The REQUEST codes of every SETLINK the peer received, in order."""
        time.sleep(0.12)  # the peer appends to its log between 50 ms polls
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            found += [request for _vf, request in json.loads(line).get("requests") or []]
        return found

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def netns() -> Iterator[Netns]:
    with Netns(f"vq{unique_suffix()}") as ns:
        ns.run(["ip", "link", "add", "enic0", "type", "veth", "peer", "name", "enicp0"])
        ns.run(["ip", "link", "add", "enic1", "type", "veth", "peer", "name", "enicp1"])
        for dev in ("enic0", "enicp0", "enic1", "enicp1"):
            ns.run(["ip", "link", "set", dev, "up"])
        yield ns


@pytest.fixture
def peer(netns: Netns, tmp_path: Path) -> Iterator[Peer]:
    p = Peer(netns, tmp_path, [{"ifname": "enic0", "dynamic": True}, {"ifname": "enic1", "dynamic": True}])
    try:
        yield p
    finally:
        p.stop()


def _host(netns: Netns, tmp_path: Path, peer: Peer | None, **kw: Any) -> HookHost:
    env = {"VDP_HOOKS_QBH_PEER": str(peer.port_id)} if peer else {}
    return HookHost(
        None,
        "qbh",
        tmp_path,
        uplinks={"vmfex-a": "enic0", "vmfex-b": "enic1"},
        runner=netns_runner(netns.name),
        extra_env=env,
        **kw,
    )


def _guest(*ports: Port) -> tuple[str, str]:
    guest_uuid = str(uuid.uuid4())
    return guest_uuid, domain_xml("vm", guest_uuid, ports=list(ports))


def _qbh(mac: str, uplink: str, required: bool | None = None) -> Port:
    return Port(mac, uplink, kind="qbh", required=required, params={"profileid": "finance-10"})


def test_start_and_release_through_the_peer(netns: Netns, peer: Peer, tmp_path: Path) -> None:
    host = _host(netns, tmp_path, peer)
    guest_uuid, xml = _guest(_qbh(MAC1, "vmfex-a"))
    result = host.hook(xml, "prepare", "begin")
    assert (result.rc, result.stderr, result.stdout) == (0, "", b"")
    journal = host.journal(guest_uuid)
    assert journal is not None
    (record,) = journal["records"]
    assert (record["kind"], record["state"], record["data"]["profile"]) == ("associate", "done", "finance-10")
    assert record["data"]["pf_ifname"] == "enic0"
    assert peer.requests() == [2]  # ASSOCIATE
    assert host.hook(xml, "release", "end").rc == 0
    assert peer.requests() == [2, 3]  # ... then DISASSOCIATE
    assert host.journal(guest_uuid) is None and host.state_files() == []


def test_incoming_migration_reserves_then_associates(netns: Netns, peer: Peer, tmp_path: Path) -> None:
    host = _host(netns, tmp_path, peer)
    guest_uuid, xml = _guest(_qbh(MAC1, "vmfex-a"))
    for op in ("migrate", "prepare", "start"):
        assert host.hook(xml, op, "begin").rc == 0
    assert peer.requests() == [1]  # PREASSOCIATE_RR (enic refuses plain PREASSOCIATE)
    assert host.hook(xml, "started", "begin").rc == 0
    assert peer.requests() == [1, 2]
    journal = host.journal(guest_uuid)
    assert journal is not None and [r["kind"] for r in journal["records"]] == ["associate"]
    assert host.hook(xml, "release", "end").rc == 0
    assert host.journal(guest_uuid) is None


def test_in_progress_then_success(netns: Netns, peer: Peer, tmp_path: Path) -> None:
    host = _host(netns, tmp_path, peer)
    peer.script({"polls_in_progress": 4})
    _, xml = _guest(_qbh(MAC1, "vmfex-a"))
    assert host.hook(xml, "prepare", "begin").rc == 0
    assert host.hook(xml, "release", "end").rc == 0


@pytest.mark.parametrize("response", [INVALID, BADSTATE, INSUFFICIENT_RESOURCES, ERROR])
def test_each_refusal_vetoes_a_required_port_and_rolls_back(
    netns: Netns, peer: Peer, tmp_path: Path, response: int
) -> None:
    host = _host(netns, tmp_path, peer)
    guest_uuid, xml = _guest(_qbh(MAC1, "vmfex-a"), _qbh(MAC2, "vmfex-b"))
    peer.script({"final_response": response})
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1
    assert result.stderr.count("\n") == 1 and "guest vm" in result.stderr and "feature vdp" in result.stderr
    assert host.journal(guest_uuid) is None  # both ports rolled back
    assert peer.requests().count(3) == 2  # one DISASSOCIATE per port


def test_refusal_of_a_port_not_required_warns_and_proceeds(netns: Netns, peer: Peer, tmp_path: Path) -> None:
    host = _host(netns, tmp_path, peer)
    guest_uuid, xml = _guest(_qbh(MAC1, "vmfex-a", required=False))
    peer.script({"final_response": INSUFFICIENT_RESOURCES})
    result = host.hook(xml, "prepare", "begin")
    assert (result.rc, result.stderr) == (0, "")
    assert "not required" in host.log_file.read_text()
    assert host.journal(guest_uuid) is None


def test_silent_adapter_times_out_and_disassociates(netns: Netns, peer: Peer, tmp_path: Path) -> None:
    host = _host(netns, tmp_path, peer)
    host.config.write_text(host.config.read_text().replace("exchange_timeout = 5", "exchange_timeout = 1.5"))
    guest_uuid, xml = _guest(_qbh(MAC1, "vmfex-a"))
    peer.script({"polls_in_progress": 10_000})
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1 and result.seconds < 6
    assert 3 in peer.requests()
    assert host.journal(guest_uuid) is None


def test_reconnect_reassociates_a_lost_port(netns: Netns, peer: Peer, tmp_path: Path) -> None:
    host = _host(netns, tmp_path, peer)
    guest_uuid, xml = _guest(_qbh(MAC1, "vmfex-a"))
    assert host.hook(xml, "prepare", "begin").rc == 0
    assert host.hook(xml, "reconnect", "begin").rc == 0
    assert peer.requests() == [2]  # still associated: nothing sent
    # The adapter forgets (e.g. a driver reload): restart the peer with fresh state.
    peer.stop()
    (tmp_path / "again").mkdir()
    fresh = Peer(netns, tmp_path / "again", peer.devices)
    try:
        host.extra_env["VDP_HOOKS_QBH_PEER"] = str(fresh.port_id)
        assert host.hook(xml, "reconnect", "begin").rc == 0
        assert fresh.requests() == [2]
        assert host.hook(xml, "release", "end").rc == 0
    finally:
        fresh.stop()
    assert host.journal(guest_uuid) is None


def test_real_kernel_veth_required_vetoes_with_a_clear_message(netns: Netns, tmp_path: Path) -> None:
    host = _host(netns, tmp_path, None)
    guest_uuid, xml = _guest(_qbh(MAC1, "vmfex-a"))
    result = host.hook(xml, "migrate", "begin")
    assert result.rc == 1
    assert "802.1Qbh" in result.stderr and "enic0" in result.stderr
    result = host.hook(xml, "prepare", "begin")
    assert result.rc == 1 and "802.1Qbh" in result.stderr
    assert host.hook(xml, "release", "end").rc == 0
    assert host.journal(guest_uuid) is None and host.state_files() == []


def test_real_kernel_veth_not_required_proceeds_with_a_warning(netns: Netns, tmp_path: Path) -> None:
    host = _host(netns, tmp_path, None)
    guest_uuid, xml = _guest(_qbh(MAC1, "vmfex-a", required=False))
    result = host.hook(xml, "prepare", "begin")
    assert (result.rc, result.stderr) == (0, "")
    assert "802.1Qbh" in host.log_file.read_text()
    assert host.hook(xml, "release", "end").rc == 0
    assert host.journal(guest_uuid) is None and host.state_files() == []
