"""The libvirt qemu-hook operations we act on, in one table: what each one means for this project.

libvirt runs the hook as ``qemu NAME OPERATION SUB-OPERATION EXTRA`` (docs/hooks.rst).  Per operation:

- ``phase``: ``begin`` (setup, and a required failure vetoes: libvirt aborts the start or the incoming
  migration before the guest runs), ``verify`` (``reconnect begin``: libvirtd restarted and re-attaches a
  running guest; features re-check and repair), ``release`` (``release end``: the guest is gone from this
  host; tear down), or ``""`` (nothing to do);
- ``never_fail``: libvirt kills (``reconnect begin``) or abandons (``stopped end``, ``release end``) a
  running guest when the hook fails, so these exit 0 whatever happens and only log;
- ``marker``: what the operation does with the incoming-migration marker and the journal's ``incoming``
  flag (the destination side of a live migration runs ``migrate begin``, then ``prepare begin``; a restore
  runs ``restore begin``, then ``prepare begin``), see :data:`WRITE` and the others below.

The entry ``etc-libvirt-hooks/qemu`` cannot import this module (its fast path runs before any of our code
is importable, on the standard library alone): it keeps its own copy of :data:`HANDLED` and
:data:`NEVER_FAIL`, and ``tests/unit/test_entry.py`` keeps the two in step.
"""

from __future__ import annotations

from hooks.plain import plain

__all__ = [
    "BEGIN",
    "BEGIN_OPS",
    "CONSUME",
    "DISCARD",
    "HANDLED",
    "KEEP",
    "NEVER_FAIL",
    "OPS",
    "RELEASE",
    "VERIFY",
    "WRITE",
    "Op",
    "op_for",
]

BEGIN, VERIFY, RELEASE = "begin", "verify", "release"

#: ``migrate begin`` (destination): not incoming *yet* (prepare learns it from the marker); the marker is
#: written once this operation proceeds.
WRITE = "write"
#: ``prepare begin``: incoming if ``migrate begin`` left a marker younger than ``marker_ttl``; consumed
#: either way (it is for one start only).
CONSUME = "consume"
#: ``restore begin``: never a migration; a marker left by a failed migration is removed unread so that it
#: cannot reach the ``prepare begin`` that follows.
DISCARD = "discard"
#: ``start begin``, ``started begin``: incoming as ``prepare begin`` journaled it.
KEEP = "keep"


@plain(frozen=True)
class Op:
    """One row of the table (see the module docstring)."""

    name: str
    subop: str
    phase: str = ""
    never_fail: bool = False
    marker: str = ""  # WRITE, CONSUME, DISCARD or KEEP for begin operations

    @property
    def hook(self) -> tuple[str, str]:
        return (self.name, self.subop)

    @property
    def may_veto(self) -> bool:
        """A failure here refuses the guest (exit 1 with one line on stderr); everywhere else it is logged."""
        return self.phase == BEGIN and not self.never_fail


OPS: dict[tuple[str, str], Op] = {
    op.hook: op
    for op in (
        Op("migrate", "begin", BEGIN, marker=WRITE),
        Op("restore", "begin", BEGIN, marker=DISCARD),
        Op("prepare", "begin", BEGIN, marker=CONSUME),
        Op("start", "begin", BEGIN, marker=KEEP),
        Op("started", "begin", BEGIN, marker=KEEP),
        Op("reconnect", "begin", VERIFY, never_fail=True),
        Op("stopped", "end", never_fail=True),
        Op("release", "end", RELEASE, never_fail=True),
    )
}

#: The operations that set up and may veto (feature authors use this for ``Feature.handles``).
BEGIN_OPS = frozenset(h for h, op in OPS.items() if op.phase == BEGIN)
#: The operations that must exit 0 whatever happens.
NEVER_FAIL = frozenset(h for h, op in OPS.items() if op.never_fail)
#: The operations the entry takes past its first test (the rest exit 0 at once).
HANDLED = frozenset(h for h, op in OPS.items() if op.phase)


def op_for(hook: tuple[str, str]) -> Op:
    """The row for ``hook``; an operation we do not know has nothing to do."""
    return OPS.get(hook) or Op(hook[0], hook[1])
