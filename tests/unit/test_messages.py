"""vdp.messages: every documented answer becomes a specific, actionable line."""

from __future__ import annotations

import errno

import pytest

from vdp import messages
from vdp.messages import (
    ERR_ACK_TIMEOUT,
    ERR_KEEPALIVE_TIMEOUT,
    ERR_TRANSMIT,
    errno_message,
    qbh_message,
    qbh_response_message,
    split_vdp22,
    vdp22_message,
)
from vdp.wire import clif, codes, netlink

# (status code, a word the line must contain) -- the meanings of openlldp's enum vdp22_cmdresp
VDP22 = [
    (0, "accepted"),
    (1, "invalid format"),
    (2, "insufficient resources"),
    (3, "VSI manager"),
    (4, "another reason"),
    (5, "VLAN, MAC or group"),
    (252, "de-associated"),
    (253, "timeout"),
    (254, "kept the previous state"),
    (255, "no response"),
]


def test_constants_follow_openlldp() -> None:
    assert [messages.VDP22_SUCCESS, messages.VDP22_INVALID_FORMAT, messages.VDP22_NO_RESOURCES,
            messages.VDP22_NO_VSIMGR, messages.VDP22_OTHER, messages.VDP22_NOADDR] == [0, 1, 2, 3, 4, 5]
    assert [messages.VDP22_DEASSOC, messages.VDP22_TIMEOUT, messages.VDP22_KEEP, messages.VDP22_NONE] == [
        252, 253, 254, 255]
    # enum vdp22_cmderr { VDP22_KATO = 0, VDP22_ACKTO, VDP22_TXERR }, used as 1 << value
    assert (ERR_KEEPALIVE_TIMEOUT, ERR_ACK_TIMEOUT, ERR_TRANSMIT) == (1, 2, 4)


@pytest.mark.parametrize(("code", "word"), VDP22)
def test_vdp22_status_lines(code: int, word: str) -> None:
    line = vdp22_message(code)
    assert word in line
    assert f"VDP status {code}:" in line
    assert "\n" not in line
    if code not in (0, 252, 255):
        assert " -- " in line, "a failure line says what to do"


def test_vdp22_lines_are_distinct() -> None:
    lines = {vdp22_message(code) for code, _ in VDP22}
    assert len(lines) == len(VDP22)


def test_error_bits_in_high_byte() -> None:
    assert tuple(split_vdp22(0x0204)) == (4, 2)
    assert tuple(split_vdp22(0x00FF)) == (255, 0)
    line = vdp22_message((ERR_KEEPALIVE_TIMEOUT | ERR_TRANSMIT) << 8 | 255)
    assert "keep-alive timeout" in line
    assert "transmit error" in line
    assert "no acknowledgement" not in line
    assert "no acknowledgement" in vdp22_message(ERR_ACK_TIMEOUT << 8)
    assert "unknown error bits 0x80" in vdp22_message(0x8000)


def test_unknown_vdp22_status() -> None:
    assert "unknown VDP22 status 77" in vdp22_message(77)


@pytest.mark.parametrize(
    ("code", "word"),
    [(0x100, "accepted"), (0x101, "in progress"), (0x102, "invalid"), (0x103, "bad state"),
     (0x104, "insufficient resources"), (0x105, "error")],
)
def test_qbh_lines(code: int, word: str) -> None:
    line = qbh_message(code)
    assert word in line
    assert f"{code:#x}" in line
    if code >= 0x102:
        assert " -- " in line


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (errno.EINVAL, ("EINVAL", "invalid")),
        (errno.ENXIO, ("ENXIO", "no VDP", "lldptool")),
        (errno.ENODEV, ("ENODEV", "does not run VDP")),
        (errno.EPROTONOSUPPORT, ("EPROTONOSUPPORT", "not negotiated")),
        (errno.EOPNOTSUPP, ("EOPNOTSUPP", "bridge role", "station")),
        (errno.EBUSY, ("EBUSY", "previous request")),
    ],
)
def test_errno_lines(err: int, words: tuple[str, ...]) -> None:
    for signed in (err, -err):  # netlink carries it negative
        line = errno_message(signed)
        for word in words:
            assert word in line
        assert " -- " in line


def test_unknown_errno_uses_strerror() -> None:
    assert "EPERM" in errno_message(-errno.EPERM)
    assert "Operation not permitted" in errno_message(-errno.EPERM)


# What lldpad 1.1 reports for a switch's refusal (measured against the lab's switch peer,
# tests/lab/test_switchpeer.py::test_refusal_reaches_the_station): the switch's status byte without the
# acknowledgement bit, i.e. 0x20 | code (keep) or 0x10 | code (hard error).
@pytest.mark.parametrize(("code", "word"), [c for c in VDP22 if 1 <= c[0] <= 5])
def test_switch_status_byte_forms(code: int, word: str) -> None:
    keep = vdp22_message(0x20 | code)
    hard = vdp22_message(0x10 | code)
    assert word in keep and word in hard
    assert keep.startswith(f"VDP status {0x20 | code:#04x}:") and "kept the previous state (keep)" in keep
    assert hard.startswith(f"VDP status {0x10 | code:#04x}:") and "hard error" in hard
    assert " -- " in keep and " -- " in hard
    assert "unknown" not in keep + hard
    assert messages.is_refusal_byte(0x20 | code) and messages.is_refusal_byte(0x10 | code)
    assert not messages.is_refusal_byte(code)


def test_switch_status_byte_with_error_bits_and_without_code() -> None:
    line = vdp22_message(ERR_ACK_TIMEOUT << 8 | 0x24)
    assert "(keep)" in line and "another reason" in line and "no acknowledgement" in line
    assert "reason code 0" in vdp22_message(0x10)
    assert "unknown VDP22 status 64" in vdp22_message(0x40)  # never sent by lldpad: not a refusal byte
    assert {messages.is_refusal_byte(s) for s in (0, 5, 252, 253, 254, 255)} == {False}


# -- 802.1Qbh responses (were vdp.qbh's response_message) --------------------------------------------------


@pytest.mark.parametrize(
    ("response", "word"),
    [(0x102, "invalid"), (0x103, "bad state"), (0x104, "insufficient resources"), (0x105, "adapter reported an error")],
)
def test_each_profile_response_has_one_line(response: int, word: str) -> None:
    text = qbh_response_message(response)
    assert word in text and f"{response:#x}" in text and "\n" not in text


def test_missing_response_is_named() -> None:
    assert "IFLA_PORT_RESPONSE missing" in qbh_response_message(None)


# -- the one table ---------------------------------------------------------------------------------------------


def test_every_text_is_one_line_keyed_by_a_known_kind() -> None:
    kinds = {messages.VDP22, messages.VDP22_ERROR_BIT, messages.LLDPAD_ERRNO, messages.CLIF_STATUS, messages.QBH,
             messages.QBH_ERRNO}
    assert {kind for kind, _ in messages._TEXT} == kinds
    for key, text in messages._TEXT.items():
        assert text and "\n" not in text and text == text.strip(), key


def test_clif_status_texts() -> None:
    # lldpad's command status words, as lldptool prints them (include/lldpad_status.h); 12 is unused.
    assert messages.clif_status_text(codes.CMD_DEVICE_NOT_FOUND) == "device not found or inactive"
    assert messages.clif_status_text(codes.CMD_VDP_BUSY) == "VSI association in progress"
    assert messages.clif_status_text(12) == "status 12"
    named = [v for k, v in vars(codes).items() if k.startswith("CMD_") and v != codes.CMD_SUCCESS]
    assert sorted(named) == [*range(1, 12), 13, 14, 15]
    assert all((messages.CLIF_STATUS, v) in messages._TEXT for v in named)


def test_qbh_errno_texts_name_the_pf() -> None:
    assert "eth1" in messages.qbh_errno_message(-errno.ENODEV, pf="eth1")
    assert "PREASSOCIATE_RR" in messages.qbh_errno_message(-errno.EOPNOTSUPP, preassociate=True)
    assert "Linux 5.5" in messages.qbh_errno_message(errno.EINVAL, port_self=True, port_self_mac=True)
    assert "Linux 5.5" not in messages.qbh_errno_message(errno.EINVAL, port_self=False, port_self_mac=True)


def test_netlink_and_clif_codecs_share_the_named_codes() -> None:
    assert netlink.PORT_PROFILE_RESPONSE_INPROGRESS == codes.PORT_PROFILE_RESPONSE_INPROGRESS == 0x101
    assert clif.Reply(codes.CMD_SUCCESS, "").ok
