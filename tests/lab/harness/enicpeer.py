"""A netlink peer that plays the kernel and the enic driver for 802.1Qbh port profiles.

No enic hardware exists here, so tests point ``vdp.qbh.client.QbhClient(dest_pid=peer.port_id)`` at this peer: a
real NETLINK_ROUTE socket bound to its own port id, answering ``RTM_SETLINK`` with ``NLMSG_ERROR`` and
``RTM_GETLINK`` with ``RTM_NEWLINK``, the way the kernel does for a device driven by enic.  It follows
(facts read, no code copied):

* ``net/core/rtnetlink.c`` ``do_setlink``: ``IFLA_VFINFO_LIST`` first (each entry must be ``IFLA_VF_INFO``;
  ``IFLA_VF_MAC``/``IFLA_VF_VLAN`` with vf >= INT_MAX -> -EINVAL since Linux 5.5), then ``IFLA_VF_PORTS``
  (-EOPNOTSUPP without ``ndo_set_vf_port``; each entry must be a non-empty ``IFLA_VF_PORT`` -> else
  -EINVAL; without ``IFLA_PORT_VF`` -> -EOPNOTSUPP), then ``IFLA_PORT_SELF``; and ``rtnl_port_fill``:
  ports only with ``RTEXT_FILTER_VF``, ``IFLA_PORT_SELF`` first, then ``IFLA_VF_PORTS`` when the device
  has VFs, a port left out when the driver answers an error (enic: -ENODATA before any request), nests
  without ``NLA_F_NESTED``;
* ``drivers/net/ethernet/cisco/enic/enic_main.c`` (``enic_set_vf_port``, ``enic_get_vf_port``,
  ``enic_set_vf_mac``) and ``enic_pp.c``: the VF number check (out of range -> -EINVAL, SR-IOV off ->
  -EOPNOTSUPP, the device itself only on a dynamic vNIC -> else -EOPNOTSUPP), no REQUEST ->
  -EOPNOTSUPP, plain PREASSOCIATE -> -EOPNOTSUPP, (pre)association needs a non-empty profile name and,
  for a VF, a MAC -> else -EINVAL; the status read back is REQUEST (u16), RESPONSE (u16), PROFILE (40
  bytes), INSTANCE_UUID and HOST_UUID as far as they were set.

The adapter firmware behind the driver is scripted per test with :class:`Firmware`: how many status polls
answer INPROGRESS before the final response, which response, a failing device command (the SETLINK's
errno), a port reported without response, or silence.  Wire parsing and building here are written
independently of ``vdp.wire.netlink`` so that a codec bug on the client side cannot hide behind the same bug here.

Use in a thread (``with EnicPeer(...) as peer``) inside a network namespace the test made (see
:func:`enter_netns`), or as a process for hook-level tests::

    ip netns exec NS python3 -m tests.lab.harness.enicpeer --control ctl.json --ready port.txt --log rx.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import errno
import json
import os
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BADSTATE",
    "ERROR",
    "INPROGRESS",
    "INSUFFICIENT_RESOURCES",
    "INVALID",
    "SUCCESS",
    "EnicDevice",
    "EnicPeer",
    "Firmware",
    "Received",
    "enter_netns",
]

# include/uapi/linux/netlink.h, rtnetlink.h, if_link.h
_NLMSG_ERROR = 2
_RTM_NEWLINK = 16
_RTM_GETLINK = 18
_RTM_SETLINK = 19
_NLM_F_ACK = 0x4
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
_IFLA_IFNAME = 3
_IFLA_VFINFO_LIST = 22
_IFLA_VF_PORTS = 24
_IFLA_PORT_SELF = 25
_IFLA_EXT_MASK = 29
_RTEXT_FILTER_VF = 1
_IFLA_VF_INFO = 1
_IFLA_VF_MAC = 1
_IFLA_VF_VLAN = 2
_IFLA_VF_PORT = 1
_PORT_VF, _PORT_PROFILE, _PORT_VSI_TYPE, _PORT_INSTANCE, _PORT_HOST, _PORT_REQUEST, _PORT_RESPONSE = range(1, 8)
_PORT_PROFILE_MAX = 40
_PORT_SELF_VF = 0xFFFFFFFF
_INT_MAX = 0x7FFFFFFF
_ARPHRD_ETHER = 1
_IFF_UP, _IFF_BROADCAST, _IFF_MULTICAST = 0x1, 0x2, 0x1000

PREASSOCIATE, PREASSOCIATE_RR, ASSOCIATE, DISASSOCIATE = 0, 1, 2, 3
SUCCESS, INPROGRESS, INVALID, BADSTATE, INSUFFICIENT_RESOURCES, ERROR = range(0x100, 0x106)

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BBHiII")
_ZERO_MAC = b"\0" * 6


# --- scripting -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Firmware:
    """How the adapter answers requests for one port (or by default).

    ``polls_in_progress``: status reads answered INPROGRESS before ``final_response``.
    ``setlink_errno``: a failing device command; the SETLINK is answered with it (negative errno).
    ``no_response``: the port's status comes without ``IFLA_PORT_RESPONSE``.
    ``silent``: requests for the port get no answer at all (a hung driver); status reads still answer.
    """

    polls_in_progress: int = 0
    final_response: int = SUCCESS
    setlink_errno: int = 0
    no_response: bool = False
    silent: bool = False


@dataclass
class EnicDevice:
    """A netdev the peer pretends is driven by enic.

    ``dynamic``: a VM-FEX dynamic vNIC (port profiles on the device itself, ``IFLA_PORT_SELF``).
    ``num_vfs``: SR-IOV VFs (0: SR-IOV off, VF requests -> -EOPNOTSUPP).  ``vf_macs``: the MAC each VF
    holds on the adapter (what ``vnic_dev_get_mac_addr`` returns); unset VFs have none.
    """

    ifindex: int
    ifname: str = "enic0"
    dynamic: bool = True
    num_vfs: int = 0
    mac: str = "00:25:b5:00:00:01"
    vf_macs: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One message the peer got, decoded by the peer itself (for the tests' assertions)."""

    type: int
    seq: int
    ifindex: int
    ext_mask: int | None = None
    vf_macs: tuple[tuple[int, str], ...] = ()
    port_self: dict[str, Any] | None = None
    vf_ports: tuple[dict[str, Any], ...] = ()
    vf_ports_present: bool = False
    answered: int | None = None  # the errno sent back (0 = ack), None = no answer

    @property
    def requests(self) -> list[tuple[int | None, int | None]]:
        """(vf, request) of every port in the message (vf None = the device itself)."""
        out: list[tuple[int | None, int | None]] = []
        if self.port_self is not None:
            out.append((None, self.port_self.get("request")))
        out.extend((p.get("vf"), p.get("request")) for p in self.vf_ports)
        return out


@dataclass
class _PortState:
    """``struct enic_port_profile`` as far as it matters here."""

    applied: bool = False
    request: int = 0
    name: bytes | None = None
    instance: bytes | None = None
    host: bytes | None = None
    mac: bytes = _ZERO_MAC
    vf_mac: bytes = _ZERO_MAC  # the device itself: MAC from IFLA_VF_MAC(vf -1), consumed by the next request
    polls: int = 0
    firmware: Firmware = field(default_factory=Firmware)


# --- wire helpers (independent of vdp.wire.netlink) -------------------------------------------------------------


def _attrs(data: bytes) -> list[tuple[int, bytes]]:
    """(type without flags, payload) of each attribute; a malformed tail ends the list."""
    return [(atype, payload) for atype, _, payload in _raw_attrs(data)]


def _raw_attrs(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type without flags, declared length, payload) of each attribute (rtnetlink checks the length)."""
    out = []
    pos = 0
    while pos + 4 <= len(data):
        length, atype = struct.unpack_from("=HH", data, pos)
        if length < 4 or pos + length > len(data):
            break
        out.append((atype & _NLA_TYPE_MASK, length, data[pos + 4 : pos + length]))
        pos += (length + 3) & ~3
    return out


def _attr(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, atype) + payload + b"\0" * (-length % 4)


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw[:6])


def _mac_raw(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _port_dict(attrs: Mapping[int, bytes]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if _PORT_VF in attrs and len(attrs[_PORT_VF]) >= 4:
        d["vf"] = struct.unpack_from("=I", attrs[_PORT_VF])[0]
    if _PORT_PROFILE in attrs:
        d["profile"] = attrs[_PORT_PROFILE].split(b"\0", 1)[0].decode(errors="replace")
    if _PORT_INSTANCE in attrs and len(attrs[_PORT_INSTANCE]) >= 16:
        d["instance"] = str(uuid.UUID(bytes=attrs[_PORT_INSTANCE][:16]))
    if _PORT_HOST in attrs and len(attrs[_PORT_HOST]) >= 16:
        d["host_uuid"] = str(uuid.UUID(bytes=attrs[_PORT_HOST][:16]))
    if attrs.get(_PORT_REQUEST):
        d["request"] = attrs[_PORT_REQUEST][0]
    if _PORT_VSI_TYPE in attrs:
        d["vsi_type"] = attrs[_PORT_VSI_TYPE].hex()
    return d


class _Refused(Exception):
    """rtnetlink's ``goto errout``: the SETLINK is answered with this errno."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.err = err


# --- the peer ----------------------------------------------------------------------------------------------


class EnicPeer:
    """The kernel + enic, over a real NETLINK_ROUTE socket, in a thread; use as a context manager.

    ``devices``: the interfaces the peer answers for (others: -ENODEV).  ``firmware``: per-port scripts
    keyed ``(ifindex, vf, request)``, ``(ifindex, vf, None)`` or ``(None, None, request)`` (vf None = the
    device itself); ``default`` otherwise.  ``silent_getlink`` leaves status reads unanswered.
    ``kernel_5_5``: rtnetlink refuses IFLA_VF_MAC with vf >= INT_MAX (Linux >= 5.5; False for older).
    """

    def __init__(
        self,
        devices: Sequence[EnicDevice],
        *,
        firmware: Mapping[tuple[int | None, int | None, int | None], Firmware] | None = None,
        default: Firmware | None = None,
        silent_getlink: bool = False,
        kernel_5_5: bool = True,
    ) -> None:
        self.devices = {d.ifindex: d for d in devices}
        self.firmware = dict(firmware or {})
        self.default = default or Firmware()
        self.silent_getlink = silent_getlink
        self.kernel_5_5 = kernel_5_5
        self.received: list[Received] = []
        self._ports: dict[tuple[int, int], _PortState] = {}
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self.port_id: int = self._sock.getsockname()[0]
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None

    # -- control --------------------------------------------------------------------------------------------

    def script(self, ifindex: int | None, vf: int | None, request: int | None, firmware: Firmware) -> None:
        """Set the firmware behaviour for requests from now on (see the class docstring for the key)."""
        with self._lock:
            self.firmware[(ifindex, vf, request)] = firmware

    def state(self, ifindex: int, vf: int | None) -> dict[str, Any]:
        """What the driver holds for a port: applied, request, profile, instance, host_uuid, mac."""
        with self._lock:
            st = self._ports.get((ifindex, _PORT_SELF_VF if vf is None else vf), _PortState())
            return {
                "applied": st.applied,
                "request": st.request if st.applied else None,
                "profile": st.name.split(b"\0", 1)[0].decode() if st.name is not None else None,
                "instance": str(uuid.UUID(bytes=st.instance)) if st.instance else None,
                "host_uuid": str(uuid.UUID(bytes=st.host)) if st.host else None,
                "mac": _mac_text(st.mac) if st.mac != _ZERO_MAC else None,
            }

    def setlinks(self) -> list[Received]:
        """The port-profile SETLINKs received so far (not the capability probes)."""
        with self._lock:
            return [r for r in self.received if r.type == _RTM_SETLINK and r.requests]

    def start(self) -> EnicPeer:
        """Answer in a thread (created here, so it lives in the caller's current network namespace)."""
        self._thread = threading.Thread(target=self.serve, name=f"enicpeer-{self.port_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the socket."""
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(5)
            self._thread = None
        self._sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def __enter__(self) -> EnicPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve(self, poll: float | None = None) -> None:
        """Answer messages until :meth:`stop` (``poll``: also return after that many idle seconds)."""
        while True:
            ready, _, _ = select.select([self._sock, self._stop_r], [], [], poll)
            if self._stop_r in ready or not ready:
                return
            data, addr = self._sock.recvfrom(65536)
            pos = 0
            while pos + _HDR.size <= len(data):
                length = _HDR.unpack_from(data, pos)[0]
                if length < _HDR.size or pos + length > len(data):
                    break
                message = data[pos : pos + length]
                try:
                    self._handle(message, addr[0])
                except (struct.error, ValueError, KeyError, IndexError):
                    # A malformed message: the kernel answers those with -EINVAL; the peer must not die.
                    self._send_error(addr[0], message, -errno.EINVAL)
                pos += (length + 3) & ~3

    # -- the kernel's part ------------------------------------------------------------------------------------

    def _fw(self, ifindex: int, vf: int, request: int) -> Firmware:
        key_vf = None if vf == _PORT_SELF_VF else vf
        for key in ((ifindex, key_vf, request), (ifindex, key_vf, None), (None, None, request)):
            if key in self.firmware:
                return self.firmware[key]
        return self.default

    def _handle(self, msg: bytes, sender: int) -> None:
        length, mtype, flags, seq, _pid = _HDR.unpack_from(msg)
        if length < _HDR.size + _IFINFO.size or mtype not in (_RTM_SETLINK, _RTM_GETLINK):
            self._send_error(sender, msg, -errno.EOPNOTSUPP)
            return
        ifindex = _IFINFO.unpack_from(msg, _HDR.size)[3]
        top = _raw_attrs(msg[_HDR.size + _IFINFO.size :])
        with self._lock:
            if mtype == _RTM_GETLINK:
                self._getlink(msg, sender, seq, flags, ifindex, top)
            else:
                self._setlink(msg, sender, seq, ifindex, top)

    def _setlink(self, msg: bytes, sender: int, seq: int, ifindex: int, top: list[tuple[int, int, bytes]]) -> None:
        vf_macs: list[tuple[int, str]] = []
        port_self: dict[str, Any] | None = None
        vf_ports: list[dict[str, Any]] = []
        vf_ports_present = False
        for atype, _len, payload in top:
            if atype == _IFLA_VFINFO_LIST:
                for _t, p in _attrs(payload):
                    inner = dict(_attrs(p))
                    if _IFLA_VF_MAC in inner and len(inner[_IFLA_VF_MAC]) >= 10:
                        vf, mac = struct.unpack_from("=I6s", inner[_IFLA_VF_MAC])
                        vf_macs.append((vf, _mac_text(mac)))
            elif atype == _IFLA_VF_PORTS:
                vf_ports_present = True
                vf_ports.extend(_port_dict(dict(_attrs(p))) for _t, p in _attrs(payload))
            elif atype == _IFLA_PORT_SELF:
                port_self = _port_dict(dict(_attrs(payload)))
        silent = False
        try:
            dev = self.devices.get(ifindex)
            if dev is None:
                raise _Refused(-errno.ENODEV)
            silent = self._do_setlink(dev, top)
            err = 0
        except _Refused as exc:
            err = exc.err
        self.received.append(
            Received(
                _RTM_SETLINK,
                seq,
                ifindex,
                None,
                tuple(vf_macs),
                port_self,
                tuple(vf_ports),
                vf_ports_present,
                None if silent else err,
            )
        )
        if not silent:
            self._send_error(sender, msg, err)

    def _do_setlink(self, dev: EnicDevice, top: list[tuple[int, int, bytes]]) -> bool:
        """rtnetlink's do_setlink for the port attributes; returns True when the answer must be silence."""
        by_type = {atype: (length, payload) for atype, length, payload in top}
        silent = False
        if _IFLA_VFINFO_LIST in by_type:
            for atype, length, payload in _raw_attrs(by_type[_IFLA_VFINFO_LIST][1]):
                if atype != _IFLA_VF_INFO or length < 4:
                    raise _Refused(-errno.EINVAL)
                inner = dict(_attrs(payload))
                if _IFLA_VF_MAC in inner:
                    vf, mac = struct.unpack_from("=I6s", inner[_IFLA_VF_MAC])
                    if self.kernel_5_5 and vf >= _INT_MAX:
                        raise _Refused(-errno.EINVAL)
                    self._set_vf_mac(dev, vf, mac)
                if _IFLA_VF_VLAN in inner:
                    vf = struct.unpack_from("=I", inner[_IFLA_VF_VLAN])[0]
                    if self.kernel_5_5 and vf >= _INT_MAX:
                        raise _Refused(-errno.EINVAL)
                    raise _Refused(-errno.EOPNOTSUPP)  # enic has no ndo_set_vf_vlan
        if _IFLA_VF_PORTS in by_type:
            for atype, length, payload in _raw_attrs(by_type[_IFLA_VF_PORTS][1]):
                if atype != _IFLA_VF_PORT or length - 4 < 4:
                    raise _Refused(-errno.EINVAL)
                port = dict(_attrs(payload))
                if _PORT_VF not in port:
                    raise _Refused(-errno.EOPNOTSUPP)
                silent |= self._set_vf_port(dev, struct.unpack_from("=I", port[_PORT_VF])[0], port)
        if _IFLA_PORT_SELF in by_type:
            silent |= self._set_vf_port(dev, _PORT_SELF_VF, dict(_attrs(by_type[_IFLA_PORT_SELF][1])))
        return silent

    @staticmethod
    def _check_vf(dev: EnicDevice, vf: int) -> None:
        """enic_is_valid_pp_vf (vf arrives as an int: -1 is PORT_SELF_VF)."""
        if vf != _PORT_SELF_VF:
            if dev.num_vfs <= 0:
                raise _Refused(-errno.EOPNOTSUPP)
            if vf >= dev.num_vfs:
                raise _Refused(-errno.EINVAL)
        elif not dev.dynamic:
            raise _Refused(-errno.EOPNOTSUPP)

    def _set_vf_mac(self, dev: EnicDevice, vf: int, mac: bytes) -> None:
        self._check_vf(dev, vf)
        if mac[0] & 1 and mac != _ZERO_MAC:
            raise _Refused(-errno.EINVAL)  # not a valid unicast address
        if vf == _PORT_SELF_VF:
            self._ports.setdefault((dev.ifindex, vf), _PortState()).vf_mac = mac
        else:
            dev.vf_macs[vf] = _mac_text(mac)

    def _set_vf_port(self, dev: EnicDevice, vf: int, port: Mapping[int, bytes]) -> bool:
        """enic_set_vf_port + enic_process_set_pp_request; True when the firmware stays silent."""
        self._check_vf(dev, vf)
        if _PORT_REQUEST not in port or not port[_PORT_REQUEST]:
            raise _Refused(-errno.EOPNOTSUPP)
        key = (dev.ifindex, vf)
        prev = copy.copy(self._ports.get(key, _PortState()))
        pp = _PortState(request=port[_PORT_REQUEST][0])
        if _PORT_PROFILE in port:
            pp.name = port[_PORT_PROFILE][:_PORT_PROFILE_MAX]
        if _PORT_INSTANCE in port:
            pp.instance = port[_PORT_INSTANCE][:16]
        if _PORT_HOST in port:
            pp.host = port[_PORT_HOST][:16]
        if vf == _PORT_SELF_VF:
            pp.mac = prev.vf_mac
        else:
            pp.mac = _mac_raw(dev.vf_macs[vf]) if vf in dev.vf_macs else _ZERO_MAC
        fw = self._fw(dev.ifindex, vf, pp.request)
        try:
            if pp.request > DISASSOCIATE or pp.request == PREASSOCIATE:
                prev.vf_mac = _ZERO_MAC
                self._ports[key] = prev  # nothing was done: the previous state stays
                raise _Refused(-errno.EOPNOTSUPP)
            if pp.request in (PREASSOCIATE_RR, ASSOCIATE):
                name = (pp.name or b"").split(b"\0", 1)[0]
                if pp.name is None or not name:
                    raise _Refused(-errno.EINVAL)
                if pp.mac == _ZERO_MAC and vf != _PORT_SELF_VF:
                    raise _Refused(-errno.EINVAL)  # "Cannot find pp mac address for VF"
                if pp.mac == _ZERO_MAC:
                    pp.mac = _mac_raw(dev.mac)
            if fw.setlink_errno:
                raise _Refused(fw.setlink_errno)
        except _Refused:
            if self._ports.get(key) is not prev:
                self._ports[key] = _PortState()  # the implicit disassociate already happened
            raise
        pp.applied = True
        pp.firmware = fw
        if pp.request == DISASSOCIATE:
            pp.mac = _ZERO_MAC
        self._ports[key] = pp
        return fw.silent

    def _getlink(
        self, msg: bytes, sender: int, seq: int, flags: int, ifindex: int, top: list[tuple[int, int, bytes]]
    ) -> None:
        ext_mask = None
        for atype, _len, payload in top:
            if atype == _IFLA_EXT_MASK and len(payload) >= 4:
                ext_mask = struct.unpack_from("=I", payload)[0]
        dev = self.devices.get(ifindex)
        answered: int | None = None if self.silent_getlink else (0 if dev is not None else -errno.ENODEV)
        self.received.append(Received(_RTM_GETLINK, seq, ifindex, ext_mask, answered=answered))
        if self.silent_getlink:
            return
        if dev is None:
            self._send_error(sender, msg, -errno.ENODEV)
            return
        body = _attr(_IFLA_IFNAME, dev.ifname.encode() + b"\0")
        if ext_mask is not None and ext_mask & _RTEXT_FILTER_VF:
            body += self._port_attrs(dev)
        ifinfo = _IFINFO.pack(0, 0, _ARPHRD_ETHER, ifindex, _IFF_UP | _IFF_BROADCAST | _IFF_MULTICAST, 0)
        reply = _HDR.pack(_HDR.size + len(ifinfo) + len(body), _RTM_NEWLINK, 0, seq, sender) + ifinfo + body
        self._reply(reply, sender)
        if flags & _NLM_F_ACK:
            self._send_error(sender, msg, 0)

    def _port_status(self, ifindex: int, vf: int) -> bytes | None:
        """enic_get_vf_port: the port's attributes, or None (-ENODATA: no request applied)."""
        st = self._ports.get((ifindex, vf))
        if st is None or not st.applied:
            return None
        fw = st.firmware
        st.polls += 1
        response = INPROGRESS if st.polls <= fw.polls_in_progress else fw.final_response
        out = _attr(_PORT_REQUEST, struct.pack("=H", st.request))
        if not fw.no_response:
            out += _attr(_PORT_RESPONSE, struct.pack("=H", response))
        if st.name is not None:
            out += _attr(_PORT_PROFILE, st.name.ljust(_PORT_PROFILE_MAX, b"\0")[:_PORT_PROFILE_MAX])
        if st.instance is not None:
            out += _attr(_PORT_INSTANCE, st.instance)
        if st.host is not None:
            out += _attr(_PORT_HOST, st.host)
        return out

    def _port_attrs(self, dev: EnicDevice) -> bytes:
        """rtnl_port_fill: IFLA_PORT_SELF, then IFLA_VF_PORTS when there are VFs (no NLA_F_NESTED)."""
        out = b""
        own = self._port_status(dev.ifindex, _PORT_SELF_VF) if dev.dynamic else None
        if own is not None:
            out += _attr(_IFLA_PORT_SELF, own)
        if dev.num_vfs > 0:
            ports = b""
            for vf in range(dev.num_vfs):
                status = self._port_status(dev.ifindex, vf)
                if status is not None:
                    ports += _attr(_IFLA_VF_PORT, _attr(_PORT_VF, struct.pack("=I", vf)) + status)
            out += _attr(_IFLA_VF_PORTS, ports)
        return out

    def _send_error(self, dest: int, request: bytes, err: int) -> None:
        """NLMSG_ERROR as the kernel sends it: the request's header for an ack, the whole request for an error."""
        seq = _HDR.unpack_from(request)[3]
        echoed = request[: _HDR.size] if err == 0 else request
        payload = struct.pack("=i", err) + echoed
        self._reply(_HDR.pack(_HDR.size + len(payload), _NLMSG_ERROR, 0, seq, dest) + payload, dest)

    def _reply(self, data: bytes, dest: int) -> None:
        # The client may have closed its socket already; the kernel drops such replies too.
        with contextlib.suppress(ConnectionRefusedError):
            self._sock.sendto(data, (dest, 0))


# --- network namespaces for in-process tests ------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def enter_netns(name: str) -> Iterator[None]:
    """Move the calling thread into network namespace ``name`` (made by ``ip netns add``) and back.

    Sockets created inside stay in that namespace; threads started inside run there too.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        try:
            yield
        finally:
            if libc.setns(own, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original network namespace failed")
    finally:
        os.close(target)
        os.close(own)


# --- as a process -----------------------------------------------------------------------------------------------


def _load_control(path: str) -> dict[str, Any]:
    """The control file: ``{"devices": [{ifindex, ifname, dynamic, num_vfs, mac, vf_macs}],
    "default": {Firmware fields}, "firmware": [{"ifindex", "vf", "request", Firmware fields}],
    "silent_getlink": bool, "kernel_5_5": bool}``; ``ifname`` alone resolves the ifindex here."""
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _fw_of(d: Mapping[str, Any]) -> Firmware:
    keys = ("polls_in_progress", "final_response", "setlink_errno", "no_response", "silent")
    return Firmware(**{k: d[k] for k in keys if k in d})


def _apply_control(peer: EnicPeer, ctl: Mapping[str, Any]) -> None:
    with peer._lock:
        devices = []
        for d in ctl.get("devices", []):
            ifindex = d.get("ifindex") or socket.if_nametoindex(d["ifname"])
            vf_macs = {int(k): v for k, v in d.get("vf_macs", {}).items()}
            old = peer.devices.get(ifindex)
            devices.append(
                EnicDevice(
                    ifindex,
                    d.get("ifname", "enic0"),
                    d.get("dynamic", True),
                    d.get("num_vfs", 0),
                    d.get("mac", "00:25:b5:00:00:01"),
                    old.vf_macs if old is not None else vf_macs,
                )
            )
        peer.devices = {d.ifindex: d for d in devices}
        peer.default = _fw_of(ctl.get("default", {}))
        peer.firmware = {(f.get("ifindex"), f.get("vf"), f.get("request")): _fw_of(f) for f in ctl.get("firmware", [])}
        peer.silent_getlink = bool(ctl.get("silent_getlink", False))
        peer.kernel_5_5 = bool(ctl.get("kernel_5_5", True))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the peer in the foreground: port id to ``--ready``, received messages to ``--log`` (JSON lines).

    The control file is re-read whenever it changes, so a test can change the script between hook calls.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--control", required=True)
    ap.add_argument("--ready", required=True, help="file that receives the peer's netlink port id")
    ap.add_argument("--log", help="JSON lines of received messages")
    args = ap.parse_args(argv)
    peer = EnicPeer([])
    _apply_control(peer, _load_control(args.control))
    mtime = os.stat(args.control).st_mtime_ns
    logged = 0
    tmp = args.ready + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{peer.port_id}\n")
    os.replace(tmp, args.ready)
    try:
        while True:
            peer.serve(poll=0.05)
            now = os.stat(args.control).st_mtime_ns
            if now != mtime:
                mtime = now
                _apply_control(peer, _load_control(args.control))
            if args.log and len(peer.received) > logged:
                with open(args.log, "a", encoding="utf-8") as f:
                    for r in peer.received[logged:]:
                        f.write(json.dumps({**r.__dict__, "requests": r.requests, "at": time.time()}) + "\n")
                logged = len(peer.received)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
