"""The reconcile's judgement of one journaled port from its uplink's table (the table read itself runs in
the lab against real lldpad: tests/lab/test_agent.py), and what it reports."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable

from hooks.journal import DONE, INTENT, PENDING, Record
from hooks.reconcile import IN_PROGRESS, LOST, OK, UNKNOWN, Findings, _classify, pending_cause
from vdp.wire.netlink import PortStatus

INST = str(uuid.UUID(int=7))


def _record(state: str = DONE) -> Record:
    return Record(
        1, "vdp", "52:54:00:00:00:01", "associate", {"instance": INST, "ifname": "up0", "proto": "qbg"}, state
    )


def _live(response: int | None) -> dict[str, object]:
    return {INST: PortStatus(vf=None, instance=uuid.UUID(INST), response=response)}


def _never(_ifname: str, _inst: str) -> bool | None:
    raise AssertionError("a whole table answers by itself: no per-VSI query")


def test_a_whole_table_decides_alone() -> None:
    assert _classify(_record(), _live(0), False, _never, set()) == OK
    assert _classify(_record(), _live(2), False, _never, set()) == LOST  # a failure status
    assert _classify(_record(), {}, False, _never, set()) == LOST


def test_in_progress_twice_in_a_row_counts_as_lost() -> None:
    """A request lost on the wire (the first ECP frame after an lldpad restart) stays in progress for good."""
    assert _classify(_record(), _live(None), False, _never, set()) == IN_PROGRESS
    assert _classify(_record(), _live(None), False, _never, {INST}) == LOST


def test_absent_from_a_cut_reply_is_asked_for_alone() -> None:
    asked: list[tuple[str, str]] = []

    def holds(answer: bool | None) -> Callable[[str, str], bool | None]:
        def ask(ifname: str, inst: str) -> bool | None:
            asked.append((ifname, inst))
            return answer

        return ask

    assert _classify(_record(), {}, True, holds(True), set()) == OK
    assert _classify(_record(), {}, True, holds(False), set()) == LOST
    assert _classify(_record(), {}, True, holds(None), set()) == UNKNOWN  # lldpad refused the query
    assert asked == [("up0", INST)] * 3


def test_pending_causes() -> None:
    assert pending_cause(_record(PENDING), alive=True) == "teardown_unfinished"
    assert pending_cause(_record(INTENT), alive=False) == "unconfirmed"
    assert pending_cause(_record(INTENT), alive=True) is None  # a set-up in progress of a running guest
    assert pending_cause(_record(DONE), alive=True) is None


def test_findings_report_drift_and_count_states() -> None:
    found = Findings()
    g = uuid.UUID(int=9)
    found.ports = {f"{g}/a": OK, f"{g}/b": LOST, f"{g}/c": OK}
    found.lost = {g: ["b"]}
    found.unowned = {"up1": 2}
    found.not_running = [g]
    found.problems = ["uplink up0: lldpad did not answer"]
    assert found.states() == {"ok": 2, "lost": 1}
    assert found.drift() == [
        f"guest {g}: 1 port(s) not held by lldpad: b",
        "uplink up1: lldpad holds 2 VSI(s) no journal knows",
        f"guest {g}: journaled as running, libvirt says it is not",
        "uplink up0: lldpad did not answer",
    ]
    assert found.summary()["ports"] == {"ok": 2, "lost": 1}


def test_libvirts_view_marks_journaled_guests_it_does_not_run() -> None:
    """The seam the agent's libvirt part fills (Agent.running_guests): a guest journaled as running that
    libvirt does not run here is reported.  (Only Qbh records here: no lldpad table to read.)"""
    from hooks.journal import GuestJournal
    from hooks.reconcile import UNCHECKED, reconcile

    here, gone = uuid.UUID(int=1), uuid.UUID(int=2)
    qbh = {"instance": INST, "ifname": "eth0", "proto": "qbh"}
    journals = [
        GuestJournal(f"/x/{g}.json", g, "vm", records=[Record(1, "vdp", "m", "associate", dict(qbh), DONE)])
        for g in (here, gone)
    ]
    found = reconcile(journals, uplinks=[], timeout=1.0, running_guests={here})
    assert found.not_running == [gone]
    assert found.states() == {UNCHECKED: 2}
    assert reconcile(journals, uplinks=[], timeout=1.0, running_guests=None).not_running == []


def test_a_periodic_look_does_not_cut_short_a_backoff(tmp_path: Path) -> None:
    """The scan and the reconcile find a failing guest again and again; it keeps its backoff time, while a
    notice (hurry) brings it forward."""
    import time

    from tests.unit.test_agent import _agent

    agent = _agent(tmp_path)
    g = uuid.UUID(int=3)
    agent.want(g, "vm", "deassoc", delay=30.0)
    due = agent.jobs[g].due
    agent.want(g, "vm", "reconcile", hurry=False)
    assert agent.jobs[g].due == due and agent.jobs[g].reasons == {"deassoc", "reconcile"}
    agent.want(g, "vm", "deassoc")
    assert agent.jobs[g].due <= time.monotonic()
