"""hooks/plan.py, pure: Event + Config + Policy -> Plan, and the one veto-line format.

That the hook and ``replay --dry-run`` decide alike through it is tested end to end in
tests/unit/test_cli.py::test_replay_dry_run_and_the_hook_agree_on_every_veto.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from hooks.config import Config
from hooks.event import parse_event
from hooks.feature import BEGIN_OPS, Feature, Outcome
from hooks.journal import Record
from hooks.plan import Plan, Veto, make_plan
from hooks.policy import Decision, Policy
from tests.unit.conftest import MAC_A, MAC_B, domain_xml, hooks_md, port


class _Stub(Feature):
    name = "stub"
    handles = frozenset({("prepare", "begin"), ("reconnect", "begin")})

    def describe(self) -> str:
        return "stub"

    def setup(self, event: object, ctx: object) -> list[Outcome]:
        return []

    def teardown(self, records: Sequence[Record], ctx: object) -> list[Outcome]:
        return []


def _plan(op: str, subop: str, metadata: str, config: Config | None = None) -> Plan:
    config = config or Config(features=("vdp",))
    event = parse_event(["g", op, subop, "-"], domain_xml(guest_uuid=uuid.uuid4(), metadata=metadata))
    return make_plan(event, config, Policy(config, event))


def test_a_broken_port_not_required_is_left_out_with_its_decision() -> None:
    plan = _plan("prepare", "begin", hooks_md(port(MAC_A, vlan="5000", required="no"), port(MAC_B)))
    assert plan.veto is None
    assert [p.key for p in plan.event.ports] == [MAC_B]
    assert [(p.key, d) for p, d in plan.ignored] == [(MAC_A, Decision(False, f"port {MAC_A}"))]
    assert [(p.key, d.required) for p, d in plan.ports] == [(MAC_A, False), (MAC_B, True)]


@pytest.mark.parametrize(("op", "subop"), sorted(BEGIN_OPS))
def test_a_required_broken_port_vetoes_every_begin_operation(op: str, subop: str) -> None:
    plan = _plan(op, subop, hooks_md(port(MAC_A, vlan="5000")))
    assert plan.veto is not None and (plan.veto.port, plan.veto.feature) == (MAC_A, "vdp")
    assert plan.veto.decided_by == "host config"


@pytest.mark.parametrize(("op", "subop"), [("reconnect", "begin"), ("release", "end"), ("stopped", "end")])
def test_operations_that_must_not_fail_get_no_veto(op: str, subop: str) -> None:
    plan = _plan(op, subop, hooks_md(port(MAC_A, vlan="5000"), features={"nosuch": "yes"}))
    assert plan.veto is None and plan.event.ports == ()


def test_a_feature_the_guest_requires_but_the_host_lacks() -> None:
    plan = _plan("prepare", "begin", hooks_md(port(MAC_A), features={"nosuch": "yes"}))
    assert plan.veto == Veto(
        "guest1",
        "the guest requires feature 'nosuch', which is not enabled on this host ([hooks] features in the built-in "
        "defaults)",
        "nosuch",
        None,
        "guest metadata",
    )


def test_acting_features_per_phase() -> None:
    stub = _Stub(Config(), {})
    assert _plan("prepare", "begin", "").acting([stub]) == [stub]
    assert _plan("started", "begin", "").acting([stub]) == [], "handles says prepare and reconnect only"
    assert _plan("reconnect", "begin", "").acting([stub]) == [stub]
    assert _plan("release", "end", "").acting([stub]) == [stub], "teardown is every feature's"
    assert _plan("stopped", "end", "").acting([stub]) == []


def test_one_veto_line_format() -> None:
    assert Veto("g", "bad\nthing", "vdp", MAC_A, "port x").line() == (
        f"libvirt-vdp-hooks: guest g: port {MAC_A}: feature vdp: bad thing (required by port x)"
    )
    assert Veto("g", "cannot read the config").line() == "libvirt-vdp-hooks: guest g: cannot read the config"
