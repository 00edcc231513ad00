"""Built-in feature ``links``: the uplinks a guest's ports need exist and are up.

A cheap host-side check that vetoes a start or an incoming migration early (at ``migrate begin``, before
anything is reserved) when the cable is out, instead of letting the guest land without its network.  It
sets nothing up, so its teardown has nothing to undo.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from hooks.config import Option
from hooks.errors import PeerUnavailable
from hooks.event import Event
from hooks.feature import CheckResult, Context, Feature, Outcome
from hooks.journal import Record

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = ["LinksFeature", "link_state"]

_SYS = "/sys/class/net"
_IFF_UP = 0x1


def _names(text: str) -> tuple[str, ...]:
    return tuple(n for n in text.replace(",", " ").split() if n)


def link_state(ifname: str) -> str | None:
    """``None`` if ``ifname`` is usable, else why not (for the admin)."""
    base = os.path.join(_SYS, ifname)
    if "/" in ifname or not os.path.isdir(base):
        return f"interface {ifname} does not exist on this host"
    try:
        with open(os.path.join(base, "flags")) as fh:
            flags = int(fh.read().strip(), 16)
        with open(os.path.join(base, "operstate")) as fh:
            oper = fh.read().strip()
    except (OSError, ValueError) as exc:
        return f"interface {ifname}: cannot read its state ({exc})"
    if not flags & _IFF_UP:
        return f"interface {ifname} is administratively down (ip link set {ifname} up)"
    if oper not in ("up", "unknown"):  # "unknown": devices without carrier reporting (ifb, tun)
        return f"interface {ifname} has no carrier (operstate {oper}): check the cable and the switch port"
    return None


class LinksFeature(Feature):
    name = "links"
    handles = frozenset({("migrate", "begin"), ("restore", "begin"), ("prepare", "begin")})
    options: ClassVar[Mapping[str, Option]] = {
        "require": Option(_names, (), "interfaces that must be up for every guest with ports here"),
    }

    def describe(self) -> str:
        return "uplinks of declared ports exist and are up"

    def _uplinks(self, event: Event) -> dict[str, tuple[list[str], list[str]]]:
        """interface -> (keys of the ports that use it, the logical uplink names that lead to it); the
        host-wide required links count for every port."""
        wanted: dict[str, tuple[list[str], list[str]]] = {}
        for port in event.ports:
            if port.uplink:
                keys, names = wanted.setdefault(self.config.uplink(port.uplink), ([], []))
                keys.append(port.key)
                if port.uplink not in names:
                    names.append(port.uplink)
        if event.ports:
            for ifname in self.settings["require"]:
                wanted.setdefault(ifname, ([], []))
        return wanted

    def setup(self, event: Event, ctx: Context) -> list[Outcome]:
        outcomes = []
        for ifname, (keys, names) in self._uplinks(event).items():
            problem = link_state(ifname)
            error = None
            if problem:
                # Name the logical uplink and the config line that maps it: the guest's metadata says
                # "fabric-a", the admin has to find out which interface that is here and why.
                origin = "; ".join(f"uplink {n} ({self.config.uplink_origin(n)})" for n in names)
                origin = origin or f"[links] require in {self.config.path or 'the built-in defaults'}"
                error = PeerUnavailable(f"{origin}: {problem}")
            for key in keys if keys else (None,):
                outcomes.append(Outcome(key, error, f"uplink {ifname} up"))
        return outcomes

    def teardown(self, records: Sequence[Record], ctx: Context) -> list[Outcome]:
        return [Outcome(r.key) for r in records]  # nothing was set up

    def check(self) -> list[CheckResult]:
        results = []
        for logical, ifname in sorted(self.config.uplinks.items()):
            problem = link_state(ifname)
            hint = f"{problem} ({self.config.uplink_origin(logical)})" if problem else ""
            results.append(CheckResult(f"uplink {logical} -> {ifname} is up", "FAIL" if problem else "PASS", hint))
        for ifname in self.settings["require"]:
            problem = link_state(ifname)
            results.append(CheckResult(f"required link {ifname} is up", "FAIL" if problem else "PASS", problem or ""))
        return results
