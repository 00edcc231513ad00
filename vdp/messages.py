"""What lldpad's and the kernel's answers mean, as one line a sysadmin can act on: every text in one table.

The answers (the numbers are named in ``vdp.wire.codes``, which says what each kind is):

* lldpad's VDP22 response (``IFLA_PORT_RESPONSE`` over netlink, ``hints`` in client-interface events):
  status byte and error bits;
* the errno in lldpad's ``NLMSG_ERROR`` answer to ``RTM_SETLINK``/``RTM_GETLINK`` (``qbg/vdp22.c``,
  ``qbg/vdp.c``, ``qbg/vdpnl.c``);
* lldpad's client-interface command status (``include/lldpad_status.h``);
* 802.1Qbh profile responses (``PORT_PROFILE_RESPONSE_*``, 0x100..0x105) from the kernel's driver, and
  the kernel's errno refusing a port-profile request (enic: ``enic_pp.c``, rtnetlink).

:data:`_TEXT` holds every text, keyed by (kind, named code); the functions below compose the lines.
Stdlib only: the hook imports this on its hot path.
"""

from __future__ import annotations

import errno
import os

from hooks.plain import plain
from vdp.wire.codes import (
    CMD_AGENT_NOT_FOUND,
    CMD_AGENT_NOT_SUPPORTED,
    CMD_BAD_PARAMS,
    CMD_CTRL_VERS_NOT_COMPATIBLE,
    CMD_DEVICE_NOT_FOUND,
    CMD_FAILED,
    CMD_INVALID,
    CMD_NO_ACCESS,
    CMD_NOT_APPLICABLE,
    CMD_NOT_CAPABLE,
    CMD_PEER_NOT_PRESENT,
    CMD_VDP_BUSY,
    CMD_VDP_NOMEM,
    CMD_VDP_PROT_NO_SUPPORT,
    CODE_MASK,
    ERR_ACK_TIMEOUT,
    ERR_KEEPALIVE_TIMEOUT,
    ERR_TRANSMIT,
    HARD_BIT,
    KEEP_BIT,
    PORT_PROFILE_RESPONSE_BADSTATE,
    PORT_PROFILE_RESPONSE_ERROR,
    PORT_PROFILE_RESPONSE_INPROGRESS,
    PORT_PROFILE_RESPONSE_INSUFFICIENT_RESOURCES,
    PORT_PROFILE_RESPONSE_INVALID,
    PORT_PROFILE_RESPONSE_SUCCESS,
    VDP22_DEASSOC,
    VDP22_INVALID_FORMAT,
    VDP22_KEEP,
    VDP22_NO_RESOURCES,
    VDP22_NO_VSIMGR,
    VDP22_NOADDR,
    VDP22_NONE,
    VDP22_OTHER,
    VDP22_SUCCESS,
    VDP22_TIMEOUT,
)

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
    "clif_status_text",
    "errno_message",
    "error_bit_names",
    "is_refusal_byte",
    "qbh_errno_message",
    "qbh_message",
    "qbh_response_message",
    "split_vdp22",
    "stuck_message",
    "vdp22_message",
]

# The kinds of answer: the first half of every key of _TEXT.
VDP22 = "vdp22"  # lldpad's VDP22 status byte (either form of the low byte)
VDP22_ERROR_BIT = "vdp22-error-bit"  # a bit of the response's high byte
LLDPAD_ERRNO = "lldpad-errno"  # lldpad's netlink errno
CLIF_STATUS = "clif-status"  # lldpad's client-interface command status
QBH = "qbh"  # a PORT_PROFILE_RESPONSE_*
QBH_ERRNO = "qbh-errno"  # the kernel's errno for a port-profile request ({pf} filled in)

_TEXT: dict[tuple[str, int], str] = {
    # -- lldpad's VDP22 status byte (low byte of the response) --
    (VDP22, VDP22_SUCCESS): "accepted by the switch",
    (VDP22, VDP22_INVALID_FORMAT): (
        "the switch rejected the request as malformed (invalid format) -- check the VSI type id, "
        "version and manager id against the switch's VSI database"
    ),
    (VDP22, VDP22_NO_RESOURCES): (
        "the switch has insufficient resources for this VSI -- free ports or VSIs on the switch, "
        "or start the guest on another host"
    ),
    (VDP22, VDP22_NO_VSIMGR): (
        "the switch could not contact its VSI manager -- check the VSI manager and the switch's link to it"
    ),
    (VDP22, VDP22_OTHER): "the switch refused the VSI for another reason -- see the switch's log for this VSI",
    (VDP22, VDP22_NOADDR): (
        "the switch rejected the VLAN, MAC or group id -- check that the VLAN is allowed for this VSI "
        "type on the switch port"
    ),
    (VDP22, VDP22_DEASSOC): "the VSI was de-associated (by the switch or by request)",
    (VDP22, VDP22_TIMEOUT): (
        "the switch did not answer in time (VDP timeout) -- check the uplink and EVB negotiation "
        "('lldptool -t -i IF -g ncb -V evb')"
    ),
    (VDP22, VDP22_KEEP): (
        "the switch refused the change and kept the previous state -- check the requested VSI type "
        "and VLAN against the switch"
    ),
    (VDP22, VDP22_NONE): "no response from the switch yet",
    # -- VDP22 error bits (high byte of the response) --
    (VDP22_ERROR_BIT, ERR_KEEPALIVE_TIMEOUT): "keep-alive timeout",
    (VDP22_ERROR_BIT, ERR_ACK_TIMEOUT): "no acknowledgement from the switch",
    (VDP22_ERROR_BIT, ERR_TRANSMIT): "transmit error on the uplink",
    # -- lldpad's netlink errnos (positive values), per where they come from in lldpad --
    (LLDPAD_ERRNO, errno.EINVAL): (
        "lldpad rejected the VDP request as invalid (bad MAC/VLAN/VSI data, or an instance it does not "
        "know) -- check the port's MAC, VLAN and VSI type in the guest metadata"
    ),
    (LLDPAD_ERRNO, errno.ENXIO): (
        "the interface has no VDP in lldpad (not configured for EVB/VDP, VDP disabled, or link down) -- "
        "configure EVB in station role on it (lldptool -T -i IF -g ncb -V evb enableTx=yes) and check the "
        "link"
    ),
    (LLDPAD_ERRNO, errno.ENODEV): (
        "lldpad does not run VDP on this interface (not configured, or the VSI is being removed) -- "
        "configure EVB/VDP22 on the interface in lldpad.conf and restart lldpad, or retry"
    ),
    (LLDPAD_ERRNO, errno.EPROTONOSUPPORT): (
        "EVB is not negotiated with the switch on this interface yet -- check the switch port's EVB "
        "configuration and 'lldptool -t -n -i IF -g ncb -V evb'"
    ),
    (LLDPAD_ERRNO, errno.EOPNOTSUPP): (
        "the interface runs lldpad in bridge role, VDP requests need station role -- set evbmode = "
        '"station" for it in lldpad.conf and restart lldpad'
    ),
    (LLDPAD_ERRNO, errno.EBUSY): (
        "lldpad still holds an unanswered request from the switch for this VSI, the previous request "
        "(the switch is silent or slow) -- check the switch port; lldpad gives up after about 16 s"
    ),
    (LLDPAD_ERRNO, errno.ENOMEM): "lldpad is out of memory -- restart lldpad",
    # -- lldpad's client-interface command status (completes "lldpad refused X on IF: ...") --
    (CLIF_STATUS, CMD_FAILED): "failed",
    (CLIF_STATUS, CMD_DEVICE_NOT_FOUND): "device not found or inactive",
    (CLIF_STATUS, CMD_AGENT_NOT_FOUND): "agent instance for device not found",
    (CLIF_STATUS, CMD_INVALID): "invalid command",
    (CLIF_STATUS, CMD_BAD_PARAMS): "invalid parameters",
    (CLIF_STATUS, CMD_PEER_NOT_PRESENT): "peer feature not present",
    (CLIF_STATUS, CMD_CTRL_VERS_NOT_COMPATIBLE): "version not compatible",
    (CLIF_STATUS, CMD_NOT_CAPABLE): "device not capable",
    (CLIF_STATUS, CMD_NOT_APPLICABLE): "command not applicable",
    (CLIF_STATUS, CMD_NO_ACCESS): "access denied",
    (CLIF_STATUS, CMD_AGENT_NOT_SUPPORTED): "TLV does not support agent type",
    (CLIF_STATUS, CMD_VDP_PROT_NO_SUPPORT): "VDP protocol not supported on interface",
    (CLIF_STATUS, CMD_VDP_NOMEM): "not enough memory",
    (CLIF_STATUS, CMD_VDP_BUSY): "VSI association in progress",
    # -- 802.1Qbh PORT_PROFILE_RESPONSE_* from the kernel's driver --
    (QBH, PORT_PROFILE_RESPONSE_SUCCESS): "port profile accepted",
    (QBH, PORT_PROFILE_RESPONSE_INPROGRESS): "port profile request in progress",
    (QBH, PORT_PROFILE_RESPONSE_INVALID): (
        "the switch rejected the port profile as invalid -- check that the profile name exists on the "
        "switch (UCS Manager / VM-FEX)"
    ),
    (QBH, PORT_PROFILE_RESPONSE_BADSTATE): (
        "the port is in the wrong state for this request (bad state) -- disassociate the port first, then retry"
    ),
    (QBH, PORT_PROFILE_RESPONSE_INSUFFICIENT_RESOURCES): (
        "the switch has insufficient resources for this port profile -- free VIFs on the adapter or use another host"
    ),
    (QBH, PORT_PROFILE_RESPONSE_ERROR): (
        "the adapter reported an error for the port profile -- check the adapter/driver log (dmesg)"
    ),
    # -- the kernel's errnos for an 802.1Qbh request ({pf}: the PF interface) --
    (QBH_ERRNO, errno.EINVAL): (
        "the driver rejected the request as invalid (empty or missing port profile name, VF number out of "
        "range, or no MAC address for the VF) -- check profileid in the guest metadata and that the VF "
        "exists (cat /sys/class/net/{pf}/device/sriov_numvfs)"
    ),
    (QBH_ERRNO, errno.ENODEV): "the device is gone (ENODEV) -- check that {pf} exists and its driver is loaded",
    (QBH_ERRNO, errno.ENOMEM): (
        "the adapter is out of resources (ENOMEM) -- free vNICs/VFs on the adapter or use another host"
    ),
    (QBH_ERRNO, errno.EPERM): "permission denied (EPERM) -- port profiles need CAP_NET_ADMIN (the hook runs as root)",
    (QBH_ERRNO, errno.EBUSY): "the adapter is busy with another command (EBUSY) -- retry in a moment",
    (QBH_ERRNO, errno.ETIMEDOUT): (
        "the adapter firmware did not answer (ETIMEDOUT) -- check the adapter (dmesg) and retry"
    ),
    (QBH_ERRNO, errno.ENETDOWN): "the adapter's uplink is down (ENETDOWN) -- check the fabric interconnect link",
    (QBH_ERRNO, errno.EIO): "the adapter firmware reported an I/O error (EIO) -- check dmesg for enic errors",
    (QBH_ERRNO, errno.EFAULT): "the adapter firmware rejected the command (EFAULT) -- check dmesg for enic errors",
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
    known = (ERR_KEEPALIVE_TIMEOUT, ERR_ACK_TIMEOUT, ERR_TRANSMIT)
    names = [_TEXT[VDP22_ERROR_BIT, bit] for bit in known if error_bits & bit]
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
    if (VDP22, status) in _TEXT:
        return _TEXT[VDP22, status]
    if is_refusal_byte(status):
        code = status & CODE_MASK
        if status & KEEP_BIT:
            what = "the switch refused the change and kept the previous state (keep)"
        else:
            what = "the switch refused the VSI with a hard error"
        reason = _TEXT.get((VDP22, code)) if 1 <= code <= 5 else None
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
    text = _TEXT.get((QBH, response), "unknown port profile response -- check the adapter/driver log (dmesg)")
    return f"port profile response {response:#x}: {text}"


def errno_message(err: int) -> str:
    """One line for lldpad's netlink errno (sign ignored: netlink carries it negative)."""
    code = abs(err)
    # EOPNOTSUPP and ENOTSUP share 95 on Linux; errorcode names it ENOTSUP, the kernel and lldpad say EOPNOTSUPP.
    name = "EOPNOTSUPP" if code == errno.EOPNOTSUPP else errno.errorcode.get(code, str(code))
    text = _TEXT.get((LLDPAD_ERRNO, code), f"{os.strerror(code)} -- see lldpad's log ('lldpad -V7')")
    return f"lldpad answered {name}: {text}"


def qbh_errno_message(
    err: int, *, pf: str = "the device", preassociate: bool = False, port_self: bool = False,
    port_self_mac: bool = False,
) -> str:
    """One line for the kernel's refusal (``NLMSG_ERROR``) of a port-profile request; sign ignored.

    ``pf``: the interface the request went to; ``preassociate``: it was a plain PREASSOCIATE;
    ``port_self``: it was for the device itself (``IFLA_PORT_SELF``), with the MAC when ``port_self_mac``."""
    code = abs(err)
    if code == errno.EOPNOTSUPP:
        if preassociate:
            return (
                "the driver does not support plain PREASSOCIATE (EOPNOTSUPP; enic never does) -- "
                "use PREASSOCIATE_RR for the reservation"
            )
        return (
            f"{pf} cannot do 802.1Qbh port profiles (the kernel answered EOPNOTSUPP) -- a Cisco VIC (enic) "
            "or another adapter whose driver supports port profiles (ndo_set_vf_port) is needed; on a VIC, "
            "the device itself needs a dynamic vNIC (VM-FEX) and a VF needs SR-IOV enabled"
        )
    if code == errno.EINVAL and port_self_mac and port_self:
        return (
            "the kernel rejected the MAC for the device itself (IFLA_VF_MAC with vf -1 is refused since "
            "Linux 5.5, EINVAL) -- leave port_self_mac off so the device's own MAC is used"
        )
    text = _TEXT.get((QBH_ERRNO, code))
    name = errno.errorcode.get(code, str(code))
    if text is None:
        return f"the kernel refused the request: {os.strerror(code)} ({name}) -- check dmesg for the driver's log"
    return text.format(pf=pf)


def qbh_response_message(response: int | None) -> str:
    """One line for an ``IFLA_PORT_RESPONSE`` (None: the driver reported the port without a response)."""
    if response is None:
        return (
            "the driver reported the port without a response (IFLA_PORT_RESPONSE missing) -- check the "
            "driver's log (dmesg)"
        )
    return qbh_message(response)


def clif_status_text(status: int) -> str:
    """What a non-zero lldpad client-interface command status says (``lldpad refused X on IF: <this>``)."""
    return _TEXT.get((CLIF_STATUS, status), f"status {status}")
