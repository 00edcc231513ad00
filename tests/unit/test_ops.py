"""hooks/ops.py: the one table of libvirt operations, and what the runner and journal make of it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hooks import ops
from hooks.feature import BEGIN_OPS
from hooks.journal import Journal


def test_the_table_says_what_each_operation_means() -> None:
    assert {
        ("migrate", "begin"),
        ("restore", "begin"),
        ("prepare", "begin"),
        ("start", "begin"),
        ("started", "begin"),
    } == ops.BEGIN_OPS
    assert {("reconnect", "begin"), ("stopped", "end"), ("release", "end")} == ops.NEVER_FAIL
    assert ops.BEGIN_OPS | {("reconnect", "begin"), ("release", "end")} == ops.HANDLED
    assert BEGIN_OPS is ops.BEGIN_OPS, "feature authors import it from hooks.feature"
    # Never-fail and veto exclude each other: a row that could be both would let libvirt kill a guest.
    assert all(op.may_veto != op.never_fail for op in ops.OPS.values() if op.phase)
    assert {op.marker for op in ops.OPS.values() if op.phase == ops.BEGIN} == {
        ops.WRITE,
        ops.CONSUME,
        ops.DISCARD,
        ops.KEEP,
    }


@pytest.mark.parametrize("hook", [("frobnicate", "begin"), ("prepare", "end"), ("", "")])
def test_an_unknown_operation_has_nothing_to_do(hook: tuple[str, str]) -> None:
    op = ops.op_for(hook)
    assert (op.hook, op.phase, op.never_fail, op.may_veto) == (hook, "", False, False)


def _arrive(store: Journal, guest: uuid.UUID, rule: str, ttl: float = 10.0) -> bool:
    with store.open(guest, "g", timeout=5) as gj:
        return store.arrive(gj, rule, ttl)


def test_the_migration_marker_rule(tmp_path: Path) -> None:
    """migrate begin (WRITE) leaves the marker once it proceeds, prepare begin (CONSUME) takes it once,
    start/started (KEEP) see what prepare journaled, restore begin (DISCARD) throws a leftover away."""
    store = Journal(str(tmp_path))
    guest = uuid.uuid4()
    assert not _arrive(store, guest, ops.WRITE)
    store.proceeded(guest, ops.WRITE)
    assert _arrive(store, guest, ops.CONSUME)
    assert _arrive(store, guest, ops.KEEP), "start begin after an incoming prepare"
    assert not _arrive(store, guest, ops.CONSUME), "consumed: one start only"
    store.proceeded(guest, ops.WRITE)
    assert not _arrive(store, guest, ops.DISCARD)
    assert not _arrive(store, guest, ops.CONSUME), "restore removed the marker"
    store.proceeded(guest, ops.WRITE)
    assert not _arrive(store, guest, ops.CONSUME, ttl=-1.0), "too old"
    for rule in (ops.CONSUME, ops.DISCARD, ops.KEEP):
        store.proceeded(guest, rule)
        assert not (tmp_path / f"{guest}.incoming").exists(), f"{rule} writes no marker"
