"""What one hook invocation will do, decided from the declaration alone: pure (no I/O, no clock, no log).

Event + Config + Policy -> :class:`Plan`: the declaration veto (a feature the guest requires but this host
lacks, a broken port that is required), the usable ports (broken ones that are not required are left out,
each with the decision that let it go), and, of the features that want the guest, those that act on this
operation.  The hook (hooks/runner.py) and ``vdp-hooks replay FILE OP SUBOP --dry-run`` (hooks/cli.py) both
decide through this module, so the two cannot disagree on a veto; what only a real run can tell (a peer
that says no, a journal that cannot be read) is the transaction's.

:class:`Veto` is the one shape of the line libvirt shows when we refuse (every veto line is made by
``Veto.line``).
"""

from __future__ import annotations

from collections.abc import Sequence

from hooks.config import Config
from hooks.errors import HookError
from hooks.event import PORT_FEATURE, Event, PortSpec
from hooks.ops import BEGIN, RELEASE, VERIFY, Op, op_for
from hooks.plain import plain, replace
from hooks.policy import Decision, Policy

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from hooks.feature import Feature

__all__ = ["Plan", "Veto", "make_plan", "owner", "unusable_xml"]


@plain(frozen=True)
class Veto:
    """Why this invocation refuses: one line for libvirt's error message."""

    guest: str
    cause: str
    feature: str | None = None  # None: nothing feature-specific (an unusable config, XML or journal)
    port: str | None = None
    decided_by: str | None = None  # the policy level that made the failure a veto

    def line(self) -> str:
        port = f" port {self.port}:" if self.port else ""
        feature = f" feature {self.feature}:" if self.feature else ""
        required = f" (required by {self.decided_by})" if self.decided_by else ""
        text = f"libvirt-vdp-hooks: guest {self.guest}:{port}{feature} {self.cause}{required}"
        # Names and causes can carry text from the XML (&#10; in an attribute): libvirt shows one line.
        return " ".join(text.split())


@plain(frozen=True)
class Plan:
    """The decision on one invocation's declaration (see the module docstring)."""

    op: Op
    event: Event  # with the usable ports only
    veto: Veto | None = None
    #: Every declared port with the policy's decision for the feature that owns it.
    ports: tuple[tuple[PortSpec, Decision], ...] = ()

    @property
    def ignored(self) -> list[tuple[PortSpec, Decision]]:
        """Broken ports left out (their decision says why that is no veto)."""
        return [(p, d) for p, d in self.ports if p.error]

    def acting(self, features: Sequence[Feature]) -> list[Feature]:
        """Of the features that want this guest (config order), those that act on this operation: setup
        and verify run the ones that handle it, teardown runs all (each takes back its own records)."""
        if self.op.phase in (BEGIN, VERIFY):
            return [f for f in features if self.op.hook in f.handles]
        return list(features) if self.op.phase == RELEASE else []


def owner(port: PortSpec) -> str:
    """The feature that sets ``port`` up."""
    return PORT_FEATURE.get(port.kind, "vdp")


def _lacking(config: Config) -> str:
    return f"which is not enabled on this host ([hooks] features in {config.path or 'the built-in defaults'})"


def _declaration_veto(event: Event, config: Config, policy: Policy) -> Veto | None:
    """Rules about the declaration itself: features the guest needs but this host lacks, broken ports."""
    for name, required in event.feature_policy.items():
        if required and name not in config.features and policy.emergency is None:
            cause = f"the guest requires feature '{name}', {_lacking(config)}"
            return Veto(event.guest, cause, name, None, "guest metadata")
    for port in event.ports:
        feature = owner(port)
        if port.error is None and feature in config.features:
            continue
        cause = port.error or f"{port.where} needs feature '{feature}', {_lacking(config)}"
        decision = policy.decide(feature, port)
        if decision.required:
            return Veto(event.guest, cause, feature, port.key, decision.source)
    return None


def make_plan(event: Event, config: Config, policy: Policy) -> Plan:
    """The plan for ``event``; only operations that may veto get a declaration veto."""
    op = op_for(event.hook)
    ports = tuple((p, policy.decide(owner(p), p)) for p in event.ports)
    veto = _declaration_veto(event, config, policy) if op.may_veto else None
    usable = tuple(p for p in event.ports if not p.error)
    view = replace(event, ports=usable) if len(usable) != len(event.ports) else event
    return Plan(op, view, veto, ports)


def unusable_xml(op: Op, guest: str, error: HookError, wanting: Sequence[Feature]) -> Veto | None:
    """Unusable XML vetoes only an operation that may veto, and only for a guest that has something for an
    enabled feature (not, say, an openvswitch guest with a 5 MiB description that reached us through a
    near-miss namespace)."""
    return Veto(guest, error.one_line()) if op.may_veto and wanting else None
