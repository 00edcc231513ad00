"""The numbers peers answer with, named once: the codecs decode them, ``vdp.messages`` words them.

* lldpad's VDP22 response in ``IFLA_PORT_RESPONSE`` (u16): the high byte holds error bits from the
  station state machine (``enum vdp22_cmderr``: bit 0 keep-alive timeout, bit 1 no acknowledgement,
  bit 2 transmit error; OR'ed in by ``qbg/vdp22.c`` before notifying the requester).  The low byte comes
  in two forms: lldpad's own codes (openlldp ``include/qbg_vdp22def.h``, ``enum vdp22_cmdresp``: 0..5,
  252..255), or -- what a switch's refusal gives, measured with lldpad 1.1 against the lab's switch
  peer -- the switch's VDP22 status byte without its acknowledgement bit: ``0x20 | code`` (keep: the
  switch refused and kept the previous state) or ``0x10 | code`` (hard error), ``code`` being 1..5 of
  the same enum (``qbg/vdp22sm.c``, ``get_error``).  The same u16 is the ``hints`` value of a VSI in
  lldpad's client-interface events and listings.
* lldpad's client-interface command status (``include/lldpad_status.h``, ``enum vdp22_cmd_status``).
* 802.1Qbh profile responses (``PORT_PROFILE_RESPONSE_*`` in ``include/uapi/linux/if_link.h``) from the
  kernel's driver.

(The third kind of answer, lldpad's and the kernel's netlink errnos, is named by the ``errno`` module.)
"""

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

# lldpad command status (include/lldpad_status.h, enum vdp22_cmd_status); 12 is not used
CMD_SUCCESS = 0
CMD_FAILED = 1
CMD_DEVICE_NOT_FOUND = 2
CMD_AGENT_NOT_FOUND = 3
CMD_INVALID = 4
CMD_BAD_PARAMS = 5
CMD_PEER_NOT_PRESENT = 6
CMD_CTRL_VERS_NOT_COMPATIBLE = 7
CMD_NOT_CAPABLE = 8
CMD_NOT_APPLICABLE = 9
CMD_NO_ACCESS = 10
CMD_AGENT_NOT_SUPPORTED = 11
CMD_VDP_PROT_NO_SUPPORT = 13
CMD_VDP_NOMEM = 14
CMD_VDP_BUSY = 15

# enum { PORT_PROFILE_RESPONSE_* } (802.1Qbh, kernel/enic)
PORT_PROFILE_RESPONSE_SUCCESS = 0x100
PORT_PROFILE_RESPONSE_INPROGRESS = 0x101
PORT_PROFILE_RESPONSE_INVALID = 0x102
PORT_PROFILE_RESPONSE_BADSTATE = 0x103
PORT_PROFILE_RESPONSE_INSUFFICIENT_RESOURCES = 0x104
PORT_PROFILE_RESPONSE_ERROR = 0x105
