"""A VDP lab: station hosts, each with uplinks (veth) to one switch namespace.

::

    host "a" netns (lldpad station)          switch netns (lldpad bridge, or nothing)
      up0  <---------------- veth ---------------->  s0p0
      up1  <---------------- veth ---------------->  s0p1
    host "b" netns (lldpad station)
      eth7 <---------------- veth ---------------->  s1p0

Each host also has a long-lived *holder* process owning the host's private mount namespace (tmpfs /run
and /dev/shm): the host's lldpad runs inside it, and :meth:`VdpLab.run_in_host` runs commands there, so
they see that lldpad's /run/lldpad.pid and abstract control socket (sockets are per network namespace),
also while lldpad is stopped.  ``switch="none"`` leaves the switch side to another peer (see
:meth:`VdpLab.switch_ifname` and :attr:`VdpLab.switch`).

Everything is created with unique names (suffix from :func:`unique_suffix`) and torn down by
:meth:`VdpLab.close` (called by ``__exit__`` and on a failed set-up): processes by pid, then namespaces.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .lldpad import Lldpad
from .netns import Daemon, Netns, unique_suffix, veth_pair
from .switchpeer import SwitchTap

__all__ = ["LabHost", "VdpLab"]

DEFAULT_HOST = "host"


class LabHost:
    """One station host: its netns, uplink names, holder (mount namespace) and lldpad."""

    def __init__(self, name: str, netns: Netns, uplinks: Sequence[str], holder: Daemon, lldpad: Lldpad) -> None:
        self.name = name
        self.netns = netns
        self.uplinks = list(uplinks)
        self.holder = holder
        self.lldpad = lldpad

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run in this host's network + mount namespaces."""
        return self.holder.nsenter_argv(argv)


class VdpLab:
    """Station hosts wired to one switch namespace; see the module docstring.

    ``hosts`` maps host name to its uplink names (default ``{"host": ["up0", .., "up<uplinks-1>"]}``).
    ``switch``: ``"lldpad"`` (lldpad in the EVB22 bridge role on every switch port) or ``"none"``.
    ``station_role``: lldpad role of the host uplinks (``"station"``, or ``"evb-off"`` for negative tests).
    ``wait_evb``: wait for EVB negotiation on every uplink before returning (only with an lldpad switch).
    ``suffix``: the unique part of namespace names (``vs<suffix>``, ``vh<suffix><i>``); random by default.
    """

    def __init__(
        self,
        workdir: Path,
        hosts: Mapping[str, Sequence[str]] | None = None,
        *,
        uplinks: int = 1,
        switch: str = "lldpad",
        station_role: str = "station",
        debug: bool = False,
        wait_evb: bool = True,
        evb_timeout: float = 10.0,
        suffix: str | None = None,
    ) -> None:
        if switch not in ("lldpad", "none"):
            raise ValueError(f"switch must be 'lldpad' or 'none', not {switch!r}")
        if hosts is None:
            hosts = {DEFAULT_HOST: [f"up{i}" for i in range(uplinks)]}
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.suffix = suffix or unique_suffix()
        self.switch_mode = switch
        self.hosts: dict[str, LabHost] = {}
        self.switch: Netns | None = None
        self.switch_lldpad: Lldpad | None = None
        #: with ``switch="none"``, the peer a test started on the switch side (a SwitchPeer: its ``table()``)
        self.switch_peer: Any = None
        #: with ``switch="lldpad"``, what the bridge holds, from the frames it sends (see SwitchTap)
        self.switch_tap: SwitchTap | None = None
        self._switch_ports: dict[tuple[str, str], str] = {}
        self._netns: list[Netns] = []
        self._holders: list[Daemon] = []
        self._lldpads: list[Lldpad] = []
        try:
            self._build(hosts, station_role, debug)
            for host in self.hosts.values():
                host.lldpad.wait_ready(timeout=evb_timeout)
            if switch == "lldpad" and wait_evb:
                self.wait_evb(timeout=evb_timeout)
        except BaseException:
            self.close()
            raise

    def _build(self, hosts: Mapping[str, Sequence[str]], station_role: str, debug: bool) -> None:
        self.switch = Netns(f"vs{self.suffix}")
        self._netns.append(self.switch)
        for hi, (name, uplinks) in enumerate(hosts.items()):
            netns = Netns(f"vh{self.suffix}{hi}")
            self._netns.append(netns)
            for ui, uplink in enumerate(uplinks):
                port = f"s{hi}p{ui}"
                veth_pair(netns, uplink, self.switch, port)
                self._switch_ports[(name, uplink)] = port
            hostdir = self.workdir / f"host-{name}"
            hostdir.mkdir(parents=True, exist_ok=True)
            holder = Daemon(netns, ["sleep", "infinity"], log=hostdir / "holder.log")
            self._holders.append(holder)
            # The holder's mounts must exist before lldpad joins them.
            holder.wait_for(lambda h=holder: _mounted_run(h), 5.0, f"private /run of host {name}")
            lldpad = Lldpad(netns, hostdir, {u: station_role for u in uplinks}, debug=debug, holder=holder)
            self._lldpads.append(lldpad)
            self.hosts[name] = LabHost(name, netns, uplinks, holder, lldpad)
        if self.switch_mode == "lldpad":
            # Before the bridge: the tap must see every answer it sends.
            self.switch_tap = SwitchTap(self.switch, list(self._switch_ports.values()), self.workdir / "switch-tap")
            self.switch_lldpad = Lldpad(
                self.switch,
                self.workdir / "switch",
                {port: "bridge" for port in self._switch_ports.values()},
                pidfile=False,
                debug=debug,
            )
            self._lldpads.append(self.switch_lldpad)

    # -- lookup -------------------------------------------------------------------------------------

    def host(self, host: str | None = None) -> LabHost:
        """The named host (``None``: the only one)."""
        if host is None:
            if len(self.hosts) != 1:
                raise ValueError(f"several hosts ({', '.join(self.hosts)}): name one")
            return next(iter(self.hosts.values()))
        return self.hosts[host]

    def lldpad(self, host: str | None = None) -> Lldpad:
        """The station lldpad of ``host``."""
        return self.host(host).lldpad

    def switch_ifname(self, host: str | None, uplink: str) -> str:
        """The switch-side name of ``host``'s ``uplink`` veth."""
        return self._switch_ports[(self.host(host).name, uplink)]

    def switch_ifnames(self) -> dict[tuple[str, str], str]:
        """``{(host, uplink): switch-side ifname}`` for every uplink."""
        return dict(self._switch_ports)

    def switch_table(self, host: str | None, uplink: str) -> dict[str, Any]:
        """What the switch side holds on ``host``'s ``uplink``: ``{instance: entry}`` (mode, filters, ...).

        From the switch peer (:attr:`switch_peer`) or, for lldpad's bridge role, from the tap
        (:attr:`switch_tap`): the bridge itself cannot be asked -- its client interface refuses VSI queries
        ("Command not applicable") and its GETLINK lists every VSI it ever granted, de-associated ones too,
        for good (measured: 10 associated, 10 de-associated, still 10 listed with response 0x40)."""
        source = self.switch_peer or self.switch_tap
        if source is None:
            raise RuntimeError("this lab has no switch side to ask (switch='none' and no switch_peer set)")
        return dict(source.table().get(self.switch_ifname(host, uplink), {}))

    def all_pids(self) -> list[int]:
        """Every pid this lab started (holders and every lldpad start), for leak checks."""
        pids = [h.pid for h in self._holders]
        for lldpad in self._lldpads:
            pids += lldpad.started_pids
        return pids

    def netns_names(self) -> list[str]:
        """Every network namespace this lab created."""
        return [n.name for n in self._netns]

    # -- actions ------------------------------------------------------------------------------------

    def run_in_host(
        self,
        host: str | None,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` in ``host``'s netns and private mount namespace; stdout/stderr captured as bytes.

        ``env`` replaces the environment (like libvirt, which strips it); default: this process's.
        """
        return subprocess.run(
            self.host(host).nsenter_argv(argv),
            input=input,
            env=dict(env) if env is not None else None,
            capture_output=True,
            timeout=timeout,
            check=check,
        )

    def set_link(self, host: str | None, uplink: str, up: bool) -> None:
        """Set ``host``'s ``uplink`` up or down (host side of the veth)."""
        self.host(host).netns.run(["ip", "link", "set", uplink, "up" if up else "down"])

    def set_switch_link(self, host: str | None, uplink: str, up: bool) -> None:
        """Set the switch-side end of ``host``'s ``uplink`` up or down."""
        assert self.switch is not None
        self.switch.run(["ip", "link", "set", self.switch_ifname(host, uplink), "up" if up else "down"])

    def evb_settled(self, host: str | None, uplink: str) -> bool:
        """EVB settled on ``host``'s ``uplink``: see :meth:`Lldpad.evb_negotiated`; with our lldpad
        bridge, also each side holds the other's latest TLV (the bridge sets its VSI keep-alive timer from
        the station's; measured: about 3 s after an lldpad restart, 1-2 s after a fresh start).
        """
        lldpad = self.lldpad(host)
        if not lldpad.evb_negotiated(uplink):
            return False
        if self.switch_lldpad is None:
            return True
        port = self.switch_ifname(host, uplink)
        seen_by_bridge = self.switch_lldpad.evb(port, neighbour=True)
        seen_by_station = lldpad.evb(uplink, neighbour=True)
        # Both directions carry the latest TLV of the other side (the bridge echoes the station's bits).
        return (
            seen_by_bridge != ""
            and seen_by_bridge == lldpad.evb(uplink)
            and seen_by_station == self.switch_lldpad.evb(port)
        )

    def wait_evb(self, host: str | None = None, uplink: str | None = None, *, timeout: float = 10.0) -> None:
        """Wait until EVB settled (:meth:`evb_settled`) on one uplink, or on all uplinks of all hosts."""
        pairs = [(h, u) for (h, u) in self._switch_ports if (host is None or h == host) and uplink in (None, u)]
        for h, u in pairs:
            lldpad = self.lldpad(h)
            lldpad.wait_for(lambda h=h, u=u: self.evb_settled(h, u), timeout, f"EVB negotiation on {h}/{u}")

    def stop_lldpad(self, host: str | None = None) -> None:
        """Stop ``host``'s lldpad (SIGTERM by pid); the host's /run stays."""
        self.lldpad(host).stop()

    def start_lldpad(self, host: str | None = None, *, wait_evb: bool = False, timeout: float = 10.0) -> None:
        """Start ``host``'s lldpad again (same roles); optionally wait for EVB on every uplink."""
        lab_host = self.host(host)
        lab_host.lldpad.start()
        lab_host.lldpad.wait_ready(timeout=timeout)
        if wait_evb:
            self.wait_evb(lab_host.name, timeout=timeout)

    def close(self) -> None:
        """Stop every process by pid, delete every namespace; safe to call twice and after a failure."""
        errors: list[BaseException] = []
        for lldpad in reversed(self._lldpads):
            try:
                lldpad.stop()
            except Exception as exc:  # keep tearing down; report the first failure below
                errors.append(exc)
        if self.switch_tap is not None:
            try:
                self.switch_tap.stop()
            except Exception as exc:
                errors.append(exc)
            self.switch_tap = None
        for holder in reversed(self._holders):
            try:
                holder.stop()
            except Exception as exc:
                errors.append(exc)
        for netns in reversed(self._netns):
            netns.close()
        self._lldpads.clear()
        self._holders.clear()
        self._netns.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> VdpLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mounted_run(holder: Daemon) -> bool:
    """True once the holder runs ``sleep``: the wrapper shell has mounted the private /run and exec'ed."""
    try:
        with open(f"/proc/{holder.pid}/comm") as comm:
            return comm.read().strip() == "sleep"
    except OSError:
        return False
