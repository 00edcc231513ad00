"""Ports libvirt associates itself, for the VDP feature's preflight: what to check and how to name it.

``type='direct'`` with ``<virtualport type='802.1Qbg|802.1Qbh'>`` (uplink: the source device),
``type='network'`` whose network or portgroup carries such a virtualport (``vdp.networks``; uplinks: the
network's forward devices), and ``type='hostdev'`` with an 802.1Qbh virtualport (the VF's PF must do port
profiles).
"""

from __future__ import annotations

from hooks.boot import on_first_use
from hooks.errors import HookError, PeerRefused
from hooks.event import Event, Interface
from hooks.plain import plain

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from vdp import networks
else:
    networks = on_first_use("vdp.networks")  # only guests with a type='network' interface need it (~1 ms)

__all__ = ["Native", "NativePorts", "prefixed"]

_PROFILES = {"802.1Qbg": "qbg", "802.1Qbh": "qbh"}


@plain(frozen=True)
class Native:
    """A port libvirt associates itself, for the preflight: what to check and how to name it."""

    key: str  # the interface's MAC
    proto: str  # "qbg" or "qbh"
    uplinks: tuple[str, ...]  # interfaces to check (any of them may carry the port)
    where: str  # names the port in messages: interface type, network, portgroup
    pci: tuple[str, ...] = ()  # VFs by PCI address (type='hostdev', or a network in forward mode hostdev)
    error: HookError | None = None  # known already (the network could not be resolved)


def prefixed(where: str, error: HookError) -> HookError:
    """``error`` with ``where`` in front (same class and hint), so a veto names the port's whole path."""
    return type(error)(f"{where}: {error.text}", hint=error.hint_text)


def wants(raw: bytes) -> bool:
    """Does one of the guest's ``type='network'`` interfaces use a network here that carries a Qbg/Qbh
    virtualport?"""
    return b" network=" in raw and networks.has_port_profile_network(raw, networks.network_dirs())


class NativePorts:
    """The native ports of the guests of one invocation (``type='network'`` ones resolved once)."""

    def __init__(self) -> None:
        self._resolved: dict[str, Native | None] = {}  # type='network' ports by MAC

    def of(self, event: Event) -> list[Native]:
        found = []
        for i in event.interfaces:
            if i.type == "direct" and i.virtualport_type in _PROFILES:
                proto = _PROFILES[i.virtualport_type]
                found.append(Native(i.mac, proto, (i.source_dev or "",), f"<interface type='direct'> ({proto})"))
            elif i.type == "hostdev" and i.virtualport_type == "802.1Qbh":
                where = f"<interface type='hostdev'> PCI {i.pci or '?'} (qbh)"
                found.append(Native(i.mac, "qbh", (), where, pci=(i.pci or "?",)))
            elif i.type == "network" and i.network:
                native = self._network_port(i)
                if native is not None:
                    found.append(native)
        return found

    def _network_port(self, iface: Interface) -> Native | None:
        if iface.mac in self._resolved:
            return self._resolved[iface.mac]
        where = f"<interface type='network'> on network '{iface.network}'"
        native: Native | None = None
        try:
            port = networks.resolve(iface, networks.network_dirs())
        except HookError as exc:
            native = Native(iface.mac, "qbg", (), where, error=prefixed(where, exc))
        except ValueError as exc:
            error = PeerRefused(f"{where}: {exc}", hint="libvirt refuses this too: fix the network or the guest")
            native = Native(iface.mac, "qbg", (), where, error=error)
        else:
            if port is not None:
                where = f"<interface type='network'> on {port.describe()} ({port.proto}, forward mode {port.mode})"
                native = Native(iface.mac, port.proto, port.uplinks, where, pci=port.pci if port.proto == "qbh" else ())
        self._resolved[iface.mac] = native
        return native
