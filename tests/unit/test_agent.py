"""The agent's pure parts and its files: the published port (stale files ignored), the [agent] config
section, backoff, which records are the agent's work, sd_notify over a real datagram socket, the guest lock
(the agent never waits for a hook), and lldpad notifications mapped to the guest that owns the VSI."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hooks import agentclif, agentfile
from hooks.agent import Agent, agent_settings, backoff, running, sd_notify, work_of
from hooks.config import load_config
from hooks.errors import ConfigError
from hooks.feature import is_known_feature
from hooks.journal import DONE, INTENT, PENDING, Journal, Record
from hooks.log import Sink
from vdp.wire import netlink as nlmsg


# ------------------------------------------------------------------------------------------ agent.json
def test_published_port_is_read_back_while_the_process_runs(tmp_path: Path) -> None:
    agentfile.publish(str(tmp_path), 4242)
    doc, why = agentfile.agent_info(str(tmp_path))
    assert doc is not None and doc["pid"] == os.getpid() and doc["port_id"] == 4242, why
    assert agentfile.agent_port(str(tmp_path)) == 4242
    assert oct((tmp_path / "agent.json").stat().st_mode & 0o777) == "0o600"
    agentfile.withdraw(str(tmp_path))
    assert not (tmp_path / "agent.json").exists()
    assert agentfile.agent_port(str(tmp_path)) is None


def test_file_of_an_exited_agent_is_ignored(tmp_path: Path) -> None:
    code = f"from hooks import agentfile; agentfile.publish({str(tmp_path)!r}, 777)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    doc, why = agentfile.agent_info(str(tmp_path))
    assert doc is None and "has exited" in why
    assert agentfile.agent_port(str(tmp_path)) is None
    agentfile.withdraw(str(tmp_path))  # not ours: stays
    assert (tmp_path / "agent.json").exists()


def test_reused_pid_other_netns_and_garbage_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    agentfile.publish(str(tmp_path), 5)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "start": doc["start"] - 1}))  # same pid, another process start
    assert agentfile.agent_port(str(tmp_path)) is None
    path.write_text(json.dumps({**doc, "netns": "net:[1]"}))
    assert agentfile.agent_info(str(tmp_path))[1].endswith("another network namespace")
    for junk in ("", "[]", '{"pid": "1", "port_id": 2}', '{"pid": 1, "port_id": 0}'):
        path.write_text(junk)
        assert agentfile.agent_port(str(tmp_path)) is None


# ------------------------------------------------------------------------------------------ config
def test_agent_section_is_accepted_and_parsed(tmp_path: Path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text("[hooks]\nsyslog = no\n[agent]\non_deassoc = report\nretry_max = 5s\n")
    config = load_config(str(conf), known_features=is_known_feature)
    settings = agent_settings(config)
    assert settings["on_deassoc"] == "report" and settings["retry_max"] == 5.0
    assert settings["retry_initial"] == 0.5  # default


@pytest.mark.parametrize(
    ("line", "words"),
    [("colour = red", ["c.conf:3", "no key 'colour'"]), ("on_deassoc = ignore", ["c.conf:3", "on_deassoc"])],
)
def test_agent_section_errors_name_file_and_line(tmp_path: Path, line: str, words: list[str]) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text(f"[hooks]\n[agent]\n{line}\n")
    config = load_config(str(conf), known_features=is_known_feature)
    with pytest.raises(ConfigError) as info:
        agent_settings(config)
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------------------------------ rules
def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff(10_000, 0.5, 60.0) == 60.0


def _rec(rid: int, state: str, kind: str = "associate") -> Record:
    return Record(rid, "vdp", f"52:54:00:00:00:0{rid}", kind, {"instance": str(uuid.UUID(int=rid))}, state)


def test_work_is_pending_records_and_intents_of_guests_not_running() -> None:
    assert work_of([_rec(1, PENDING), _rec(2, PENDING)]) == [_rec(1, PENDING), _rec(2, PENDING)]
    # A confirmed record means the guest runs here: its intents are the hook's business (it holds the lock).
    assert work_of([_rec(1, DONE), _rec(2, INTENT)]) == []
    assert work_of([_rec(2, INTENT)]) == [_rec(2, INTENT)]
    assert work_of([_rec(1, DONE), _rec(3, PENDING)]) == [_rec(3, PENDING)]
    assert running([_rec(1, DONE, "reserve")]) and not running([_rec(1, PENDING)])


# ------------------------------------------------------------------------------------------ sd_notify
def test_sd_notify_sends_one_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert sd_notify("READY=1") is True
        assert listener.recv(100) == b"READY=1"
    name = f"vdph-test-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("STOPPING=1") is True
        assert listener.recv(100) == b"STOPPING=1"


# ------------------------------------------------------------------------------------------ the agent
def _agent(tmp_path: Path) -> Agent:
    conf = tmp_path / "c.conf"
    conf.write_text("[hooks]\nsyslog = no\n")
    return Agent(load_config(str(conf)), Sink(log_file=str(tmp_path / "log")), str(tmp_path / "state"))


def _journal(agent: Agent, state: str) -> tuple[uuid.UUID, str]:
    gid = uuid.uuid4()
    instance = str(uuid.uuid4())
    with agent.store.open(gid, "g1") as gj:
        (rec,) = gj.add("vdp", [("52:54:00:aa:00:01", "associate", {"instance": instance, "proto": "qbg"})], op="x")
        if state == DONE:
            gj.confirm([rec], {})
        elif state == PENDING:
            gj.mark_pending([rec], {rec.id: "switch silent"})
    return gid, instance


def test_locked_guest_is_left_for_later(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    gid, _ = _journal(agent, PENDING)
    fd = os.open(tmp_path / "state" / f"{gid}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a hook holds the guest (another open file: flock conflicts)
        agent.scan()
        assert set(agent.jobs) == {gid}
        assert agent.attempt(gid, agent.jobs[gid]) is None  # no wait, no failure: come back later
    finally:
        os.close(fd)


def _notice(instance: str) -> bytes:
    return nlmsg.encode_qbg_request(
        seq=1,
        port_id=0,
        ifindex=1,
        ifname="up0",
        mac="52:54:00:aa:00:01",
        vlan=0,
        vsi_type=nlmsg.VsiType(11, 1193047, 2),
        instance=uuid.UUID(instance),
        request=nlmsg.DISASSOCIATE,
    )


def test_lldpad_notice_schedules_the_owning_running_guest(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    agent.lldpad_pid = 4242
    gid, instance = _journal(agent, DONE)
    agent.on_datagram(_notice(str(uuid.uuid4())), 4242)  # a VSI nobody here holds
    assert agent.jobs == {}
    agent.on_datagram(_notice(instance), 4242)
    assert set(agent.jobs) == {gid} and agent.jobs[gid].reasons == {"deassoc"}
    assert "de-associated" in (tmp_path / "log").read_text()


def test_notice_from_another_sender_is_ignored(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    _gid, instance = _journal(agent, DONE)
    agent.lldpad_pid = 4242
    agent.on_datagram(_notice(instance), 0x7FFFFFF0)  # not lldpad
    assert agent.jobs == {}


# lldpad 1.1's VDP22 events as an attached client connection received them (tests/lab/test_clif_events.py).
_EVENT = {
    "deassoc": "M000080c4E16009d04mode0007deassoc06mgrid200021106typeid0007119304709typeidver0001204uuid0024{}"
    "05hints0001006filter0015100-52:54:00:aa:20:02",
    "assoc": "M000080c4E16009b04mode0005assoc06mgrid200021106typeid0007119304709typeidver0001204uuid0024{}"
    "05hints0001006filter0015100-52:54:00:aa:20:02",
}


def _clif_journal(agent: Agent, via: str) -> tuple[uuid.UUID, str]:
    gid, instance = uuid.uuid4(), str(uuid.uuid4())
    with agent.store.open(gid, "g1") as gj:
        data = {"instance": instance, "proto": "qbg", "via": via}
        (rec,) = gj.add("vdp", [("52:54:00:aa:20:02", "associate", data)], op="x")
        gj.confirm([rec], {})
    return gid, instance


def _attached(agent: Agent) -> socket.socket:
    """The agent's attached client connection, on a socket pair: the other end plays lldpad's sender."""
    from vdp.qbg.clif import ClifEvents

    ours, lldpad = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    conn = ClifEvents.__new__(ClifEvents)
    conn._sock, conn._fd = ours, ours.fileno()
    agent.clif_events = conn
    agent.readers[conn.fileno()] = lambda: agentclif.on_events(agent)
    return lldpad


def test_client_interface_deassoc_event_schedules_the_guest_of_a_clif_made_vsi(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    gid, instance = _clif_journal(agent, "clif")
    _nl_gid, nl_instance = _clif_journal(agent, "netlink")
    lldpad = _attached(agent)
    try:
        lldpad.send(_EVENT["assoc"].format(instance).encode())  # an association: nothing lost
        lldpad.send(_EVENT["deassoc"].format(str(uuid.uuid4())).encode())  # a VSI nobody here holds
        lldpad.send(_EVENT["deassoc"].format(nl_instance).encode())  # its netlink notice tells
        agentclif.on_events(agent)
        assert agent.jobs == {}
        lldpad.send(_EVENT["deassoc"].format(instance).encode())
        agentclif.on_events(agent)
        assert set(agent.jobs) == {gid} and agent.jobs[gid].reasons == {"deassoc"}
        assert f"client interface reports VSI {instance} de-associated" in (tmp_path / "log").read_text()
    finally:
        lldpad.close()
        agentclif.detach(agent)


def test_deassoc_event_while_a_hook_holds_the_guest_is_checked_later_without_a_warning(tmp_path: Path) -> None:
    """The event does not say who asked: while a hook holds the guest it is most likely the answer to that
    hook's own DISASSOCIATE (a release), so it is no reported loss, only work for after the hook."""
    agent = _agent(tmp_path)
    gid, instance = _clif_journal(agent, "clif")
    lldpad = _attached(agent)
    fd = os.open(tmp_path / "state" / f"{gid}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        lldpad.send(_EVENT["deassoc"].format(instance).encode())
        agentclif.on_events(agent)
        assert set(agent.jobs) == {gid} and agent.jobs[gid].reasons == {"deassoc"}
        assert "client interface reports" not in (tmp_path / "log").read_text()
    finally:
        os.close(fd)
        lldpad.close()
        agentclif.detach(agent)


def test_a_failed_client_connection_is_dropped_for_the_lldpad_check_to_attach_again(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    lldpad = _attached(agent)
    assert agent.clif_events is not None and agent.readers
    agent.clif_events._sock.close()  # the connection fails under the agent
    try:
        agentclif.on_events(agent)
    finally:
        lldpad.close()
    assert agent.clif_events is None and agent.readers == {}, "dropped, and out of the select"
    assert "attaching again" in (tmp_path / "log").read_text()


def test_pending_record_of_a_stopped_guest_is_found_by_the_scan(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    gid, _ = _journal(agent, PENDING)
    _journal(agent, DONE)  # a running guest: no work
    agent.scan()
    assert set(agent.jobs) == {gid} and agent.jobs[gid].reasons == {"pending"}
    assert Journal(agent.store.state_dir).peek(gid) is not None


def test_record_of_a_feature_that_cannot_load_stays_pending(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    gid = uuid.uuid4()
    with agent.store.open(gid, "g1") as gj:
        (rec,) = gj.add("nosuchfeature", [("k", "thing", {})], op="x")
        gj.mark_pending([rec], {rec.id: "earlier failure"})
    agent.scan()
    assert agent.attempt(gid, agent.jobs[gid]) is False  # a failure: backed off, retried later
    agent.run_due()
    assert agent.jobs[gid].failures == 1 and agent.jobs[gid].due > 0
    gj = agent.store.peek(gid)
    assert gj is not None and [r.state for r in gj.records] == [PENDING]
    assert "stay pending" in (tmp_path / "log").read_text()
