"""A real lldpad in a lab network namespace, with its own /run and /dev/shm.

lldpad fixes an interface's EVB22 role (station or bridge) when it starts, so the configuration file is
written before every start.  lldpad keeps state in the POSIX shm segment ``/lldpad.state`` and writes
``/run/lldpad.pid``; both live on tmpfs mounts private to the lab, never the host's.

Two ways to get that private mount namespace:

* ``holder=None``: lldpad is a :class:`~tests.lab.harness.netns.Daemon` (fresh mounts per start);
* ``holder=<Daemon>``: lldpad is started inside a long-lived holder process's network and mount
  namespaces (what :class:`~tests.lab.harness.vdplab.VdpLab` does), so /run and /dev/shm outlive an
  lldpad restart the way they do on a real host, and commands can run "on the host" while lldpad is down.

Roles per interface (``ifaces`` maps ifname to one of them):

* ``"station"``: EVB22 station, sends the EVB TLV and runs VDP22 requests towards a bridge;
* ``"bridge"``: EVB22 bridge (Debian's lldpad answers every VDP22 request with SUCCESS);
* ``"evb-off"``: listed with LLDP on (adminStatus rx+tx) but the EVB TLV not transmitted (negative tests);
* ``"lldp-off"``: listed with LLDP disabled (adminStatus 0);
* ``"draft"``: EVB draft 0.2 TLV and draft VDP enabled, no EVB22 (lldpad routes VSIs to its draft module;
  Debian's lldpad has no working draft bridge, so nothing answers).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from vdp.wire import netlink as nlmsg

from .netns import Daemon, Netns

__all__ = [
    "LLDPAD",
    "LLDPTOOL",
    "NETLINK_TABLE_MAX",
    "ROLES",
    "VDPTOOL",
    "Lldpad",
    "TableTooBig",
    "lldpad_config",
    "netlink_socket_in",
    "parse_vsi_table",
]

LLDPAD = "/usr/sbin/lldpad"
LLDPTOOL = "/usr/sbin/lldptool"
VDPTOOL = "/usr/sbin/vdptool"

ROLES = ("station", "bridge", "evb-off", "lldp-off", "draft")

# lldpad's adminStatus values (lldp_mand / lldpad.conf): 0 disabled, 1 tx only, 2 rx only, 3 rx and tx.
_ADMIN_RX_TX = 3
_ADMIN_DISABLED = 0


def _iface_block(ifname: str, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown lldpad role {role!r} for {ifname}: use one of {ROLES}")
    admin = _ADMIN_DISABLED if role == "lldp-off" else _ADMIN_RX_TX
    if role == "draft":
        # tlvid001b3f00 is the draft 0.2 EVB TLV (OUI 00-1b-3f); "vdp" is the draft VDP module's section.
        return (
            f"  {ifname} : {{\n"
            f"    adminStatus = {admin};\n"
            "    tlvid001b3f00 : { enableTx = true; fmode = \"reflectiverelay\"; capabilities = \"rte,ecp,vdp\"; };\n"
            "    vdp : { enableTx = true; };\n"
            "  };\n"
        )
    mode = "bridge" if role == "bridge" else "station"
    tx = "true" if role in ("station", "bridge") else "false"
    # tlvid0080c20d is the IEEE 802.1Qbg-2012 (EVB22) TLV; evbrr* ask for reflective relay.
    return (
        f"  {ifname} : {{\n"
        f"    adminStatus = {admin};\n"
        f"    tlvid0080c20d : {{ enableTx = {tx}; evbmode = \"{mode}\"; evbrrreq = true; evbrrcap = true; }};\n"
        f"  }};\n"
    )


def lldpad_config(ifaces: Mapping[str, str]) -> str:
    """The lldpad.conf text giving each interface its role (see the module docstring)."""
    body = "".join(_iface_block(name, role) for name, role in ifaces.items())
    return f"nearest_customer_bridge : {{\n{body}}};\n"


#: lldpad answers GETLINK from one 4 KiB buffer (openlldp event_iface.c MAX_PAYLOAD, qbg/vdpnl.c
#: vdpnl_getlink): 40 bytes per VSI, so the reply lists at most the first ~92 VSIs of an uplink (measured:
#: 92 of 93, 3708 bytes) and silently drops the rest.  A reply this long may be cut short.
NETLINK_TABLE_MAX = 90
_CLONE_NEWNET = 0x40000000


class TableTooBig(RuntimeError):
    """lldpad's table on an uplink is longer than its GETLINK and ``vdptool -t`` replies can show."""


def netlink_socket_in(pid: int, ifname: str) -> tuple[socket.socket, int]:
    """A NETLINK_ROUTE socket in the network namespace of process ``pid``, and ``ifname``'s index there: a
    short-lived thread enters the namespace (setns affects only the calling thread), makes the socket and
    looks the name up; the socket stays in that namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    made: dict[str, object] = {}

    def enter() -> None:
        try:
            with open(f"/proc/{pid}/ns/net", "rb") as ns:
                if libc.setns(ns.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into the network namespace of {pid}")
            made["index"] = socket.if_nametoindex(ifname)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, 0))
            made["sock"] = sock
        except BaseException as exc:  # re-raised in the caller's thread
            made["error"] = exc

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]  # type: ignore[misc]
    return made["sock"], made["index"]  # type: ignore[return-value]


_VSI_HEAD = re.compile(r"^VSI\s+(\d+):\s*$")
_VSI_FIELD = re.compile(r"^\s+(\S+)\s*=\s*(.*?)\s*$")


def parse_vsi_table(text: str) -> list[dict[str, str]]:
    """Parse ``vdptool -t -V assoc`` output ("VSI  0:" blocks of "key = value") into one dict per VSI.

    Keys are vdptool's (mode, mgrid2, typeid, typeidver, uuid, hints, filter); values are strings as
    printed.  A repeated key (several filters) keeps the values joined by a space.
    """
    table: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        head = _VSI_HEAD.match(line)
        if head:
            current = {}
            table.append(current)
            continue
        field = _VSI_FIELD.match(line)
        if field and current is not None:
            key, value = field.groups()
            current[key] = f"{current[key]} {value}" if key in current else value
    return table


class Lldpad:
    """lldpad in ``netns`` with the given interface roles; started by the constructor, stopped by pid.

    ``workdir`` receives ``lldpad.conf`` and ``lldpad.log`` (stdout/stderr, ``-V7`` debug when ``debug``).
    ``pidfile=False`` passes ``-p`` (no /run/lldpad.pid).  ``holder``: see the module docstring.
    """

    def __init__(
        self,
        netns: Netns,
        workdir: Path,
        ifaces: Mapping[str, str],
        pidfile: bool = True,
        debug: bool = False,
        *,
        holder: Daemon | None = None,
        start: bool = True,
        ready_timeout: float = 10.0,
    ) -> None:
        self.netns = netns
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ifaces = dict(ifaces)
        self.pidfile = pidfile
        self.debug = debug
        self.holder = holder
        self.ready_timeout = ready_timeout
        self.conf = self.workdir / "lldpad.conf"
        self.log = self.workdir / "lldpad.log"
        self._daemon: Daemon | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._logf: object = None
        self.pid: int | None = None
        # Every pid this object ever started, so tests can prove all of them are gone.
        self.started_pids: list[int] = []
        if start:
            self.start()

    # -- life cycle ---------------------------------------------------------------------------------

    def argv(self) -> list[str]:
        """The lldpad command line used for the next start."""
        argv = [LLDPAD, "-t", "-f", str(self.conf)]
        if not self.pidfile:
            argv.append("-p")
        if self.debug:
            argv.append("-V7")
        return argv

    def start(self) -> None:
        """Write the config (roles are fixed at start-up), start lldpad, wait for its control socket."""
        if self.alive():
            raise RuntimeError(f"lldpad {self.pid} is already running")
        self.conf.write_text(lldpad_config(self.ifaces))
        if self.holder is None:
            self._daemon = Daemon(self.netns, self.argv(), log=self.log)
            self.pid = self._daemon.pid
        else:
            logf = open(self.log, "ab")  # noqa: SIM115 - kept open for the daemon's lifetime
            self._logf = logf
            # nsenter only setns()es into net+mnt and execs (no fork without a pid namespace): the pid is lldpad's.
            self._proc = subprocess.Popen(
                self.holder.nsenter_argv(self.argv()),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.pid = self._proc.pid
        self.started_pids.append(self.pid)
        try:
            self.wait_for(self.ping, self.ready_timeout, "lldpad control socket")
        except BaseException:
            self.stop()
            raise

    def alive(self) -> bool:
        """True while the lldpad we started is running."""
        if self._daemon is not None:
            return self._daemon.alive()
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to our lldpad's pid (SIGKILL after ``timeout``); idempotent."""
        if self._daemon is not None:
            self._daemon.stop(timeout)
            self._daemon = None
        if self._proc is not None:
            if self._proc.poll() is None:
                os.kill(self._proc.pid, signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self._proc.pid, signal.SIGKILL)
                    self._proc.wait()
            self._proc = None
        if self._logf is not None:
            self._logf.close()  # type: ignore[attr-defined]
            self._logf = None

    def kill(self) -> None:
        """SIGKILL (no clean-up by lldpad: its pid file stays behind, like after a crash)."""
        if self.alive() and self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
        self.stop()

    def restart(self) -> None:
        """Stop and start again (same config, roles re-read)."""
        self.stop()
        self.start()

    def __enter__(self) -> Lldpad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- running things next to it -------------------------------------------------------------------

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run in lldpad's network and mount namespaces (sees its /run/lldpad.pid)."""
        if self.holder is not None:
            return self.holder.nsenter_argv(argv)
        if self.pid is None or not self.alive():
            raise RuntimeError("lldpad is not running (its mount namespace is gone)")
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", f"--mount=/proc/{self.pid}/ns/mnt", "--", *argv]

    def run(self, argv: Sequence[str], *, check: bool = False, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in lldpad's namespaces; text output captured unless told otherwise."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 30)
        return subprocess.run(self.nsenter_argv(argv), check=check, text=True, **kwargs)  # type: ignore[call-overload]

    def lldptool(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``lldptool ARGS`` against this lldpad."""
        return self.run([LLDPTOOL, *args], check=check)

    def vdptool(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``vdptool ARGS`` against this lldpad."""
        return self.run([VDPTOOL, *args], check=check)

    def ping(self) -> bool:
        """True when lldpad answers on its control socket (``lldptool -p``)."""
        if not self.alive():
            return False
        return self.lldptool("-p").returncode == 0

    def wait_for(self, predicate: object, timeout: float, what: str) -> None:
        """Poll ``predicate()``; raise naming ``what`` on timeout or if lldpad died."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"{what}: lldpad {self.pid} exited; see {self.log}")
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise TimeoutError(f"{what}: not within {timeout} s; see {self.log}")

    def iface_ready(self, ifname: str) -> bool:
        """lldpad has set ``ifname`` up in its role (its TLV is built; for evb-off: its config answers)."""
        role = self.ifaces[ifname]
        if role in ("station", "bridge"):
            return self.evb(ifname) != ""
        if role == "draft":
            res = self.lldptool("-t", "-i", ifname, "-g", "ncb", "-V", "evbCfg")
            return res.returncode == 0 and "draft" in res.stdout
        if role == "evb-off":
            return self.lldptool("-t", "-i", ifname, "-g", "ncb", "-V", "evb", "-c", "enableTx").returncode == 0
        return True

    def wait_ready(self, ifnames: Sequence[str] | None = None, timeout: float = 10) -> None:
        """Wait until lldpad has set up ``ifnames`` (default: all configured); right after start it has
        not, and queries about them fail with "device not found".  Interfaces must be up."""
        for ifname in self.ifaces if ifnames is None else ifnames:
            self.wait_for(lambda i=ifname: self.iface_ready(i), timeout, f"lldpad set-up of {ifname}")

    # -- state queries ------------------------------------------------------------------------------

    def evb(self, ifname: str, *, neighbour: bool = False) -> str:
        """``lldptool [-n] -t -i IF -g ncb -V evb`` output (empty string when lldpad refuses)."""
        args = ["-n"] if neighbour else []
        res = self.lldptool(*args, "-t", "-i", ifname, "-g", "ncb", "-V", "evb")
        return res.stdout if res.returncode == 0 else ""

    def evb_negotiated(self, ifname: str) -> bool:
        """True when EVB on ``ifname`` has settled with a bridge.

        The neighbour's TLV saying ``mode:bridge`` is not enough: for about a second after that the
        station's own TLV still reads ``bridge:(00)`` / ``r/l:0``, and a bridge lldpad that derives its
        keep-alive timer from that TLV de-associates a new VSI at once (measured: the VSI is gone ~1 ms
        after "Response from VDP").  Settled means: neighbour is a bridge and our TLV took its values.
        """
        if "mode:bridge" not in self.evb(ifname, neighbour=True):
            return False
        local = self.evb(ifname)
        # Our configs request reflective relay: settled once the bridge granted it (rrctr) and the
        # station reports it on (rrstat), with both timers taken from the bridge (r/l:1).
        return (
            "mode:station" in local
            and re.search(r"bridge:\S*rrctr", local) is not None
            and re.search(r"station:\S*rrstat", local) is not None
            and "r/l:0" not in local
        )

    def wait_evb(self, ifname: str, timeout: float = 10) -> None:
        """Wait until EVB on ``ifname`` has settled with a bridge (:meth:`evb_negotiated`; ~1-2 s over veth)."""
        self.wait_for(lambda: self.evb_negotiated(ifname), timeout, f"EVB negotiation on {ifname}")

    def netlink_table(self, ifname: str) -> dict[str, int | None]:
        """lldpad's VSIs on ``ifname`` over netlink (GETLINK to its pid, from inside its network namespace):
        instance -> response (None: no answer yet).  Raises :class:`TableTooBig` when the reply may have
        been cut short (see :data:`NETLINK_TABLE_MAX`).

        Like every table read (vdptool's too), it makes lldpad forget VSIs whose final state it reports
        (refused, de-associated); associated and pending VSIs stay.
        """
        if self.pid is None or not self.alive():
            raise RuntimeError("lldpad is not running")
        sock, ifindex = netlink_socket_in(self.pid, ifname)
        with sock:
            sock.settimeout(5)
            seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
            sock.sendto(
                nlmsg.encode_getlink(seq=seq, port_id=sock.getsockname()[0], ifindex=ifindex), (self.pid, 0)
            )
            while True:
                for hdr, msg in nlmsg.split_messages(sock.recv(1 << 16)):
                    if hdr.seq != seq:
                        continue
                    if hdr.type == nlmsg.NLMSG_ERROR:
                        err = nlmsg.decode_error(msg)
                        if err:
                            raise OSError(-err, f"lldpad refused GETLINK on {ifname}: {os.strerror(-err)}")
                        continue
                    rows = nlmsg.decode_ports(msg) if hdr.length > 32 else []
                    if len(rows) >= NETLINK_TABLE_MAX:
                        raise TableTooBig(f"lldpad's GETLINK reply on {ifname} lists {len(rows)} VSIs: maybe cut short")
                    return {str(r.instance): r.response for r in rows if r.instance is not None}

    def vsi_row(self, ifname: str, instance: str) -> dict[str, str] | None:
        """lldpad's row for one VSI (``vdptool -t -V assoc -c uuid=U``, which works at any table size)."""
        res = self.vdptool("-i", ifname, "-t", "-V", "assoc", "-c", f"uuid={instance}")
        rows = [r for r in parse_vsi_table(res.stdout) if r.get("uuid", "").lower() == instance.lower()]
        return rows[0] if res.returncode == 0 and rows else None

    def vsi_uuids(self, ifname: str, candidates: Iterable[str] = ()) -> set[str]:
        """The instances lldpad lists on ``ifname`` (GETLINK, or vdptool for one instance; VSIs lldpad ended
        but still lists are in): everything when the table is short enough to list,
        else (:class:`TableTooBig` from the listing) those of ``candidates`` it holds, asked one by one --
        never a blind "nothing" (``vdptool -t`` prints nothing past ~32 VSIs, GETLINK stops at ~92)."""
        wanted = {str(uuidlib.UUID(c)) for c in candidates}
        try:
            listed = set(self.netlink_table(ifname))
        except TableTooBig:
            if not wanted:
                raise
            listed = set()
        return listed | {c for c in wanted - listed if self.vsi_row(ifname, c) is not None}

    def vsi_table(self, ifname: str, candidates: Iterable[str] = ()) -> list[dict[str, str]]:
        """lldpad's VSIs on ``ifname`` as ``vdptool -t`` shows them, one row each (keys mode, mgrid2, typeid,
        typeidver, uuid, hints, filter), at any table size: every instance :meth:`vsi_uuids` finds, asked
        one by one.  A VSI that only GETLINK still lists (one lldpad ended without an answer from the switch
        stays there "in progress" until lldpad restarts) has no row.  Raises :class:`TableTooBig` rather
        than read a long table blind."""
        rows = (self.vsi_row(ifname, instance) for instance in sorted(self.vsi_uuids(ifname, candidates)))
        return [row for row in rows if row is not None]

    def vdp_assoc(
        self,
        ifname: str,
        *,
        mode: str = "assoc",
        uuid: str,
        mac: str = "52:54:00:11:22:33",
        vlan: int = 0,
        mgrid: str = "m",
        typeid: int = 5,
        typeidver: int = 4,
        hints: str = "none",
        wait: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Drive one VSI request with vdptool (``-T -W`` waits for the bridge's answer); for cross-checks."""
        args = ["-i", ifname, "-T"] + (["-W"] if wait else []) + ["-V", mode]
        for key, value in (
            ("mode", mode),
            ("mgrid2", mgrid),
            ("typeid", str(typeid)),
            ("uuid", uuid),
            ("typeidver", str(typeidver)),
            ("hints", hints),
            ("filter", f"{vlan}-{mac}"),
        ):
            args += ["-c", f"{key}={value}"]
        return self.vdptool(*args)
