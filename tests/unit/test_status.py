"""vdp.status: every documented answer becomes a specific, actionable line."""

from __future__ import annotations

import errno

import pytest

from vdp import status
from vdp.status import (
    ERR_ACK_TIMEOUT,
    ERR_KEEPALIVE_TIMEOUT,
    ERR_TRANSMIT,
    errno_message,
    qbh_message,
    split_vdp22,
    vdp22_message,
)

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
    assert [status.VDP22_SUCCESS, status.VDP22_INVALID_FORMAT, status.VDP22_NO_RESOURCES, status.VDP22_NO_VSIMGR,
            status.VDP22_OTHER, status.VDP22_NOADDR] == [0, 1, 2, 3, 4, 5]
    assert [status.VDP22_DEASSOC, status.VDP22_TIMEOUT, status.VDP22_KEEP, status.VDP22_NONE] == [
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
    assert split_vdp22(0x0204) == (4, 2)
    assert split_vdp22(0x00FF) == (255, 0)
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
