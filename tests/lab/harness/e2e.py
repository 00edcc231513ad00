"""The combined lab: two libvirt hosts with station lldpads on one switch, the product as their hook.

::

    host A netns                                  switch netns                host B netns
      libvirtd A (hook: 50-vdp-hooks)               switch peer (ECP/VDP22,     libvirtd B (hook)
      lldpad (station) -- up0 <--- veth ---> s0p0   says yes or no)  s1p0 <---> eth7 -- lldpad (station)
      vm<sfx>a  <------------------- migration veth 10.99.X.0/24 ------------------>  vm<sfx>b

Built from :class:`~tests.lab.harness.vdplab.VdpLab` (namespaces, holders, station lldpads),
:class:`~tests.lab.harness.switchpeer.SwitchPeer` (the switch, default: success for everything) and
:class:`~tests.lab.harness.libvirt.LibvirtHost` (each libvirtd runs in its host's network namespace, so
the hook it runs finds that host's lldpad through lldpad's abstract control socket).

Each daemon's private /etc/libvirt holds ``vdp-hooks.conf`` (logical uplink ``fabric-a`` = ``up0`` on A,
``eth7`` on B; log file ``/var/log/libvirt/vdp-hooks.log``) and the hook link
``hooks/qemu.d/50-vdp-hooks`` -> a two-line ``/bin/sh`` wrapper that execs the source tree's
``etc-libvirt-hooks/qemu`` (``#!/usr/bin/python3 -S``, so libvirt runs it with Debian's python3-lxml /
python3-pyroute2, like a real host) with libvirt's arguments unchanged -- except ``release end``'s last one
when the test asked for a libvirt >= 10.5 reason (:meth:`E2EHost.fake_release_reason`): Debian 12's
libvirt 9.0 always passes ``-`` there, 10.5+ the shutoff reason (``migrated`` on a migration's source,
``failed`` on a destination whose migration failed, ``destroyed`` after ``virsh destroy``).  The journal is the
daemon's ``/run/libvirt/vdp-hooks`` = ``<host dir>/run/vdp-hooks``.

Everything is torn down by :meth:`E2ELab.close` (processes by pid, then namespaces), also after a failed
build.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import signal
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .guestxml import Port, metadata_xml
from .libvirt import LibvirtHost, guest_xml, link_hosts
from .switchpeer import SwitchPeer
from .vdplab import VdpLab

if TYPE_CHECKING:
    from .agentrun import AgentProcess

__all__ = [
    "ENTRY",
    "HOOK_LINK",
    "HOST_UPLINKS",
    "E2EHost",
    "E2ELab",
    "EventWatch",
    "Guest",
    "HookLine",
    "Timing",
    "hook_config",
    "netns_exists",
    "parse_hook_line",
    "pids_alive",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[3]
# The product under test: the source tree, or the installed package (packaging/with-installed-deb.sh sets
# VDP_HOOKS_ENTRY=/usr/libexec/libvirt-vdp-hooks/qemu and VDP_HOOKS_CLI=/usr/sbin/vdp-hooks).
ENTRY = Path(os.environ.get("VDP_HOOKS_ENTRY") or REPO / "etc-libvirt-hooks" / "qemu")
INSTALLED_CLI = os.environ.get("VDP_HOOKS_CLI", "")
HOOK_LINK = "qemu.d/50-vdp-hooks"
SYSTEM_PYTHON = "/usr/bin/python3"
# Logical uplink name used by every guest -> each host's interface (names differ on purpose).
HOST_UPLINKS = {"a": "up0", "b": "eth7"}
LOGICAL_UPLINK = "fabric-a"
# libvirt strips the hook's environment to about this; the CLI is run with the same.
CLEAN_ENV = {"LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}


# One RTM_SETLINK DISASSOCIATE of a VSI nobody has, to lldpad (its netlink port id is its pid); prints
# lldpad's ack (0 or -errno).  Until VDP runs on the interface lldpad acks -EPROTONOSUPPORT, for several
# seconds after the EVB TLVs look negotiated (measured after an lldpad restart); then -EINVAL (unknown VSI).
_VDP_PROBE = r"""
import socket, sys, uuid
from vdp.wire import netlink as nlmsg
pid, ifname = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0))
s.settimeout(2)
req = nlmsg.encode_qbg_request(seq=7, port_id=s.getsockname()[0], ifindex=socket.if_nametoindex(ifname),
                               ifname=ifname, mac="52:54:00:00:00:01", vlan=1, vsi_type=nlmsg.VsiType(1, 1, 1),
                               instance=uuid.uuid4(), request=nlmsg.DISASSOCIATE)
s.sendto(req, (pid, 0))
while True:
    for hdr, msg in nlmsg.split_messages(s.recv(65536)):
        if hdr.seq == 7 and hdr.type == nlmsg.NLMSG_ERROR:
            err = nlmsg.decode_error(msg)
            print(err)
            sys.exit(0)
"""


def hook_config(uplink: str, *, extra: str = "") -> str:
    """The product's config for one lab host (its /etc/libvirt/vdp-hooks.conf)."""
    return (
        "[hooks]\n"
        "syslog = no\n"
        "log_file = /var/log/libvirt/vdp-hooks.log\n"
        "exchange_timeout = 5\n"
        "invocation_timeout = 15\n"
        "[uplinks]\n"
        f"{LOGICAL_UPLINK} = {uplink}\n" + extra
    )


@dataclass(frozen=True)
class HookLine:
    """One line of the hook's log file: ``level``, the fields (guest, uuid, op, feature, port, outcome,
    ms) and the message; ``text`` is the whole line."""

    text: str
    level: str
    fields: dict[str, str]
    message: str

    @property
    def ms(self) -> float | None:
        """Milliseconds since the invocation began (the log's ``ms=``)."""
        raw = self.fields.get("ms")
        return float(raw) if raw else None


# "<date> <time> [pid] LEVEL guest=NAME uuid=U op=OP SUBOP feature=F port=P outcome=O ms=N: message"
_LINE = re.compile(
    r"\[\d+\] (?P<level>[A-Z]+) guest=(?P<guest>.*?) uuid=(?P<uuid>\S+) op=(?P<op>.*?) feature=(?P<feature>\S+)"
    r" port=(?P<port>\S+) outcome=(?P<outcome>\S+) ms=(?P<ms>[\d.]+): ?(?P<message>.*)$"
)


def parse_hook_line(line: str) -> HookLine:
    """Split one log line; a line of another shape keeps only its text (as the message)."""
    m = _LINE.search(line)
    if m is None:
        return HookLine(line, "", {}, line)
    fields = {k: v for k, v in m.groupdict().items() if k not in ("level", "message")}
    return HookLine(line, m.group("level"), fields, m.group("message"))


@dataclass
class Guest:
    """A lab guest: name, UUID, NIC MACs, hook-managed ports (all on the logical uplink)."""

    name: str
    uuid: str
    macs: list[str]
    ports: list[Port]
    policy: dict[str, bool] | None = None

    def metadata(self, *, policy: dict[str, bool] | None = None, ports: Sequence[Port] | None = None) -> str:
        return metadata_xml(list(ports if ports is not None else self.ports),
                            policy=policy if policy is not None else self.policy)

    def xml(self) -> str:
        return guest_xml(self.name, self.uuid, self.macs, self.metadata())

    def instances(self) -> list[str]:
        """The VSI instance ids of the ports (explicit ``instanceid`` params only)."""
        return [str(uuidlib.UUID(p.params["instanceid"])) for p in self.ports]


class E2EHost:
    """One libvirt host of the lab: its libvirtd, lldpad, uplink and the product's files there."""

    def __init__(self, lab: E2ELab, key: str, libvirt: LibvirtHost) -> None:
        self.lab = lab
        self.key = key
        self.libvirt = libvirt
        self.uplink = HOST_UPLINKS[key]

    @property
    def name(self) -> str:
        return self.libvirt.name

    @property
    def hooks_dir(self) -> Path:
        """The daemon's /etc/libvirt/hooks, as seen from outside."""
        return self.libvirt.etc / "hooks"

    @property
    def state_dir(self) -> Path:
        """The daemon's /run/libvirt/vdp-hooks (the product's journal), as seen from outside."""
        return self.libvirt.dir / "run" / "vdp-hooks"

    @property
    def log_file(self) -> Path:
        """The hook's log file (the daemon's /var/log/libvirt/vdp-hooks.log)."""
        return self.libvirt.dir / "log" / "vdp-hooks.log"

    def virsh(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.libvirt.virsh(*args, check=check, timeout=timeout)

    def env(self) -> dict[str, str]:
        """The hook's environment on this host (libvirt's stripped one: the files are at their default
        paths in the daemon's mount namespace), for the agent (:class:`~tests.lab.harness.agentrun.AgentProcess`)."""
        return dict(CLEAN_ENV)

    @property
    def reasons_dir(self) -> Path:
        """Where the hook wrapper looks for a faked ``release end`` reason, one file per guest name."""
        return self.lab.workdir / "release-reasons" / self.key

    def fake_release_reason(self, guest: str, reason: str | None) -> None:
        """Make this host's ``release end`` of ``guest`` carry ``reason`` (``-`` as libvirt 9.0, a shutoff
        reason as libvirt >= 10.5), whatever this daemon passes; None: what this daemon really passes."""
        path = self.reasons_dir / guest
        if reason is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(reason)

    # -- views ----------------------------------------------------------------------------------

    def journal_files(self) -> list[str]:
        """Guest journals (``<uuid>.json``) in the product's state directory."""
        if not self.state_dir.is_dir():
            return []
        return sorted(p.name for p in self.state_dir.iterdir() if p.name.endswith(".json"))

    def journal(self, guest_uuid: str) -> dict[str, Any] | None:
        path = self.state_dir / f"{guest_uuid}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def vsi_table(self) -> list[dict[str, str]]:
        """lldpad's own VSI table on this host's uplink (vdptool)."""
        return self.lab.vdp.lldpad(self.key).vsi_table(self.uplink)

    def vsi_uuids(self) -> set[str]:
        return {str(uuidlib.UUID(v["uuid"])) for v in self.vsi_table() if "uuid" in v}

    def switch_port(self) -> str:
        return self.lab.vdp.switch_ifname(self.key, self.uplink)

    def switch_table(self) -> dict[str, Any]:
        """The switch's VSI table for this host's port: ``{instance: entry}``."""
        return dict(self.lab.peer.table().get(self.switch_port(), {}))

    def hook_lines(self, since: int = 0) -> list[HookLine]:
        """The hook's log lines, from byte offset ``since`` (see :meth:`log_mark`)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        return [parse_hook_line(line) for line in text.splitlines() if line.strip()]

    def log_mark(self) -> int:
        """The log's current size: pass it to :meth:`hook_lines` to see only what comes after."""
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def domstate(self, guest: str) -> str:
        """``virsh domstate --reason`` (e.g. ``running (booted)``), or ``""`` when there is no such domain."""
        r = self.virsh("domstate", "--reason", guest, check=False, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else ""

    def domains(self) -> list[str]:
        """All domains this daemon knows (running or defined)."""
        r = self.virsh("list", "--all", "--name", timeout=30)
        return [n.strip() for n in r.stdout.splitlines() if n.strip()]

    # -- the product's CLI, run as root on this host (inside the daemon's namespaces) -------------

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``vdp-hooks ARGS`` with /usr/bin/python3, in this daemon's network + mount namespaces (so it
        reads the daemon's /etc/libvirt/vdp-hooks.conf and /run/libvirt/vdp-hooks)."""
        code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from hooks.cli import main; sys.exit(main())"
        argv = [INSTALLED_CLI, *args] if INSTALLED_CLI else [SYSTEM_PYTHON, "-c", code, *args]
        assert self.libvirt.daemon is not None, f"libvirtd {self.name} is not running"
        return subprocess.run(
            self.libvirt.daemon.nsenter_argv(argv),
            capture_output=True, text=True, timeout=timeout, env=dict(CLEAN_ENV), check=False,
        )

    def exec_hook(self, guest: Guest, op: str, subop: str, *, xml: str | None = None) -> tuple[int, str, float]:
        """Exec the hook entry the way this libvirtd does (its namespaces, a stripped environment, argv,
        the domain XML on stdin); returns exit code, stderr and the wall time of the whole process."""
        assert self.libvirt.daemon is not None, f"libvirtd {self.name} is not running"
        t0 = time.monotonic()
        r = subprocess.run(
            self.libvirt.daemon.nsenter_argv([f"/etc/libvirt/hooks/{HOOK_LINK}", guest.name, op, subop, "-"]),
            input=(xml if xml is not None else guest.xml()).encode(), capture_output=True,
            env=dict(CLEAN_ENV), timeout=60, check=False,
        )
        return r.returncode, r.stderr.decode(errors="replace"), time.monotonic() - t0

    def status(self) -> dict[str, Any]:
        """``vdp-hooks status --json`` as a dict (``rc`` added)."""
        r = self.cli("status", "--json")
        try:
            doc: dict[str, Any] = json.loads(r.stdout)
        except ValueError as exc:
            raise AssertionError(f"vdp-hooks status --json on {self.name}: rc {r.returncode}, "
                                 f"stdout {r.stdout!r}, stderr {r.stderr!r}") from exc
        doc["rc"] = r.returncode
        return doc

    # -- guests -----------------------------------------------------------------------------------

    def create(self, guest: Guest, *, xml: str | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
        """``virsh create`` (a transient guest); returns virsh's result and its wall time."""
        path = self.lab.workdir / f"{guest.name}-{self.key}.xml"
        path.write_text(xml if xml is not None else guest.xml())
        t0 = time.monotonic()
        r = self.virsh("create", str(path), check=False)
        return r, time.monotonic() - t0

    def destroy(self, guest: str) -> None:
        if self.domstate(guest):
            self.virsh("destroy", guest, check=False, timeout=60)

    # -- the agent (libvirt events) ---------------------------------------------------------------

    def set_config(self, extra: str) -> None:
        """This host's vdp-hooks.conf: the lab's, plus ``extra`` (e.g. ``[agent]`` or ``[vdp]`` sections)."""
        (self.libvirt.etc / "vdp-hooks.conf").write_text(hook_config(self.uplink, extra=extra))

    def start_agent(self, log: Path) -> AgentProcess:
        """``vdp-hooks agent`` in this libvirtd's namespaces (it connects to it as ``qemu:///system``)."""
        from .agentrun import AgentProcess

        assert self.libvirt.daemon is not None, f"libvirtd {self.name} is not running"
        return AgentProcess(self.libvirt.daemon, self, log)

    def kill_libvirtd(self) -> list[int]:
        """SIGKILL libvirtd by pid (no hook runs, its guests' QEMUs stay); returns those QEMUs' pids."""
        daemon = self.libvirt.daemon
        assert daemon is not None
        qemus = self.libvirt.qemu_pids()
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.proc.wait()
        self.libvirt.daemon = None
        return qemus

    def restart_libvirtd(self, *, between: Callable[[], None] | None = None) -> float:
        """Stop libvirtd by pid with guests left running (as ``systemctl restart`` does), run
        ``between()``, start it again; returns the seconds the start took."""
        daemon = self.libvirt.daemon
        assert daemon is not None
        daemon.stop()
        self.libvirt.daemon = None
        if between is not None:
            between()
        return self.libvirt.start()


@dataclass
class Timing:
    """What ``virsh`` took, and the hook's own share (the sum of its ``ms=`` fields per invocation)."""

    what: str
    virsh_s: float
    hook_ms: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        hooks = ", ".join(f"{k} {v:.0f} ms" for k, v in self.hook_ms.items())
        total = sum(self.hook_ms.values())
        return f"{self.what}: virsh {self.virsh_s * 1000:.0f} ms; hook {total:.0f} ms ({hooks or 'no hook lines'})"


class E2ELab:
    """Hosts A and B (libvirtd + station lldpad each) on one switch (:class:`SwitchPeer`), a migration link.

    ``model``: the switch peer's model (``per-port`` or ``one-port``).  ``with_hook``: link the product
    into each daemon's ``qemu.d`` before it starts (``False`` for hosts where a test enables it).
    """

    def __init__(self, workdir: Path, *, model: str = "per-port", with_hook: bool = True,
                 migration_timeout: float = 30.0, evb_timeout: float = 20.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._vdp: VdpLab | None = None
        self._peer: SwitchPeer | None = None
        self.hosts: dict[str, E2EHost] = {}
        self._libvirts: list[LibvirtHost] = []
        try:
            self._build(model, with_hook, migration_timeout, evb_timeout)
        except BaseException:
            self.close()
            raise

    def _build(self, model: str, with_hook: bool, migration_timeout: float, evb_timeout: float) -> None:
        self._vdp = VdpLab(self.workdir / "vdp", hosts={k: [u] for k, u in HOST_UPLINKS.items()}, switch="none",
                          wait_evb=False)
        assert self.vdp.switch is not None
        ports = [self.vdp.switch_ifname(k, u) for k, u in HOST_UPLINKS.items()]
        self._peer = SwitchPeer(self.vdp.switch, ports, self.workdir / "switch", model=model,
                               migration_timeout=migration_timeout)
        for i, (key, uplink) in enumerate(HOST_UPLINKS.items()):
            hooks = {HOOK_LINK: self._hook_wrapper(key)} if with_hook else {}
            lv = LibvirtHost(
                key.upper(), self.vdp.host(key).netns, self.workdir / "libvirt",
                host_uuid=str(uuidlib.uuid4()), hooks=hooks,
                etc_files={"vdp-hooks.conf": hook_config(uplink)},
                migration_port_base=49152 + 10 * i,
            )
            self._libvirts.append(lv)
            self.hosts[key] = E2EHost(self, key, lv)
        link_hosts(self._libvirts[0], self._libvirts[1], suffix=self.vdp.suffix)
        self.wait_ready(timeout=evb_timeout)

    def _hook_wrapper(self, key: str) -> Path:
        """The hook libvirt runs on host ``key``: the product's entry, with the ``release end`` reason of
        libvirt >= 10.5 substituted when a test wrote one (see the module docstring)."""
        reasons = self.workdir / "release-reasons" / key
        reasons.mkdir(parents=True, exist_ok=True)
        wrapper = self.workdir / f"hook-{key}.sh"
        wrapper.write_text(
            "#!/bin/sh\n"
            "# lab only: libvirt 9.0 passes '-' to release end; 10.5+ the reason a test wrote for the guest\n"
            f'[ "$2 $3" = "release end" ] && [ -f "{reasons}/$1" ] && '
            f'exec {ENTRY} "$1" "$2" "$3" "$(cat "{reasons}/$1")"\n'
            f'exec {ENTRY} "$@"\n'
        )
        wrapper.chmod(0o755)
        return wrapper

    # -- lookup ------------------------------------------------------------------------------------

    @property
    def vdp(self) -> VdpLab:
        """The namespaces, holders and station lldpads (:class:`VdpLab`)."""
        if self._vdp is None:
            raise RuntimeError("the lab is closed")
        return self._vdp

    @property
    def peer(self) -> SwitchPeer:
        """The switch."""
        if self._peer is None:
            raise RuntimeError("the lab is closed")
        return self._peer

    @property
    def a(self) -> E2EHost:
        return self.hosts["a"]

    @property
    def b(self) -> E2EHost:
        return self.hosts["b"]

    def other(self, host: E2EHost) -> E2EHost:
        return self.b if host is self.a else self.a

    # -- the network -------------------------------------------------------------------------------

    def wait_evb(self, host: str | None = None, *, timeout: float = 20.0) -> None:
        """EVB settled with the switch on ``host``'s uplink (both hosts when None)."""
        for key in [host] if host else list(self.hosts):
            self.vdp.wait_evb(key, timeout=timeout)

    def vdp_ready(self, host: str) -> bool:
        """lldpad on ``host`` takes VDP requests on its uplink (see ``_VDP_PROBE``)."""
        lldpad = self.vdp.lldpad(host)
        if lldpad.pid is None or not lldpad.alive():
            return False
        r = self.vdp.run_in_host(host, [SYSTEM_PYTHON, "-c", _VDP_PROBE, str(lldpad.pid), HOST_UPLINKS[host]],
                                 env=dict(CLEAN_ENV, PYTHONPATH=str(REPO)), timeout=30)
        return r.returncode == 0 and r.stdout.strip() not in (b"", str(-errno.EPROTONOSUPPORT).encode())

    def wait_ready(self, host: str | None = None, *, timeout: float = 30.0) -> None:
        """EVB settled and VDP answering on ``host`` (both hosts when None)."""
        self.wait_evb(host, timeout=timeout)
        for key in [host] if host else list(self.hosts):
            wait_until(functools.partial(self.vdp_ready, key), timeout, f"VDP ready on host {key}", interval=0.2)

    def refuse(self, host: E2EHost, status: str = "insufficient-resources", **rule: Any) -> None:
        """The switch answers ``status`` to every request on ``host``'s port (others: success)."""
        self.peer.control({"ifaces": {host.switch_port(): {"status": status, **rule}}})

    def accept_all(self) -> None:
        self.peer.control({})

    def switch_requests(self, host: E2EHost | None = None, *, since: float = 0.0,
                        instances: Iterable[str] | None = None, keepalives: bool = False) -> list[dict[str, Any]]:
        """Requests the switch received (on ``host``'s port, after ``since`` = time.time(), for
        ``instances``), oldest first.  Without ``keepalives``, not the stations' keep-alives (a request
        repeating the state the switch holds): lldpad sends one per VSI every ~10 s, so how many fall into
        a test's window depends on how long it ran (a loaded machine saw one during a failed migration)."""
        wanted = set(instances) if instances is not None else None
        return [
            e for e in self.peer.requests()
            if (host is None or e["iface"] == host.switch_port()) and e["time"] >= since
            and (wanted is None or e["instance"] in wanted) and (keepalives or not e["keepalive"])
        ]

    def set_migration_link(self, up: bool) -> None:
        """Cut (or restore) the migration link, on A's side."""
        a = self.a.libvirt
        for link in a.extra_links:
            a.netns.run(["ip", "link", "set", link, "up" if up else "down"])

    # -- guests ------------------------------------------------------------------------------------

    def guest(self, tag: str, *, nics: int = 3, managed: int = 2, required: bool | None = None,
              policy: dict[str, bool] | None = None, vlan_base: int = 100) -> Guest:
        """A guest ``g<tag>`` with ``nics`` virtio NICs, the first ``managed`` of them hook-managed Qbg
        ports on the logical uplink, with explicit instance ids (so the switch side can be checked)."""
        guest_uuid = str(uuidlib.uuid4())
        n = int(guest_uuid[:4], 16)
        macs = [f"52:54:00:{n >> 8:02x}:{n & 0xff:02x}:{i + 2:02x}" for i in range(nics)]
        ports = [
            Port(macs[i], LOGICAL_UPLINK, vlan=vlan_base + i, required=required,
                 params={"managerid": "11", "typeid": "1193047", "typeidversion": "2",
                         "instanceid": str(uuidlib.uuid4())})
            for i in range(managed)
        ]
        return Guest(f"g{tag}", guest_uuid, macs, ports, policy)

    def migrate(self, src: E2EHost, dst: E2EHost, guest: str, *, xml_file: Path | None = None,
                extra: Sequence[str] = (), timeout: float = 90.0) -> tuple[subprocess.CompletedProcess[str], float]:
        """``virsh migrate --live --p2p`` over the migration link; returns virsh's result and its wall time."""
        argv = ["migrate", "--live", "--p2p", guest, dst.libvirt.p2p_uri,
                "--migrateuri", f"tcp://{dst.libvirt.migration_addr}"]
        if xml_file is not None:
            argv += ["--xml", str(xml_file)]
        argv += list(extra)
        t0 = time.monotonic()
        r = src.virsh(*argv, check=False, timeout=timeout)
        return r, time.monotonic() - t0

    def migrate_argv(self, src: E2EHost, dst: E2EHost, guest: str, *extra: str) -> list[str]:
        """The full ``virsh`` argv of :meth:`migrate` (to run it in the background)."""
        return ["virsh", "-q", "-c", src.libvirt.uri, "migrate", "--live", "--p2p", guest, dst.libvirt.p2p_uri,
                "--migrateuri", f"tcp://{dst.libvirt.migration_addr}", *extra]

    # -- timings -----------------------------------------------------------------------------------

    @staticmethod
    def hook_share(lines: Sequence[HookLine], guest: Guest) -> dict[str, float]:
        """Per hook operation, the largest ``ms=`` of the guest's lines (each line carries the
        milliseconds since the invocation began; the largest is the invocation's own time)."""
        out: dict[str, float] = {}
        for line in lines:
            if line.fields.get("uuid") != guest.uuid or line.ms is None:
                continue
            op = line.fields.get("op", "?")
            out[op] = max(out.get(op, 0.0), line.ms)
        return out

    # -- tear-down ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop libvirtds (destroying their guests), the switch peer, the lldpads, delete namespaces."""
        errors: list[BaseException] = []
        for lv in reversed(self._libvirts):
            try:
                lv.close()
            except Exception as exc:  # keep tearing down; re-raise the first failure at the end
                errors.append(exc)
        self._libvirts.clear()
        if self._peer is not None:
            try:
                self._peer.stop()
            except Exception as exc:
                errors.append(exc)
            self._peer = None
        if self._vdp is not None:
            try:
                self._vdp.close()
            except Exception as exc:
                errors.append(exc)
            self._vdp = None
        if errors:
            raise errors[0]

    def __enter__(self) -> E2ELab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventWatch:
    """``virsh event --event lifecycle --loop --timestamp`` on one host, in the background (stopped by pid).

    :meth:`events` returns ``(unix time, domain, text)`` per lifecycle event, e.g.
    ``(1795636720.6, "g1", "Resumed Migrated")``.
    """

    _LINE = re.compile(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)([+-]\d{4}): event 'lifecycle' for domain '?([^':]+)'?: (.*)$"
    )

    def __init__(self, host: E2EHost) -> None:
        self.host = host
        self.out = host.lab.workdir / f"events-{host.key}-{time.monotonic_ns()}.log"
        self._f = open(self.out, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["virsh", "-q", "-c", host.libvirt.uri, "event", "--loop", "--timestamp", "--event", "lifecycle"],
            stdout=self._f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        # The registration takes a moment; an event before it would be missed.
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._f.close()

    def events(self, guest: str | None = None) -> list[tuple[float, str, str]]:
        from datetime import datetime

        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            m = self._LINE.match(line.strip())
            if not m:
                continue
            stamp = datetime.strptime(m.group(1) + m.group(2), "%Y-%m-%d %H:%M:%S.%f%z").timestamp()
            if guest is None or m.group(3) == guest:
                out.append((stamp, m.group(3), m.group(4)))
        return out

    def __enter__(self) -> EventWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, *, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until true; AssertionError naming ``what`` on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {what}")


def pids_alive(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    return alive


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")
