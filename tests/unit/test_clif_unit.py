"""vdp.qbg.clif, the connection's side without lldpad: how lldpad's command status becomes the product's error,
and the library prototypes.  (The message codec: tests/unit/test_wire_clif.py.)"""

from __future__ import annotations

import pytest

from hooks.errors import DeadlineExceeded, FeatureError, PeerRefused, PeerUnavailable
from vdp.qbg import clif


@pytest.mark.parametrize(
    ("status", "cls", "words"),
    [
        (2, PeerUnavailable, "device not found"),
        (3, PeerUnavailable, "agent instance"),
        (9, PeerUnavailable, "bridge role"),
        (13, PeerUnavailable, "negotiation"),
        (5, PeerRefused, "invalid parameters"),
        (15, PeerRefused, "retry"),
        (1, FeatureError, "failed"),
    ],
)
def test_status_errors(status: int, cls: type, words: str) -> None:
    err = clif._status_error(status, "VSI assoc", "up0")
    assert type(err) is cls
    assert words in str(err) and "up0" in str(err)
    assert "\n" not in err.one_line()


def test_error_classes_are_builtin_compatible() -> None:
    assert issubclass(PeerUnavailable, ConnectionError)
    assert issubclass(DeadlineExceeded, TimeoutError)


def test_only_the_clif_functions_called_are_declared() -> None:
    """vdp.qbg.clif declares exactly the liblldp_clif functions it calls (a prototype nobody calls is one
    nobody checks); clif_request/clif_getpid/clif_vsi* stay undeclared (see its docstring)."""
    import inspect
    import re

    declared = {name for name, _, _ in clif._PROTOTYPES}
    called = set(re.findall(r'_call\("(clif_\w+)"', inspect.getsource(clif)))
    assert declared == called == {"clif_open", "clif_close", "clif_get_fd"}
