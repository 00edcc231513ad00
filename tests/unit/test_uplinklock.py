"""vdp.qbg.uplinklock (real flock between real processes, on ``lo``, an interface every host has) and the
pure time plan of vdp.qbg.budget."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vdp.qbg import budget, uplinklock

ROOT = str(Path(__file__).resolve().parents[2])
# Holds lo's lock for the given seconds, recording a measured 0.25 s per request.
HOLDER = """
import sys, time
sys.path.insert(0, %r)
from vdp.qbg import uplinklock
with uplinklock.hold(["lo"], until=time.monotonic() + 5) as held:
    held.measured("lo", 0.25)
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VDP_HOOKS_STATE_DIR", str(tmp_path))
    return tmp_path


def _holder(seconds: float, state: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, VDP_HOOKS_STATE_DIR=str(state))
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER % ROOT, str(seconds)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_waiter_gets_the_lock_when_the_holder_lets_go(state_dir: Path) -> None:
    proc = _holder(0.5, state_dir)
    start = time.monotonic()
    with uplinklock.hold(["lo"], until=time.monotonic() + 10) as held:
        waited = time.monotonic() - start
        assert held.estimates == {"lo": 0.25}  # what the holder measured
    proc.wait()
    assert 0.3 < waited < 5


def test_waiter_gives_up_at_its_deadline_and_names_the_uplink(state_dir: Path) -> None:
    proc = _holder(3, state_dir)
    try:
        start = time.monotonic()
        with pytest.raises(uplinklock.UplinkBusy, match="uplink lo stayed busy"), uplinklock.hold(
            ["lo"], until=time.monotonic() + 0.3
        ):
            pass
        assert time.monotonic() - start < 2
    finally:
        proc.wait()
    # The waiting thread let go of what it got late: the lock is free again.
    with uplinklock.hold(["lo"], until=time.monotonic() + 0.5):
        pass


def test_no_lock_file_for_an_interface_this_host_lacks(state_dir: Path) -> None:
    with uplinklock.hold(["nosuch0", "../../etc", "lo"], until=time.monotonic() + 1) as held:
        assert set(held.estimates) == {"lo"}
    assert sorted(p.name for p in state_dir.iterdir()) == ["uplink-lo.lock"]
    assert uplinklock.estimate("nosuch0") == 0.0 and uplinklock.lock_path("nosuch0") is None


def test_estimate_is_what_the_last_holder_measured(state_dir: Path) -> None:
    assert uplinklock.estimate("lo") == 0.0
    with uplinklock.hold(["lo"], until=time.monotonic() + 1) as held:
        held.measured("lo", 3.0)
    assert uplinklock.estimate("lo") == 3.0


def test_an_old_estimate_is_forgotten(state_dir: Path) -> None:
    """A figure nobody refreshed for ESTIMATE_TTL no longer refuses guests unsent: the next call measures."""
    with uplinklock.hold(["lo"], until=time.monotonic() + 1) as held:
        held.measured("lo", 3.0)
    path = uplinklock.lock_path("lo")
    assert path is not None
    old = time.time() - uplinklock.ESTIMATE_TTL - 1
    os.utime(path, (old, old))
    assert uplinklock.estimate("lo") == 0.0


def _plan(*, left: float, reserve: float = 5.0, est: float = 3.0, rollback: bool = True) -> budget.Budget:
    return budget.Budget(
        setup_deadline=time.monotonic() + left,
        reserve=reserve,
        estimates={"up0": est},
        settings="now 15 s",
        rollback=rollback,
    )


def test_plan_lets_requests_go_only_when_they_and_their_rollback_fit() -> None:
    # 10 s of setup and a 5 s reserve, 3 s per answer: 2 requests (6 s) + their rollback (6 s) fit ...
    assert _plan(left=10).refuse("up0", 2, 0) is None
    # ... 3 do not (9 s of setup fit, but 9 + 9 > 15), nor 1 more after 3 done with 4 s left (3 + 12 > 9).
    reason = _plan(left=10).refuse("up0", 3, 0)
    assert reason is not None and "invocation_timeout (now 15 s)" in reason and "3 more request(s)" in reason
    assert _plan(left=4).refuse("up0", 1, 3) is not None
    # Unknown pace: go (the first answer will tell).
    assert _plan(left=1, est=0.0).refuse("up0", 50, 0) is None


def test_plan_for_a_teardown_sends_what_fits_one_at_a_time() -> None:
    plan = _plan(left=4, rollback=False)
    assert plan.refuse("up0", 10, 0) is None  # the next one fits; the rest is decided one by one
    # The first request of a teardown always goes (unanswered in time it stays pending); later ones must fit.
    assert _plan(left=2, rollback=False).refuse("up0", 1, 0) is None
    assert _plan(left=2, rollback=False).refuse("up0", 1, 1) is not None


def test_plan_learns_the_pace_from_this_call() -> None:
    plan = _plan(left=10, est=0.0)
    assert plan.refuse("up0", 3, 1) is None
    plan.answered("up0", 3.0)
    assert plan.refuse("up0", 3, 1) is not None
    assert plan.measured() == {"up0": 3.0}
