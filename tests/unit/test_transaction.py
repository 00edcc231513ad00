"""Setup with rollback and teardown, through the entry: reverse feature order, reverse record order, partial
states, optional failures, crashes, teardown failures kept as pending, and the invocation deadline.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.conftest import MAC_A, MAC_B, PLUGINS, HookEnv, domain_xml, hooks_md, port, wait_for

GID = "8f2e1a52-7c1d-4a57-9d0b-1b2c3d4e5f60"
TWO_PORTS = domain_xml(metadata=hooks_md(port(MAC_A), port(MAC_B)))
KINDS = "reserve, assoc"


def _torn(hookenv: HookEnv) -> list[tuple[str, str, str, str]]:
    return [(e["feature"], e["key"], e["kind"], e["state"]) for e in hookenv.events("teardown")]


def test_rollback_is_reverse_feature_then_reverse_record_order(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"kinds": KINDS}, rec2={"kinds": KINDS, "fail": MAC_B})
    result = hookenv.run("prepare", "begin", TWO_PORTS)
    assert result.returncode == 1
    assert result.err.strip() == (
        f"libvirt-vdp-hooks: guest guest1: port {MAC_B}: feature rec2: recorder rec2: assoc of {MAC_B} refused "
        "on purpose (required by host config)"
    )
    assert _torn(hookenv) == [
        ("rec2", MAC_B, "assoc", "intent"),  # the partial state: journaled, never confirmed
        ("rec2", MAC_A, "assoc", "done"),
        ("rec2", MAC_B, "reserve", "done"),
        ("rec2", MAC_A, "reserve", "done"),
        ("rec1", MAC_B, "assoc", "done"),
        ("rec1", MAC_A, "assoc", "done"),
        ("rec1", MAC_B, "reserve", "done"),
        ("rec1", MAC_A, "reserve", "done"),
    ]
    assert hookenv.journal(GID) is None, "a clean rollback leaves nothing journaled"


def test_failure_in_the_first_feature_stops_before_the_next(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"kinds": KINDS, "fail": MAC_A, "fail_kind": "reserve"}, rec2={"kinds": KINDS})
    result = hookenv.run("prepare", "begin", TWO_PORTS)
    assert result.returncode == 1 and f"port {MAC_A}: feature rec1" in result.err
    assert [e["feature"] for e in hookenv.events("setup")] == ["rec1"]
    assert _torn(hookenv) == [
        ("rec1", MAC_B, "assoc", "done"),
        ("rec1", MAC_B, "reserve", "done"),
        ("rec1", MAC_A, "reserve", "intent"),
    ]
    assert hookenv.journal(GID) is None


def test_plain_exception_in_a_feature_is_a_veto_with_a_clean_line(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"kinds": KINDS}, rec2={"kinds": KINDS, "crash": "yes"})
    result = hookenv.run("prepare", "begin", TWO_PORTS)
    assert result.returncode == 1
    line = result.err.strip()
    assert "feature rec2: internal error in setup: RuntimeError: recorder crashed on purpose" in line
    assert "guest guest1" in line
    assert _torn(hookenv)[:2] == [("rec2", MAC_B, "reserve", "intent"), ("rec2", MAC_A, "reserve", "intent")]
    assert [t[0] for t in _torn(hookenv)] == ["rec2"] * 2 + ["rec1"] * 4
    assert "Traceback" in hookenv.hook_log(), "the traceback goes to the log, not to libvirt"
    assert hookenv.journal(GID) is None


def test_optional_failure_warns_and_undoes_only_that_ports_partial_state(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"kinds": KINDS}, rec2={"kinds": KINDS, "fail": MAC_B})
    xml = domain_xml(metadata=hooks_md(port(MAC_A), port(MAC_B, required="no")))
    result = hookenv.run("prepare", "begin", xml)
    assert result.returncode == 0
    assert _torn(hookenv) == [("rec2", MAC_B, "assoc", "intent"), ("rec2", MAC_B, "reserve", "done")]
    held = sorted((r["feature"], r["key"], r["kind"], r["state"]) for r in hookenv.records(GID))
    assert held == sorted(
        [
            ("rec1", MAC_A, "reserve", "done"),
            ("rec1", MAC_A, "assoc", "done"),
            ("rec1", MAC_B, "reserve", "done"),
            ("rec1", MAC_B, "assoc", "done"),
            ("rec2", MAC_A, "reserve", "done"),
            ("rec2", MAC_A, "assoc", "done"),
        ]
    )
    assert f"port={MAC_B} outcome=warning" in hookenv.hook_log()


def test_rollback_undoes_only_this_invocation(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"ops": "prepare, start"})
    assert hookenv.run("prepare", "begin", TWO_PORTS).returncode == 0
    hookenv.write_config(rec1={"ops": "start", "fail": MAC_B}, rec2={"ops": "none"})
    result = hookenv.run("start", "begin", TWO_PORTS)
    assert result.returncode == 1
    assert [(e["op"], e["key"]) for e in hookenv.events("teardown")] == [("start begin", MAC_B), ("start begin", MAC_A)]
    kept = [(r["feature"], r["key"], r["op"]) for r in hookenv.records(GID)]
    assert sorted(kept) == sorted(
        [(f, k, "prepare begin") for f in ("rec1", "rec2") for k in (MAC_A, MAC_B)]
    ), "what prepare set up stays until release end"


def test_teardown_failure_stays_pending_and_release_retries_it(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"teardown_fail": "*"}, rec2={"fail": MAC_A})
    result = hookenv.run("prepare", "begin", TWO_PORTS)
    assert result.returncode == 1 and "feature rec2" in result.err
    left = {(r["feature"], r["key"]): r for r in hookenv.records(GID)}
    assert set(left) == {("rec1", MAC_A), ("rec1", MAC_B)}
    assert all(r["state"] == "pending" and "teardown of" in r["error"] for r in left.values())
    # release end while the peer still refuses: exit 0, still pending.
    assert hookenv.run("release", "end", TWO_PORTS).returncode == 0
    assert {(r["feature"], r["state"]) for r in hookenv.records(GID)} == {("rec1", "pending")}
    # the peer recovers: the next release end retries and the journal empties.
    hookenv.write_config()
    assert hookenv.run("release", "end", TWO_PORTS).returncode == 0
    assert hookenv.journal(GID) is None


def test_release_end_reverse_order_and_declared_ports(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"kinds": KINDS}, rec2={"kinds": KINDS})
    assert hookenv.run("prepare", "begin", TWO_PORTS).returncode == 0
    assert hookenv.run("release", "end", TWO_PORTS, extra="shutdown").returncode == 0
    assert [(f, k, kind) for f, k, kind, _ in _torn(hookenv)] == [
        (f, k, kind) for f in ("rec2", "rec1") for kind in ("assoc", "reserve") for k in (MAC_B, MAC_A)
    ]
    assert hookenv.journal(GID) is None
    # Nothing journaled (a wiped /run): what the XML declares is still torn down by features that say so.
    hookenv.reclog.unlink()
    hookenv.write_config(rec1={"declare": "yes"})
    assert hookenv.run("release", "end", TWO_PORTS).returncode == 0
    assert _torn(hookenv) == [("rec1", MAC_B, "declared", "intent"), ("rec1", MAC_A, "declared", "intent")]


def test_release_tears_down_features_no_longer_enabled(hookenv: HookEnv) -> None:
    assert hookenv.run("prepare", "begin", TWO_PORTS).returncode == 0
    hookenv.write_config(features="rec1")
    assert hookenv.run("release", "end", TWO_PORTS).returncode == 0
    assert {t[0] for t in _torn(hookenv)} == {"rec1", "rec2"}
    assert hookenv.journal(GID) is None


def test_reconnect_tears_nothing_down(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"ops": "prepare, reconnect", "fail": MAC_B, "fail_kind": "none"})
    assert hookenv.run("prepare", "begin", TWO_PORTS).returncode == 0
    hookenv.write_config(rec1={"ops": "reconnect", "fail": MAC_B})
    assert hookenv.run("reconnect", "begin", TWO_PORTS).returncode == 0
    assert _torn(hookenv) == []
    assert len(hookenv.records(GID)) >= 4


@pytest.mark.parametrize("stage", ["sleep_after", "sleep_before"])
def test_deadline_vetoes_in_time_and_leaves_the_rest_pending(hookenv: HookEnv, stage: str) -> None:
    timeouts = {"invocation_timeout": "3", "exchange_timeout": "1"}
    hookenv.write_config(hooks=timeouts, rec2={stage: "100", "teardown_sleep": "100"})
    result = hookenv.run("prepare", "begin", TWO_PORTS, timeout=30)
    assert result.returncode == 1
    assert "feature rec2" in result.err and "deadline" in result.err
    assert result.seconds < 3 + 2.0, f"the veto took {result.seconds:.1f} s for a 3 s invocation deadline"
    pending = {(r["feature"], r["key"], r["state"]) for r in hookenv.records(GID)}
    if stage == "sleep_before":
        # rec2 journaled nothing; rec1's rollback fits in the exchange_timeout kept in reserve.
        assert pending == set()
        assert [(f, k) for f, k, _, _ in _torn(hookenv)] == [("rec1", MAC_B), ("rec1", MAC_A)]
        return
    # rec2's teardown waits until the invocation deadline; rec1 then has no time left at all.
    assert pending == {(f, k, "pending") for f in ("rec1", "rec2") for k in (MAC_A, MAC_B)}
    errors = {r["feature"]: r["error"] for r in hookenv.records(GID)}
    assert "invocation deadline reached before teardown" in errors["rec1"]
    # The next release end retries all of it.
    hookenv.write_config()
    assert hookenv.run("release", "end", TWO_PORTS).returncode == 0
    assert hookenv.journal(GID) is None
    retried = [(e["feature"], e["key"]) for e in hookenv.events("teardown") if e["op"] == "release end"]
    assert sorted(retried) == sorted((f, k) for f, k, _ in pending)
    assert [f for f, _ in retried] == sorted((f for f, _ in retried), reverse=True), "rec2 before rec1"


def test_waiting_for_the_guest_lock_counts_against_the_invocation_deadline(
    hookenv: HookEnv, procs: list[subprocess.Popen[bytes]]
) -> None:
    """30 s per invocation means 30 s from libvirt's point of view, time spent queueing for the lock included."""
    hookenv.write_config(
        hooks={"invocation_timeout": "4", "exchange_timeout": "1"},
        rec1={"ops": "prepare", "sleep_after": "2.5"},
        rec2={"ops": "start", "sleep_after": "100"},
    )
    first = hookenv.popen("prepare", "begin", TWO_PORTS)
    procs.append(first)
    wait_for(lambda: hookenv.events("intent"), what="the first process holding the guest lock")
    second = hookenv.run("start", "begin", TWO_PORTS, timeout=30)
    assert second.returncode == 1 and "deadline" in second.err
    assert second.seconds < 4 + 1.0, f"start begin took {second.seconds:.1f} s with a 4 s invocation deadline"
    out, err = first.communicate(timeout=30)
    assert (first.returncode, out, err) == (0, b"", b"")


@pytest.mark.parametrize(
    "broken",
    [
        b"<domain><name>guest1</name><uuid>" + GID.encode() + b"</uuid><devices>",  # truncated
        b"<domain><uuid>" + GID.encode() + b"</uuid><metadata><x:y/></metadata></domain>",  # unbound prefix
    ],
)
def test_release_with_unparsable_xml_still_tears_down_the_journal(hookenv: HookEnv, broken: bytes) -> None:
    assert hookenv.run("prepare", "begin", TWO_PORTS).returncode == 0
    assert hookenv.run("release", "end", broken).returncode == 0
    torn = [(f, k) for f, k, _, _ in _torn(hookenv)]
    assert torn == [("rec2", MAC_B), ("rec2", MAC_A), ("rec1", MAC_B), ("rec1", MAC_A)]
    assert hookenv.journal(GID) is None


def test_port_that_failed_optionally_is_left_alone_by_later_features(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"fail": MAC_A})
    xml = domain_xml(metadata=hooks_md(port(MAC_A, required="no"), port(MAC_B)))
    assert hookenv.run("prepare", "begin", xml).returncode == 0
    assert [(e["feature"], e["keys"]) for e in hookenv.events("setup")] == [("rec1", [MAC_A, MAC_B]), ("rec2", [MAC_B])]
    assert {(r["feature"], r["key"]) for r in hookenv.records(GID)} == {("rec1", MAC_B), ("rec2", MAC_B)}


def test_never_fail_operations_also_end_within_the_deadline(hookenv: HookEnv) -> None:
    assert hookenv.run("prepare", "begin", TWO_PORTS).returncode == 0
    hookenv.write_config(
        hooks={"invocation_timeout": "2", "exchange_timeout": "1"},
        rec1={"ops": "reconnect", "sleep_before": "100", "teardown_sleep": "100"},
    )
    result = hookenv.run("reconnect", "begin", TWO_PORTS, timeout=30)
    assert result.returncode == 0 and result.seconds < 2 + 2.0
    result = hookenv.run("release", "end", TWO_PORTS, timeout=30)
    assert result.returncode == 0 and result.seconds < 2 + 2.0
    # rec2 went first and is gone; rec1's teardown ran out of time and stays for the next attempt.
    assert {(r["feature"], r["state"]) for r in hookenv.records(GID)} == {("rec1", "pending")}
    hookenv.write_config()
    assert hookenv.run("release", "end", TWO_PORTS).returncode == 0
    assert hookenv.journal(GID) is None


@pytest.mark.parametrize("xml", [TWO_PORTS, b"<domain><uuid>" + GID.encode() + b"</uuid><broken>"])
def test_release_when_a_journaled_plugin_was_uninstalled(hookenv: HookEnv, tmp_path: Path, xml: bytes) -> None:
    """rec2 is gone (plugin removed, disabled): rec1 still tears down its part; rec2's records wait for it."""
    assert hookenv.run("prepare", "begin", TWO_PORTS).returncode == 0
    plugins = tmp_path / "plugins"
    shutil.copytree(PLUGINS, plugins, ignore=shutil.ignore_patterns("__pycache__"))
    entry_points = plugins / "vdph_testfeature-0.dist-info" / "entry_points.txt"
    entry_points.write_text(entry_points.read_text().replace("rec2 = vdph_testfeature:Recorder2\n", ""))
    hookenv.config.write_text(
        f"[hooks]\nfeatures = rec1\nsyslog = no\nlog_file = {hookenv.hooklog}\n[vdp]\nrequired = no\n"
        f"[rec1]\nlog = {hookenv.reclog}\n"
    )
    assert hookenv.run("release", "end", xml, env=hookenv.env(PYTHONPATH=str(plugins))).returncode == 0
    assert [t[0] for t in _torn(hookenv)] == ["rec1", "rec1"]
    assert {r["feature"] for r in hookenv.records(GID)} == {"rec2"}
    assert "feature 'rec2' is neither built in" in hookenv.hook_log()
    # Reinstalled: the next release end finishes the job.
    assert hookenv.run("release", "end", xml).returncode == 0
    assert hookenv.journal(GID) is None


def test_a_context_is_not_changed_after_it_is_built(tmp_path: Path) -> None:
    """The framework hands the rollback a new Context (the full deadline) instead of changing the one the
    feature's setup was given."""
    import uuid

    from hooks.config import Config
    from hooks.deadline import Deadline
    from hooks.event import Event
    from hooks.feature import Context
    from hooks.journal import Journal
    from hooks.plain import replace

    event = Event("g", uuid.uuid4(), "prepare", "begin", "-")
    with Journal(str(tmp_path)).open(event.uuid, "g", timeout=5) as gj:
        ctx = Context("rec1", event, Config(), {}, Deadline(5), gj)
        with pytest.raises(AttributeError, match="frozen"):
            ctx.deadline = Deadline(10)  # type: ignore[misc]
        later = replace(ctx, deadline=Deadline(10))
        later.intend("k", "assoc", {})
        assert ctx.created == later.created != [], "one list of what this invocation journaled"
