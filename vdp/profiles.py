"""The VDP feature's 802.1Qbh backend: port-profile requests, checks and verification through the kernel
(``vdp.qbh``: sysfs topology and the netlink client), on the typed ports of ``vdp.ports``."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from hooks.errors import HookError, PeerRefused, PeerUnavailable
from hooks.links import link_state
from vdp.ports import PortResult, QbhPort, Request
from vdp.qbh import client as qbh
from vdp.qbh import host as qbh_host
from vdp.wire import netlink as nlmsg

__all__ = ["check_ifname", "check_pci", "lost", "send"]


def _destination() -> int:
    """Port profiles go to the kernel (port id 0).  Tests point them at a peer that plays the enic driver;
    libvirt strips the environment, so this variable can never steer a production hook."""
    return int(os.environ.get("VDP_HOOKS_QBH_PEER", "0") or 0)


def _client(exchange_timeout: float) -> qbh.QbhClient:
    return qbh.QbhClient(dest_pid=_destination(), exchange_timeout=exchange_timeout)


def hardware(port: QbhPort) -> qbh_host.QbhPort:
    """The PF/VF to address: resolved from sysfs now, or as journaled when the interface is gone."""
    try:
        return qbh_host.resolve_port(port.ifname)
    except HookError as exc:
        if not port.pf_ifname:
            raise
        try:
            index = socket.if_nametoindex(port.pf_ifname)
        except OSError:
            raise exc from None
        return qbh_host.QbhPort(port.ifname, port.pf_ifname, index, port.vf)


def send(
    ports: Sequence[tuple[str, QbhPort]],
    request: Request,
    *,
    deadline: float,
    exchange_timeout: float,
    host_uuid_setting: str,
) -> dict[str, PortResult]:
    """``request`` for every (key, port); the PF/VF each was addressed through is learnt (journaled)."""
    # The host UUID libvirt itself would send (its daemon config), else SMBIOS, else machine-id.
    host = qbh_host.host_uuid(host_uuid_setting or qbh_host.libvirt_host_uuid())
    results: dict[str, PortResult] = {}
    sendable, requests = [], []
    for key, port in ports:
        try:
            hw = hardware(port)
        except HookError as exc:
            # Teardown of a port whose interface is gone: nothing left to disassociate.
            results[key] = PortResult(key) if request == Request.DISASSOCIATE else PortResult(key, exc, unsent=True)
            continue
        sendable.append(key)
        requests.append(
            qbh.QbhRequest(
                port=hw, mac=port.mac, profile=port.profile, instance=port.instance, host_uuid=host, request=request
            )
        )
    if requests:
        with _client(exchange_timeout) as client:
            answers = client.submit(requests, deadline=deadline)
        for key, answer in zip(sendable, answers):
            learnt: dict[str, object] = {"pf_ifname": answer.request.port.pf_ifname, "vf": answer.request.port.vf}
            results[key] = PortResult(key, learnt=learnt) if answer.ok else PortResult(key, PeerRefused(answer.message))
    return results


def lost(ports: Sequence[tuple[str, QbhPort]], exchange_timeout: float) -> list[str]:
    """The keys whose association the kernel (the driver) no longer holds as journaled."""
    keep = (nlmsg.PORT_PROFILE_RESPONSE_SUCCESS, nlmsg.PORT_PROFILE_RESPONSE_INPROGRESS)
    gone = []
    with _client(exchange_timeout) as client:
        for key, port in ports:
            state = client.status(hardware(port))
            if (
                state is None
                or state.request != Request.ASSOCIATE
                or state.instance != port.instance
                or state.response not in keep
            ):
                gone.append(key)
    return gone


def _check_port(port: qbh_host.QbhPort, exchange_timeout: float) -> None:
    with _client(exchange_timeout) as client:
        if not client.supports_port_profiles(port):
            raise PeerRefused(
                f"{port.describe()} cannot do 802.1Qbh port profiles (its driver has no port-profile support)",
                hint="use a Cisco VIC (enic) or another adapter whose driver implements port profiles",
            )


def check_ifname(ifname: str, exchange_timeout: float) -> None:
    """Raise why ``ifname`` cannot carry 802.1Qbh port profiles, if it cannot."""
    _check_port(qbh_host.resolve_port(ifname), exchange_timeout)


def check_pci(address: str, exchange_timeout: float) -> HookError | None:
    """A VF named by PCI address (``type='hostdev'``): its PF must be here, up, and do port profiles."""
    try:
        port = qbh_host.resolve_pci(address)
        problem = link_state(port.pf_ifname)
        if problem:
            raise PeerUnavailable(f"its PF: {problem}")
        _check_port(port, exchange_timeout)
    except HookError as exc:
        return exc
    return None
