"""The VDP feature's host-side checks: the preflight of ``migrate begin`` / ``restore begin`` (cheap checks
before anything is reserved, declared ports and the ports libvirt associates itself alike) and the uplink
check ``vdp-hooks check`` reports."""

from __future__ import annotations

from hooks.errors import HookError, PeerUnavailable
from hooks.event import Event
from hooks.feature import Outcome
from hooks.links import link_state
from vdp import native, ports, profiles
from vdp.qbg import preflight as qbg_preflight

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Sequence

    from hooks.config import Config
    from hooks.log import EventLog
    from vdp.qbg.session import QbgSession

__all__ = ["check_uplink", "preflight"]


def check_uplink(proto: str, ifname: str, qbg: QbgSession, exchange_timeout: float) -> HookError | None:
    """Why ``ifname`` cannot take ``proto`` ("qbg", "qbh") requests now, or None."""
    problem = link_state(ifname) if ifname else "the interface has no source device"
    if problem:
        return PeerUnavailable(problem)
    try:
        if proto == "qbg":
            qbg_preflight.check_qbg(qbg, ifname)
        else:
            profiles.check_ifname(ifname, exchange_timeout)
    except HookError as exc:
        return exc
    return None


def preflight(
    event: Event,
    natives: Sequence[native.Native],
    config: Config,
    qbg: QbgSession,
    give_up: float,
    log: EventLog,
) -> list[Outcome]:
    """One Outcome per declared port and per port libvirt associates itself; one verdict per uplink,
    reused per port.  A young lldpad is waited for until ``give_up`` (``time.monotonic()``)."""
    verdicts: dict[tuple[str, str], HookError | None] = {}
    timeout = config.exchange_timeout

    def verdict(proto: str, ifname: str) -> HookError | None:
        if (proto, ifname) not in verdicts:
            if proto == "qbg":
                check = lambda: check_uplink(proto, ifname, qbg, timeout)  # noqa: E731
                verdicts[(proto, ifname)] = qbg_preflight.when_ready(check, ifname, qbg, give_up, log)
            else:
                verdicts[(proto, ifname)] = check_uplink(proto, ifname, qbg, timeout)
        return verdicts[(proto, ifname)]

    outcomes = []
    for p in event.ports:
        if p.kind in ports.KINDS:
            ifname = config.uplink(p.uplink or "")
            error = verdict(p.kind, ifname)
            where = f"uplink {p.uplink} ({config.uplink_origin(p.uplink or '')})"
            note = f"preflight {p.kind} on {ifname} passed"
            outcomes.append(Outcome(p.key, error and native.prefixed(where, error), note))
    for n in natives:
        error = n.error
        for address in n.pci if error is None else ():
            found = profiles.check_pci(address, timeout)
            if found is not None:
                # A hostdev interface names its address already; a network's pool names the VF.
                error = native.prefixed(n.where if address in n.where else f"{n.where}, VF {address}", found)
                break
        # Every device libvirt may pick (it goes by connection count, never by link state).
        for ifname in n.uplinks if error is None else ():
            found = verdict(n.proto, ifname)
            if found is not None:
                error = native.prefixed(f"{n.where}, uplink {ifname}" if ifname else n.where, found)
                break
        checked = ", ".join([*n.uplinks, *(f"PCI {a}" for a in n.pci)])
        # Nothing named to check: libvirt itself refuses such a network before anything runs.
        note = f"preflight of {n.where} on {checked} passed" if checked else f"{n.where}: no device to check"
        outcomes.append(Outcome(n.key, error, note))
    return outcomes
