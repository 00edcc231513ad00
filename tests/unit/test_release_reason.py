"""``release end``'s last argument (libvirt >= 10.5: the shutoff reason; before: ``-``) and the transport a
journaled Qbg VSI is torn down over, including journals written before the transport was recorded."""

from __future__ import annotations

import pytest

from hooks.transaction import RELEASE_REASONS, release_reason
from vdp.ports import VIA_CLIF, VIA_NETLINK
from vdp.ports import carried as _carried
from vdp.ports import transport as _transport


@pytest.mark.parametrize("reason", sorted(RELEASE_REASONS))
def test_every_libvirt_reason_is_known(reason: str) -> None:
    assert release_reason(reason) == reason


@pytest.mark.parametrize(("extra", "want"), [("-", "-"), ("", "-"), ("  from   snapshot ", "from snapshot"),
                                             ("MIGRATED", "migrated"), ("teleported", "unknown"),
                                             ("migrated\nforged", "unknown")])
def test_other_arguments(extra: str, want: str) -> None:
    assert release_reason(extra) == want


@pytest.mark.parametrize(
    ("data", "want"),
    [
        ({"proto": "qbg", "via": "clif"}, VIA_CLIF),
        ({"proto": "qbg", "via": "netlink", "hint": "to"}, VIA_NETLINK),  # recorded beats inferred
        ({"proto": "qbg", "hint": "to"}, VIA_CLIF),  # older journal: only clif requests learnt a hint
        ({"proto": "qbg"}, VIA_NETLINK),  # older journal, netlink request (or an intent never confirmed)
        ({"proto": "qbg", "via": "carrier pigeon"}, VIA_NETLINK),
    ],
)
def test_transport_of_a_record(data: dict[str, str], want: str) -> None:
    assert _transport(data) == want


def test_association_after_a_reservation_keeps_its_transport() -> None:
    """started begin's ASSOCIATE of a VSI reserved through the client interface goes the same way."""
    assert _carried({"proto": "qbg", "vlan": 222, "hint": "to"}) == {"vlan": 222, "via": VIA_CLIF}
    assert _carried({"proto": "qbh", "pf_ifname": "eth0", "vf": 3}) == {"pf_ifname": "eth0", "vf": 3}


def test_stuck_vsi_line_names_the_cause_once() -> None:
    """The line for a request refused because lldpad still waits for the switch: request and uplink
    once in the text (the hint's command names the uplink again, to be copied), since when, what to do."""
    from vdp.messages import stuck_message

    busy = stuck_message("ASSOCIATE on up0", since=" since 2026-12-01 10:00:00 (prepare begin)", uplink="up0")
    assert busy.startswith("ASSOCIATE on up0: lldpad still holds an unanswered request from the switch for this "
                           "VSI since 2026-12-01 10:00:00 (prepare begin) (the switch is silent or slow")
    assert "retry in a moment" not in busy and "metadata" not in busy
    ended = stuck_message("DISASSOCIATE on up1", ended=True, uplink="up1")
    assert "gave up waiting for it (ENODEV)" in ended and "whether the switch holds the VSI is unknown" in ended
    assert "restart lldpad" in ended and "\n" not in busy + ended
