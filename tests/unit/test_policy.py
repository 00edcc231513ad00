"""Who decides whether a failure vetoes: emergency override > port > guest > host config.

The whole matrix against :class:`hooks.policy.Policy`, then the same rules through the real entry with the
test recorders failing a port on purpose.
"""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from types import MappingProxyType

import pytest

from hooks.config import Config
from hooks.event import Event, PortSpec
from hooks.policy import Decision, Emergency, Policy, clear_emergency, read_emergency, set_emergency
from tests.unit.conftest import MAC_A, MAC_B, HookEnv, domain_xml, hooks_md, port

TRI = (None, True, False)


def _policy(host: bool, guest: bool | None, emergency: bool, feature_host: bool | None = None) -> Policy:
    sections = {"rec1": feature_host} if feature_host is not None else {}
    config = Config(required=host, feature_required_keys=MappingProxyType(sections))
    event = Event(
        "g", uuid.uuid4(), "prepare", "begin", "-", feature_policy={} if guest is None else {"rec1": guest}
    )
    found = Emergency(time.time() + 60, "evacuation") if emergency else None
    return Policy(config, event, found)


@pytest.mark.parametrize(
    ("host", "guest", "port_required", "emergency"), list(itertools.product((True, False), TRI, TRI, (False, True)))
)
def test_precedence_matrix(host: bool, guest: bool | None, port_required: bool | None, emergency: bool) -> None:
    policy = _policy(host, guest, emergency)
    spec = PortSpec(mac=MAC_A, where="<vdp:port>", kind="qbg", required=port_required)
    if emergency:
        expected, source = False, "emergency override"
    elif port_required is not None:
        expected, source = port_required, f"port {MAC_A}"
    elif guest is not None:
        expected, source = guest, "guest metadata"
    else:
        expected, source = host, "host config"
    assert policy.decide("rec1", spec) == Decision(expected, source)


@pytest.mark.parametrize(("hooks_default", "feature_host"), list(itertools.product((True, False), (True, False))))
def test_feature_section_overrides_the_hooks_default(hooks_default: bool, feature_host: bool) -> None:
    policy = _policy(hooks_default, None, False, feature_host=feature_host)
    assert policy.decide("rec1") == Decision(feature_host, "host config")
    assert policy.decide("rec2") == Decision(hooks_default, "host config")  # no section: the [hooks] default


def test_a_failure_of_the_feature_as_a_whole_vetoes_if_any_of_its_ports_is_required() -> None:
    policy = _policy(False, None, False)
    optional = PortSpec(mac=MAC_A, where="<vdp:port>", kind="qbg", required=False)
    needed = PortSpec(mac=MAC_B, where="<vdp:port>", kind="qbg", required=True)
    assert policy.decide_all("rec1", [optional, needed]) == Decision(True, f"port {MAC_B}")
    assert policy.decide_all("rec1", [optional]) == Decision(False, f"port {MAC_A}")
    assert policy.decide_all("rec1", []) == Decision(False, "host config")
    assert _policy(False, True, False).decide_all("rec1", []) == Decision(True, "guest metadata")
    assert _policy(True, None, True).decide_all("rec1", [needed]) == Decision(False, "emergency override")


def test_emergency_file(tmp_path: Path) -> None:
    sdir = str(tmp_path / "state")
    assert read_emergency(sdir) is None
    found = set_emergency(sdir, 60, "rack 4 down")
    current = read_emergency(sdir)
    assert current is not None and current.reason == "rack 4 down" and abs(current.until - found.until) < 1e-6
    assert clear_emergency(sdir) is True and read_emergency(sdir) is None
    assert clear_emergency(sdir) is False
    set_emergency(sdir, 0.05, "short")
    time.sleep(0.1)
    assert read_emergency(sdir) is None, "an expired override counts for nothing"


# ------------------------------------------------------------------------------------------ through the entry
def _run(hookenv: HookEnv, md: str) -> tuple[int, str]:
    result = hookenv.run("prepare", "begin", domain_xml(metadata=md))
    return result.returncode, result.err


@pytest.mark.parametrize(
    ("host", "guest", "port_required", "code", "decided_by"),
    [
        ("yes", None, None, 1, "host config"),
        ("no", None, None, 0, "host config"),
        ("no", "yes", None, 1, "guest metadata"),
        ("yes", "no", None, 0, "guest metadata"),
        ("yes", "yes", "no", 0, f"port {MAC_A}"),
        ("no", "yes", "no", 0, f"port {MAC_A}"),
    ],
)
def test_precedence_through_the_entry(
    hookenv: HookEnv, host: str, guest: str | None, port_required: str | None, code: int, decided_by: str
) -> None:
    hookenv.write_config(rec1={"fail": MAC_A, "required": host})
    features = {"rec1": guest} if guest else None
    returncode, err = _run(hookenv, hooks_md(port(MAC_A, required=port_required), features=features))
    assert returncode == code
    if code:
        assert f"(required by {decided_by})" in err
    else:
        assert f"not required ({decided_by}), proceeding without it" in hookenv.hook_log()


def test_hooks_required_default_applies_to_every_feature(hookenv: HookEnv) -> None:
    hookenv.write_config(hooks={"required": "no"}, rec2={"fail": MAC_A})
    assert _run(hookenv, hooks_md(port(MAC_A)))[0] == 0
    hookenv.write_config(hooks={"required": "no"}, rec2={"fail": MAC_A, "required": "yes"})
    assert _run(hookenv, hooks_md(port(MAC_A)))[0] == 1


def test_port_required_yes_beats_guest_no(hookenv: HookEnv) -> None:
    """The port's word wins over the guest's; here the port's own feature (vdp) is missing on this host."""
    code, err = _run(hookenv, hooks_md(port(MAC_A, required="yes"), features={"vdp": "no", "rec1": "no"}))
    assert code == 1
    assert f"port {MAC_A}: feature vdp" in err and "needs feature 'vdp'" in err and f"(required by port {MAC_A})" in err


def test_emergency_beats_everything(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"fail": MAC_A, "required": "yes"})
    md = hooks_md(port(MAC_A, required="yes"), port(MAC_B), features={"rec1": "yes", "rec3": "yes"})
    code, err = _run(hookenv, md)
    assert code == 1 and "feature 'rec3'" in err
    set_emergency(str(hookenv.state), 60, "evacuating rack 4")
    assert _run(hookenv, md) == (0, "")
    log = hookenv.hook_log()
    assert "emergency override active (evacuating rack 4)" in log
    assert "not required (emergency override)" in log
    # rec1's failed port was undone at once and left alone by rec2; the rest of the guest was set up.
    held = {(r["feature"], r["key"]) for r in hookenv.records("8f2e1a52-7c1d-4a57-9d0b-1b2c3d4e5f60")}
    assert held == {("rec1", MAC_B), ("rec2", MAC_B)}
    assert ("rec1", MAC_A, "assoc") in hookenv.teardowns()
    clear_emergency(str(hookenv.state))
    assert _run(hookenv, md)[0] == 1


def test_expired_emergency_counts_for_nothing(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"fail": MAC_A})
    set_emergency(str(hookenv.state), 0.2, "short")
    time.sleep(0.3)
    assert _run(hookenv, hooks_md(port(MAC_A)))[0] == 1


@pytest.mark.parametrize("feature", ["rec2", "vdp", "links", "no-such-feature"])
def test_guest_requiring_a_feature_disabled_here_is_vetoed(hookenv: HookEnv, feature: str) -> None:
    hookenv.write_config(features="rec1")
    code, err = _run(hookenv, hooks_md(port(MAC_A), features={feature: "yes"}))
    assert code == 1
    assert f"the guest requires feature '{feature}', which is not enabled on this host" in err
    assert str(hookenv.config) in err, "the message says where to enable it"
    assert hookenv.events() == []
    # Not required by the guest: fine.
    code, _ = _run(hookenv, hooks_md(port(MAC_A), features={feature: "no"}))
    assert code == 0


def test_guest_requiring_an_enabled_feature_is_fine(hookenv: HookEnv) -> None:
    assert _run(hookenv, hooks_md(port(MAC_A), features={"rec1": "yes", "rec2": "yes"}))[0] == 0


def test_emergency_lets_a_guest_with_a_broken_required_port_in(hookenv: HookEnv) -> None:
    md = hooks_md(port("52:54:00:aa:00:99", required="yes"), port(MAC_A))
    assert _run(hookenv, md)[0] == 1
    set_emergency(str(hookenv.state), 60, "evacuation")
    assert _run(hookenv, md) == (0, "")
    assert "no <interface> with this MAC; port ignored (not required: emergency override)" in hookenv.hook_log()
    assert [e["keys"] for e in hookenv.events("setup")] == [[MAC_A], [MAC_A]]
