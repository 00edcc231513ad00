"""What lldpad's and the kernel's port-profile answers mean, as one line a sysadmin can act on.

Three kinds of answer exist:

* lldpad's VDP22 response in ``IFLA_PORT_RESPONSE`` (u16): the high byte holds error bits from the
  station state machine (``enum vdp22_cmderr``: bit 0 keep-alive timeout, bit 1 no acknowledgement,
  bit 2 transmit error; OR'ed in by ``qbg/vdp22.c`` before notifying the requester).  The low byte comes
  in two forms: lldpad's own codes (openlldp ``include/qbg_vdp22def.h``, ``enum vdp22_cmdresp``: 0..5,
  252..255), or -- what a switch's refusal gives, measured with lldpad 1.1 against the lab's switch
  peer -- the switch's VDP22 status byte without its acknowledgement bit: ``0x20 | code`` (keep: the
  switch refused and kept the previous state) or ``0x10 | code`` (hard error), ``code`` being 1..5 of
  the same enum (``qbg/vdp22sm.c``, ``get_error``).
* 802.1Qbh profile responses (``PORT_PROFILE_RESPONSE_*``, 0x100..0x105) from the kernel's driver.
* the errno in lldpad's ``NLMSG_ERROR`` answer to ``RTM_SETLINK``/``RTM_GETLINK`` (``qbg/vdp22.c``,
  ``qbg/vdp.c``, ``qbg/vdpnl.c``).
"""

from __future__ import annotations

import errno
import os

from hooks.plain import plain

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "ERR_ACK_TIMEOUT",
    "ERR_KEEPALIVE_TIMEOUT",
    "ERR_TRANSMIT",
    "HARD_BIT",
    "KEEP_BIT",
    "VDP22_DEASSOC",
    "VDP22_INVALID_FORMAT",
    "VDP22_KEEP",
    "VDP22_NOADDR",
    "VDP22_NONE",
    "VDP22_NO_RESOURCES",
    "VDP22_NO_VSIMGR",
    "VDP22_OTHER",
    "VDP22_SUCCESS",
    "VDP22_TIMEOUT",
    "Vdp22Response",
    "errno_message",
    "error_bit_names",
    "is_refusal_byte",
    "qbh_message",
    "split_vdp22",
    "stuck_message",
    "vdp22_message",
]

# enum vdp22_cmdresp (low byte of IFLA_PORT_RESPONSE)
VDP22_SUCCESS = 0
VDP22_INVALID_FORMAT = 1
VDP22_NO_RESOURCES = 2
VDP22_NO_VSIMGR = 3
VDP22_OTHER = 4
VDP22_NOADDR = 5
VDP22_DEASSOC = 252
VDP22_TIMEOUT = 253
VDP22_KEEP = 254
VDP22_NONE = 255

# Bits of the switch's status byte that lldpad passes on (include/qbg_vdp22.h)
KEEP_BIT = 0x20  # refused, the previous state is kept
HARD_BIT = 0x10  # hard error
CODE_MASK = 0x0F

# enum vdp22_cmderr, as bits of the high byte (1 << VDP22_KATO etc.)
ERR_KEEPALIVE_TIMEOUT = 0x01
ERR_ACK_TIMEOUT = 0x02
ERR_TRANSMIT = 0x04

_VDP22_TEXT = {
    VDP22_SUCCESS: "accepted by the switch",
    VDP22_INVALID_FORMAT: (
        "the switch rejected the request as malformed (invalid format) -- check the VSI type id, "
        "version and manager id against the switch's VSI database"
    ),
    VDP22_NO_RESOURCES: (
        "the switch has insufficient resources for this VSI -- free ports or VSIs on the switch, "
        "or start the guest on another host"
    ),
    VDP22_NO_VSIMGR: (
        "the switch could not contact its VSI manager -- check the VSI manager and the switch's link to it"
    ),
    VDP22_OTHER: "the switch refused the VSI for another reason -- see the switch's log for this VSI",
    VDP22_NOADDR: (
        "the switch rejected the VLAN, MAC or group id -- check that the VLAN is allowed for this VSI "
        "type on the switch port"
    ),
    VDP22_DEASSOC: "the VSI was de-associated (by the switch or by request)",
    VDP22_TIMEOUT: (
        "the switch did not answer in time (VDP timeout) -- check the uplink and EVB negotiation "
        "('lldptool -t -i IF -g ncb -V evb')"
    ),
    VDP22_KEEP: (
        "the switch refused the change and kept the previous state -- check the requested VSI type "
        "and VLAN against the switch"
    ),
    VDP22_NONE: "no response from the switch yet",
}

_ERROR_BITS = (
    (ERR_KEEPALIVE_TIMEOUT, "keep-alive timeout"),
    (ERR_ACK_TIMEOUT, "no acknowledgement from the switch"),
    (ERR_TRANSMIT, "transmit error on the uplink"),
)

_QBH_TEXT = {
    0x100: "port profile accepted",
    0x101: "port profile request in progress",
    0x102: (
        "the switch rejected the port profile as invalid -- check that the profile name exists on the "
        "switch (UCS Manager / VM-FEX)"
    ),
    0x103: ("the port is in the wrong state for this request (bad state) -- disassociate the port first, then retry"),
    0x104: (
        "the switch has insufficient resources for this port profile -- free VIFs on the adapter or use another host"
    ),
    0x105: "the adapter reported an error for the port profile -- check the adapter/driver log (dmesg)",
}

# lldpad's netlink errnos (positive values), per where they come from in lldpad.
_ERRNO_TEXT = {
    errno.EINVAL: (
        "lldpad rejected the VDP request as invalid (bad MAC/VLAN/VSI data, or an instance it does not "
        "know) -- check the port's MAC, VLAN and VSI type in the guest metadata"
    ),
    errno.ENXIO: (
        "the interface has no VDP in lldpad (not configured for EVB/VDP, VDP disabled, or link down) -- "
        "configure EVB in station role on it (lldptool -T -i IF -g ncb -V evb enableTx=yes) and check the "
        "link"
    ),
    errno.ENODEV: (
        "lldpad does not run VDP on this interface (not configured, or the VSI is being removed) -- "
        "configure EVB/VDP22 on the interface in lldpad.conf and restart lldpad, or retry"
    ),
    errno.EPROTONOSUPPORT: (
        "EVB is not negotiated with the switch on this interface yet -- check the switch port's EVB "
        "configuration and 'lldptool -t -n -i IF -g ncb -V evb'"
    ),
    errno.EOPNOTSUPP: (
        "the interface runs lldpad in bridge role, VDP requests need station role -- set evbmode = "
        '"station" for it in lldpad.conf and restart lldpad'
    ),
    errno.EBUSY: (
        "lldpad still holds an unanswered request from the switch for this VSI, the previous request "
        "(the switch is silent or slow) -- check the switch port; lldpad gives up after about 16 s"
    ),
    errno.ENOMEM: "lldpad is out of memory -- restart lldpad",
}


@plain(frozen=True)
class Vdp22Response:
    """A decoded VDP22 ``IFLA_PORT_RESPONSE``: status (low byte) and error bits (high byte)."""

    status: int
    error_bits: int

    def __iter__(self) -> Iterator[int]:
        return iter((self.status, self.error_bits))


def split_vdp22(response: int) -> Vdp22Response:
    """Split lldpad's u16 response into status (low byte) and error bits (high byte)."""
    return Vdp22Response(response & 0xFF, (response >> 8) & 0xFF)


def error_bit_names(error_bits: int) -> list[str]:
    """Names of the VDP22 error bits that are set (unknown bits as hex)."""
    names = [text for bit, text in _ERROR_BITS if error_bits & bit]
    unknown = error_bits & ~(ERR_KEEPALIVE_TIMEOUT | ERR_ACK_TIMEOUT | ERR_TRANSMIT)
    if unknown:
        names.append(f"unknown error bits {unknown:#x}")
    return names


def is_refusal_byte(status: int) -> bool:
    """Is ``status`` (a low byte) the switch's own status byte with the keep or hard-error bit?

    Such bytes never collide with lldpad's enum: its values are 0..5 and 252..255.
    """
    return status < 0x40 and bool(status & (KEEP_BIT | HARD_BIT))


def _status_text(status: int) -> str:
    if status in _VDP22_TEXT:
        return _VDP22_TEXT[status]
    if is_refusal_byte(status):
        code = status & CODE_MASK
        if status & KEEP_BIT:
            what = "the switch refused the change and kept the previous state (keep)"
        else:
            what = "the switch refused the VSI with a hard error"
        reason = _VDP22_TEXT.get(code) if 1 <= code <= 5 else None
        if reason is None:
            return (
                f"{what}, reason code {code} -- see the switch's log for this VSI; check the requested VSI "
                "type and VLAN against the switch"
            )
        # "the switch rejected ... -- do this": keep the cause and the advice, say how it was refused.
        return f"{what}: {reason}"
    return f"unknown VDP22 status {status} -- see lldpad's log ('lldpad -V7')"


def vdp22_message(response: int) -> str:
    """One line for a VDP22 response (status and error bits), either form of the low byte."""
    status, bits = split_vdp22(response)
    shown = f"{status:#04x}" if is_refusal_byte(status) else str(status)
    text = f"VDP status {shown}: {_status_text(status)}"
    names = error_bit_names(bits)
    if names:
        text += f" (errors: {', '.join(names)} -- check the uplink cable and the switch port)"
    return text


def stuck_message(what: str, *, since: str = "", ended: bool = False, uplink: str = "IF") -> str:
    """One line for a request lldpad refuses because an earlier request for the same VSI is still without
    the switch's answer (``what`` e.g. "ASSOCIATE on up0"; ``since`` e.g. " since 10:02:11 (prepare
    begin)", from the journal).  ``ended``: lldpad gave up waiting (after about 16 s; it then answers
    ENODEV for the VSI until it restarts); else it still waits (EBUSY, or "busy"/"invalid parameters"
    through its client interface).  Neither says whether the switch holds the VSI."""
    head = f"{what}: lldpad still holds an unanswered request from the switch for this VSI{since}"
    evb = f"'lldptool -t -n -i {uplink} -g ncb -V evb'"
    if ended:
        return (
            f"{head} and gave up waiting for it (ENODEV): it refuses every request for this VSI until it "
            f"restarts, and whether the switch holds the VSI is unknown -- check the switch port for this VSI "
            f"and EVB ({evb}), restart lldpad (systemctl restart lldpad), then retry"
        )
    return (
        f"{head} (the switch is silent or slow; lldpad waits about 16 s, then gives up) -- check the switch "
        f"port and EVB ({evb}); retry later, or restart lldpad (systemctl restart lldpad) to drop the request"
    )


def qbh_message(response: int) -> str:
    """One line for an 802.1Qbh ``PORT_PROFILE_RESPONSE_*`` value."""
    text = _QBH_TEXT.get(response, "unknown port profile response -- check the adapter/driver log (dmesg)")
    return f"port profile response {response:#x}: {text}"


def errno_message(err: int) -> str:
    """One line for lldpad's netlink errno (sign ignored: netlink carries it negative)."""
    code = abs(err)
    # EOPNOTSUPP and ENOTSUP share 95 on Linux; errorcode names it ENOTSUP, the kernel and lldpad say EOPNOTSUPP.
    name = "EOPNOTSUPP" if code == errno.EOPNOTSUPP else errno.errorcode.get(code, str(code))
    text = _ERRNO_TEXT.get(code, f"{os.strerror(code)} -- see lldpad's log ('lldpad -V7')")
    return f"lldpad answered {name}: {text}"
