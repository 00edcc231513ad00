"""Record the netlink bytes real libvirtd 9.0 sends for 802.1Qbg and 802.1Qbh port profiles.

Two recorders, both against the real daemon from :mod:`tests.lab.harness.libvirt`:

* 802.1Qbg: libvirtd sends VDP requests to lldpad, whose pid it reads from ``/run/lldpad.pid``.
  :class:`LldpadPoser` (run with ``python -m tests.lab.harness.capture peer OUT``) binds a
  NETLINK_ROUTE socket to its own pid inside the daemon's network namespace, writes that pid into
  the daemon's private ``/run/lldpad.pid``, records every message, acks RTM_SETLINK with
  NLMSG_ERROR 0 and answers RTM_GETLINK the way lldpad does (NLMSG_DONE carrying IFLA_VF_PORTS
  with PORT_RESPONSE 0).
* 802.1Qbh: the request goes to the kernel, which answers -EOPNOTSUPP on an ifb; the bytes are
  taken from ``strace -e write=all`` hex dumps of libvirtd's sendto/sendmsg.

libvirt 9.0 refuses to send Qbg requests while its netlink event socket has a port id >= 2^31
(libnl seeds port ids from time()); :func:`start_low_port_host` restarts the daemon under the
``timeshift.c`` LD_PRELOAD shim with different time() shifts until the port id is usable.

``python -m tests.lab.harness.capture record OUTDIR`` runs everything and writes the JSON vectors
(see tests/golden/README.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .libvirt import LibvirtHost, Nic, guest_xml, link_hosts, migrate
from .netns import Netns, unique_suffix

__all__ = [
    "LldpadPoser",
    "attr_tree",
    "build_timeshift",
    "find_request",
    "libvirtd_netlink_ports",
    "message_vector",
    "parse_strace_dumps",
    "poser",
    "qbg_vectors",
    "qbh_vectors",
    "read_jsonl",
    "record_qbg",
    "record_qbh",
    "start_low_port_host",
]

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETLINK, RTM_SETLINK = 18, 19
NLA_F_NESTED = 0x8000
IFLA_IFNAME, IFLA_VF_PORTS, IFLA_PORT_SELF = 3, 24, 25
IFLA_VF_PORT = 1
IFLA_PORT_VF, IFLA_PORT_INSTANCE_UUID, IFLA_PORT_REQUEST, IFLA_PORT_RESPONSE = 1, 4, 6, 7
PORT_SELF_VF = 0xFFFFFFFF
REQUEST_NAMES = {0: "PREASSOCIATE", 1: "PREASSOCIATE_RR", 2: "ASSOCIATE", 3: "DISASSOCIATE"}

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_REPO = Path(__file__).resolve().parents[3]

# -- netlink helpers (only what the recorder needs) -------------------------------------------


def _nla(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, atype) + payload + b"\0" * ((4 - length % 4) % 4)


def iter_nla(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type without flag bits, payload) for each attribute in ``data``."""
    off = 0
    while off + 4 <= len(data):
        length, atype = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        yield atype & 0x3FFF, data[off + 4 : off + length]
        off += (length + 3) & ~3


def find_request(msg: bytes) -> dict[str, Any]:
    """Decode the interesting parts of a port-profile RTM_SETLINK (request, uuid, vf, self/vf)."""
    out: dict[str, Any] = {}
    for atype, payload in iter_nla(msg[_HDR.size + _IFINFO.size :]):
        if atype in (IFLA_VF_PORTS, IFLA_PORT_SELF):
            ports = [p for t, p in iter_nla(payload) if t == IFLA_VF_PORT] if atype == IFLA_VF_PORTS else [payload]
            out["container"] = "IFLA_VF_PORTS" if atype == IFLA_VF_PORTS else "IFLA_PORT_SELF"
            for port in ports:
                for ptype, pval in iter_nla(port):
                    if ptype == IFLA_PORT_REQUEST:
                        out["request"] = REQUEST_NAMES.get(pval[0], pval[0])
                    elif ptype == IFLA_PORT_INSTANCE_UUID:
                        out["instance_uuid"] = str(uuidlib.UUID(bytes=pval[:16]))
                    elif ptype == IFLA_PORT_VF:
                        out["vf"] = struct.unpack("=I", pval[:4])[0]
    return out


# -- the lldpad poser --------------------------------------------------------------------------


class LldpadPoser:
    """Stands in for lldpad on its netlink side; records every message it receives and sends.

    Must run inside the daemon's network and mount namespaces (``Daemon.nsenter_argv``).
    """

    def __init__(self, out: Path, pidfile: Path = Path("/run/lldpad.pid")) -> None:
        self.out = open(out, "a", buffering=1)  # noqa: SIM115 - line-buffered log for the lifetime
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((os.getpid(), 0))
        self.port = self.sock.getsockname()[0]
        self.uuids: dict[int, list[bytes]] = {}  # ifindex -> instance uuids associated
        self.leaving: dict[int, list[bytes]] = {}  # ifindex -> de-associated, listed one more poll
        pidfile.write_text(f"{self.port}\n")
        self._log({"event": "ready", "port": self.port})

    def _log(self, rec: dict[str, Any]) -> None:
        rec["t"] = time.time()
        self.out.write(json.dumps(rec) + "\n")

    def serve(self) -> None:
        """Answer until SIGTERM."""
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        self.sock.settimeout(0.2)
        while not stop:
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except InterruptedError:
                continue
            self.handle(data, addr[0])

    def handle(self, data: bytes, sender: int) -> None:
        length, mtype, _flags, seq, _pid = _HDR.unpack_from(data)
        msg = data[:length]
        self._log({"event": "recv", "from_port": sender, "hex": msg.hex()})
        if mtype == RTM_SETLINK:
            ifindex = _IFINFO.unpack_from(msg, _HDR.size)[2]
            req = find_request(msg)
            uid = uuidlib.UUID(req["instance_uuid"]).bytes if "instance_uuid" in req else None
            known = self.uuids.setdefault(ifindex, [])
            if uid is not None and req.get("request") != "DISASSOCIATE" and uid not in known:
                known.append(uid)
            if uid is not None and req.get("request") == "DISASSOCIATE" and uid in known:
                # Like lldpad: the first poll after a de-association still lists the VSI with its
                # old status; it is gone from the poll after that.
                self.leaving.setdefault(ifindex, []).append(uid)
            body = struct.pack("=i", 0) + msg[: _HDR.size]
            reply = _HDR.pack(_HDR.size + len(body), NLMSG_ERROR, 0, seq, self.port) + body
        elif mtype == RTM_GETLINK:
            ifindex = _IFINFO.unpack_from(msg, _HDR.size)[2]
            ports = b"".join(
                _nla(
                    IFLA_VF_PORT | NLA_F_NESTED,
                    _nla(IFLA_PORT_INSTANCE_UUID, uid)
                    + _nla(IFLA_PORT_VF, struct.pack("=I", PORT_SELF_VF))
                    + _nla(IFLA_PORT_RESPONSE, struct.pack("=H", 0)),
                )
                for uid in self.uuids.get(ifindex, [])
            )
            for uid in self.leaving.pop(ifindex, []):
                with contextlib.suppress(ValueError):
                    self.uuids[ifindex].remove(uid)
            body = _IFINFO.pack(0, 0, ifindex, 0, 0) + _nla(IFLA_VF_PORTS | NLA_F_NESTED, ports)
            reply = _HDR.pack(_HDR.size + len(body), NLMSG_DONE, 0, seq, self.port) + body
        else:
            return
        self.sock.sendto(reply, (sender, 0))
        self._log({"event": "send", "to_port": sender, "hex": reply.hex()})


@contextlib.contextmanager
def poser(host: LibvirtHost, out: Path) -> Iterator[Path]:
    """Run an :class:`LldpadPoser` in ``host``'s namespaces for the duration of the block."""
    if host.daemon is None:
        raise RuntimeError(f"libvirtd {host.name} is not running")
    out.write_text("")
    proc = subprocess.Popen(
        host.daemon.nsenter_argv([sys.executable, "-m", "tests.lab.harness.capture", "peer", str(out)]),
        # Entering a mount namespace resets the cwd to its root: find the package by PYTHONPATH.
        env={**os.environ, "PYTHONPATH": str(_REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(str(out) + ".stderr", "w"),  # noqa: SIM115
    )
    try:
        end = time.monotonic() + 10
        while '"ready"' not in out.read_text():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"lldpad poser did not start: {Path(str(out) + '.stderr').read_text()}")
            time.sleep(0.02)
        yield out
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The poser's records (one JSON object per line)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- libvirtd with a usable netlink port id ----------------------------------------------------


def build_timeshift(workdir: Path) -> Path:
    """Compile timeshift.c into ``workdir`` (never into the repo); returns the .so path."""
    so = Path(workdir) / "libvdph-timeshift.so"
    src = Path(__file__).with_name("timeshift.c")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(so), str(src)], check=True)
    return so


def libvirtd_netlink_ports(pid: int) -> list[tuple[int, int]]:
    """(protocol, port id) of every netlink socket ``pid`` holds, from /proc (netns-correct)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            m = re.match(r"socket:\[(\d+)\]", os.readlink(fd))
            if m:
                inodes.add(int(m.group(1)))
    ports = []
    for line in Path(f"/proc/{pid}/net/netlink").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[-1]) in inodes:
            ports.append((int(f[1]), int(f[2])))
    return ports


def start_low_port_host(
    host: LibvirtHost, shim: Path, *, tries: int = 25, attempts: list[dict[str, Any]] | None = None
) -> tuple[int, int]:
    """(Re)start ``host``'s libvirtd under the time() shim until its NETLINK_ROUTE ports are < 2^31.

    Returns (shift used, event port); each try is appended to ``attempts``.  Every start is
    tracked and stopped by pid.
    """
    for attempt in range(tries):
        shift = attempt * 307
        host.env.update({"LD_PRELOAD": str(shim), "VDPH_TIME_SHIFT": str(shift)})
        host.start()
        route = [p for proto, p in libvirtd_netlink_ports(host.pid) if proto == NETLINK_ROUTE]
        if attempts is not None:
            attempts.append({"shift": shift, "pid": host.pid, "route_ports": route})
        if route and all(p < 2**31 for p in route):
            return shift, max(route)
        host.stop()
    raise RuntimeError(f"no libvirtd start with netlink port ids < 2^31 in {tries} tries")


# -- recording ---------------------------------------------------------------------------------

QBG: dict[str, Any] = {
    "managerid": 11,
    "typeid": 1193047,
    "typeidversion": 2,
    "instanceid": "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f",
    "mac": "52:54:00:aa:00:02",
}
QBH: dict[str, Any] = {"profileid": "finance-10", "mac": "52:54:00:aa:00:03"}
HOOK_SCRIPT = '#!/bin/sh\ncat >/dev/null\necho "$(date +%s.%N) $*" >> {log}\n'


def _versions() -> dict[str, str]:
    def pkg(name: str) -> str:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, check=False)
        return r.stdout.strip()

    return {
        "libvirt-daemon": pkg("libvirt-daemon"),
        "qemu-system-x86": pkg("qemu-system-x86"),
        "libnl-3-200": pkg("libnl-3-200"),
        "strace": pkg("strace"),
        "kernel": os.uname().release,
    }


def _hook_events(log: Path, host: str) -> list[dict[str, Any]]:
    events = []
    if log.exists():
        for line in log.read_text().splitlines():
            t, _, rest = line.partition(" ")
            events.append({"t": float(t), "host": host, "event": "hook", "argv": rest})
    return events


def _decode_header(msg: bytes) -> dict[str, Any]:
    length, mtype, flags, seq, pid = _HDR.unpack_from(msg)
    fields: dict[str, Any] = {
        "nlmsg_len": length,
        "nlmsg_type": mtype,
        "nlmsg_flags": flags,
        "nlmsg_seq": seq,
        "nlmsg_pid": pid,
    }
    if len(msg) >= _HDR.size + _IFINFO.size and mtype in (RTM_GETLINK, RTM_SETLINK, NLMSG_DONE):
        fields["ifindex"] = _IFINFO.unpack_from(msg, _HDR.size)[2]
    if mtype == NLMSG_ERROR:
        fields["error"] = struct.unpack_from("=i", msg, _HDR.size)[0]
    return fields


def _timeline(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in sorted(events, key=lambda e: e["t"]):
        if e["event"] == "hook":
            out.append(f"{e['host']}: hook {e['argv']}")
        else:
            msg = bytes.fromhex(e["hex"])
            f = _decode_header(msg)
            what = {RTM_SETLINK: "RTM_SETLINK", RTM_GETLINK: "RTM_GETLINK", NLMSG_ERROR: "NLMSG_ERROR",
                    NLMSG_DONE: "NLMSG_DONE"}.get(f["nlmsg_type"], str(f["nlmsg_type"]))
            if f["nlmsg_type"] == RTM_SETLINK:
                what += " " + str(find_request(msg).get("request"))
            arrow = "libvirtd -> lldpad" if e["event"] == "recv" else "lldpad -> libvirtd"
            out.append(f"{e['host']}: {arrow} {what} seq={f['nlmsg_seq']}")
    return out


def record_qbg(workdir: Path) -> dict[str, Any]:
    """Start on A, migrate A -> B, destroy on B; both daemons talk to an lldpad poser."""
    sfx = unique_suffix()
    shim = build_timeshift(workdir)
    hooklog = {n: workdir / f"hooks-{n}.log" for n in "AB"}
    hosts: dict[str, LibvirtHost] = {}
    nets: list[Netns] = []
    events: list[dict[str, Any]] = []
    host_uuids = {"A": "aaaaaaaa-0000-4000-8000-00000000000a", "B": "bbbbbbbb-0000-4000-8000-00000000000b"}
    info: dict[str, Any] = {}
    try:
        for n in "AB":
            ns = Netns(f"vg{n.lower()}{sfx}")
            nets.append(ns)
            if n == "B":
                # A spare device first, so uplink0's ifindex differs between the hosts (3 vs 2).
                ns.run(["ip", "link", "add", "spare0", "type", "ifb"])
            ns.run(["ip", "link", "add", "uplink0", "type", "ifb"])
            ns.run(["ip", "link", "set", "uplink0", "up"])
            hook = workdir / f"hook-{n}.sh"
            hook.write_text(HOOK_SCRIPT.format(log=hooklog[n]))
            hook.chmod(0o755)
            hosts[n] = LibvirtHost(
                f"qbg{n}", ns, workdir, host_uuid=host_uuids[n], hooks={"qemu.d/10-log": hook},
                migration_port_base=49100 + 100 * (n == "B"), start=False,
            )
            tried: list[dict[str, Any]] = []
            shift, port = start_low_port_host(hosts[n], shim, attempts=tried)
            info[n] = {
                "start_attempts": tried,
                "time_shift": shift,
                "event_port": port,
                "libvirtd_pid": hosts[n].pid,
                "ifindex_uplink0": int(ns.run(["cat", "/sys/class/net/uplink0/ifindex"]).stdout),
                "netlink_ports": libvirtd_netlink_ports(hosts[n].pid),
            }
        a, b = hosts["A"], hosts["B"]
        link_hosts(a, b, suffix=sfx)
        vport = (
            "<virtualport type='802.1Qbg'><parameters managerid='{managerid}' typeid='{typeid}' "
            "typeidversion='{typeidversion}' instanceid='{instanceid}'/></virtualport>".format(**QBG)
        )
        dom_uuid = "5e1f0c3a-7d3b-4c55-9a61-3f9e2b8d0c01"
        xml = guest_xml("qbg1", dom_uuid, [Nic(QBG["mac"], kind="direct", dev="uplink0", virtualport=vport)])
        (workdir / "qbg1.xml").write_text(xml)
        with poser(a, workdir / "peer-A.jsonl") as pa, poser(b, workdir / "peer-B.jsonl") as pb:
            a.virsh("create", str(workdir / "qbg1.xml"))
            time.sleep(0.3)
            r = migrate(a, b, "qbg1", timeout=60)
            info["migrate"] = {"rc": r.returncode, "stderr": r.stderr.strip()}
            time.sleep(0.3)
            on_b = b.guests()
            if "qbg1" in on_b:
                b.virsh("destroy", "qbg1")
            else:
                a.virsh("destroy", "qbg1", check=False)
            time.sleep(0.3)
            for n, p in (("A", pa), ("B", pb)):
                for rec in read_jsonl(p):
                    if rec["event"] in ("recv", "send"):
                        rec["host"] = n
                        events.append(rec)
        for n in "AB":
            events += _hook_events(hooklog[n], n)
        info["logs"] = {n: hosts[n].log_path.read_text()[-4000:] for n in "AB"}
    finally:
        for h in hosts.values():
            h.close()
        for ns in nets:
            ns.close()
    return {"events": sorted(events, key=lambda e: e["t"]), "info": info, "host_uuids": host_uuids,
            "domain_uuid": dom_uuid}


_STRACE_DUMP = re.compile(r"^ \| ([0-9a-f]{5})  (.{49})")
RTNL_TYPES = {16: "RTM_NEWLINK", 17: "RTM_DELLINK", RTM_GETLINK: "RTM_GETLINK", RTM_SETLINK: "RTM_SETLINK"}


def parse_strace_dumps(text: str) -> list[dict[str, Any]]:
    """Messages from ``strace -e write=all`` hex dumps following each sendto/sendmsg line.

    A dump line is `` | OFFSET  16 hex bytes in two groups  ascii |``; the hex area has a fixed
    width of 49 columns (the ascii column may itself look like hex, so it is cut off by position).
    """
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        m = _STRACE_DUMP.match(line)
        if m and cur is not None:
            if int(m.group(1), 16) != len(cur["bytes"]):
                raise ValueError(f"strace dump out of order: {line!r}")
            cur["bytes"] += bytes.fromhex(m.group(2).replace(" ", ""))
            continue
        if re.search(r"\b(sendto|sendmsg)\(", line):
            pid, t = line.split()[:2]
            cur = {"tid": int(pid), "t": float(t), "syscall": line.strip(), "bytes": b""}
            out.append(cur)
        elif cur is not None and not line.startswith(" "):
            cur = None
    return out


def _rtnl_only(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep link messages sent to the kernel on NETLINK_ROUTE (drops the audit socket's records)."""
    keep = []
    for m in msgs:
        b = m["bytes"]
        if len(b) >= 16 and _HDR.unpack_from(b)[1] in RTNL_TYPES and _HDR.unpack_from(b)[0] == len(b):
            keep.append(m)
    return keep


def _dest_xml(xml: str, vport: str, dev: str) -> str:
    """The migratable XML with the (only) direct interface moved to ``dev`` and given ``vport``."""
    head, sep, tail = xml.partition("</interface>")
    if not sep or "dev='uplink0'" not in head:
        raise ValueError("no direct interface on uplink0 in the migratable XML")
    return head.replace("dev='uplink0'", f"dev='{dev}'") + vport + sep + tail


# A fake SR-IOV topology for the daemon's private mount namespace: libvirt decides "VF of which PF,
# which index" from sysfs only (/sys/class/net/DEV/device/physfn, PF's device/virtfnN, PF's
# device/net/).  vf0 becomes VF 1 of pf0 (both are ifbs); tmpfs hides the real sysfs dirs of just
# these two devices (their plain attribute files are copied over).
_FAKE_SRIOV = r"""
set -e
P=/run/vdph-fakepci
mkdir -p $P/0000:01:00.0/net/pf0 $P/0000:01:00.1/net $P/0000:01:00.2/net/vf0
ln -s ../0000:01:00.1 $P/0000:01:00.0/virtfn0
ln -s ../0000:01:00.2 $P/0000:01:00.0/virtfn1
echo 2 > $P/0000:01:00.0/sriov_totalvfs
echo 2 > $P/0000:01:00.0/sriov_numvfs
ln -s ../0000:01:00.0 $P/0000:01:00.1/physfn
ln -s ../0000:01:00.0 $P/0000:01:00.2/physfn
for dev in pf0 vf0; do
    S=/sys/devices/virtual/net/$dev
    T=/run/vdph-sysfs-$dev
    mkdir -p $T
    for f in $S/*; do
        if [ -f "$f" ]; then cat "$f" > "$T/${f##*/}" 2>/dev/null || true; fi
    done
    mount -t tmpfs tmpfs $S
    cp -a $T/. $S/
done
ln -s $P/0000:01:00.0 /sys/devices/virtual/net/pf0/device
ln -s $P/0000:01:00.2 /sys/devices/virtual/net/vf0/device
"""


def record_qbh(workdir: Path) -> dict[str, Any]:
    """802.1Qbh on ifbs: strace host B's libvirtd through four cases (the kernel says -EOPNOTSUPP to each).

    ``qbh1``: start on B, NIC on ``uplink0`` (not a VF: IFLA_PORT_SELF) -> ASSOCIATE.
    ``qbh2``: a guest without a profile migrates A -> B; ``--xml`` adds the profile -> PREASSOCIATE_RR.
    ``qbh3``/``qbh4``: the same on ``vf0``, made VF 1 of ``pf0`` by a fake sysfs in B's private
    mount namespace (IFLA_VF_PORTS with PORT_VF on the PF's ifindex).
    """
    sfx = unique_suffix()
    info: dict[str, Any] = {"cases": {}}
    nets: list[Netns] = []
    hosts: dict[str, LibvirtHost] = {}
    strace: subprocess.Popen[bytes] | None = None
    host_uuids = {"A": "aaaaaaaa-0000-4000-8000-0000000000ca", "B": "cccccccc-0000-4000-8000-00000000000c"}
    dom_uuids = {f"qbh{i}": f"5e1f0c3a-7d3b-4c55-9a61-3f9e2b8d0c0{i + 1}" for i in range(1, 5)}
    hooklog = {n: workdir / f"hooks-qbh-{n}.log" for n in "AB"}
    trace = workdir / "qbh.strace"
    vport = f"<virtualport type='802.1Qbh'><parameters profileid='{QBH['profileid']}'/></virtualport>"
    try:
        for n in "AB":
            ns = Netns(f"vq{n.lower()}{sfx}")
            nets.append(ns)
            for dev in ("uplink0", "pf0", "vf0") if n == "B" else ("uplink0",):
                ns.run(["ip", "link", "add", dev, "type", "ifb"])
                ns.run(["ip", "link", "set", dev, "up"])
            hook = workdir / f"hook-qbh-{n}.sh"
            hook.write_text(HOOK_SCRIPT.format(log=hooklog[n]))
            hook.chmod(0o755)
            hosts[n] = LibvirtHost(f"qbh{n}", ns, workdir, host_uuid=host_uuids[n], hooks={"qemu.d/10-log": hook},
                                   migration_port_base=49300 + 100 * (n == "B"))
            info[n] = {"libvirtd_pid": hosts[n].pid}
            for dev in ("uplink0", "pf0", "vf0") if n == "B" else ("uplink0",):
                info[n][f"ifindex_{dev}"] = int(ns.run(["cat", f"/sys/class/net/{dev}/ifindex"]).stdout)
        a, b = hosts["A"], hosts["B"]
        assert b.daemon is not None
        b.daemon.run(["sh", "-c", _FAKE_SRIOV])
        link_hosts(a, b, suffix=sfx)
        errlog = open(workdir / "strace.stderr", "w")  # noqa: SIM115
        strace = subprocess.Popen(
            ["strace", "-f", "-p", str(b.pid), "-e", "trace=sendto,sendmsg", "-e", "write=all",
             "-xx", "-s", "4096", "-ttt", "-o", str(trace)],
            stdout=subprocess.DEVNULL, stderr=errlog,
        )
        time.sleep(1.0)  # let strace attach to every thread
        for name, dev, how in (("qbh1", "uplink0", "start"), ("qbh2", "uplink0", "migrate"),
                               ("qbh3", "vf0", "start"), ("qbh4", "vf0", "migrate")):
            if how == "start":
                xml = guest_xml(name, dom_uuids[name], [Nic(QBH["mac"], kind="direct", dev=dev, virtualport=vport)])
                (workdir / f"{name}.xml").write_text(xml)
                r = b.virsh("create", str(workdir / f"{name}.xml"), check=False)
                info["cases"][name] = {"how": "virsh create on B", "dev": dev, "rc": r.returncode,
                                       "stderr": r.stderr.strip()}
                if name in b.guests():
                    b.virsh("destroy", name, check=False)
            else:
                xml = guest_xml(name, dom_uuids[name], [Nic(QBH["mac"], kind="direct", dev="uplink0")])
                (workdir / f"{name}.xml").write_text(xml)
                a.virsh("create", str(workdir / f"{name}.xml"))
                dest = _dest_xml(a.virsh("dumpxml", "--migratable", name).stdout, vport, dev)
                (workdir / f"{name}-dest.xml").write_text(dest)
                r = migrate(a, b, name, xml_file=workdir / f"{name}-dest.xml")
                info["cases"][name] = {"how": "migrate A -> B, --xml adds the profile", "dev": dev,
                                       "rc": r.returncode, "stderr": r.stderr.strip(), "guests_on_A": a.guests()}
                a.virsh("destroy", name, check=False)
        time.sleep(0.5)
    finally:
        if strace is not None and strace.poll() is None:
            os.kill(strace.pid, signal.SIGINT)
            strace.wait(10)
        for h in hosts.values():
            h.close()
        for ns in nets:
            ns.close()
    text = trace.read_text()
    msgs = _rtnl_only(parse_strace_dumps(text))
    hooks = _hook_events(hooklog["A"], "A") + _hook_events(hooklog["B"], "B")
    return {"messages": msgs, "hooks": hooks, "info": info, "host_uuids": host_uuids, "domain_uuids": dom_uuids}


# -- golden vectors ------------------------------------------------------------------------------

_IFLA_NAMES = {3: "IFLA_IFNAME", 22: "IFLA_VFINFO_LIST", 24: "IFLA_VF_PORTS", 25: "IFLA_PORT_SELF", 29: "IFLA_EXT_MASK"}
_NESTED_NAMES = {
    "IFLA_VFINFO_LIST": {1: "IFLA_VF_INFO"},
    "IFLA_VF_INFO": {1: "IFLA_VF_MAC", 2: "IFLA_VF_VLAN"},
    "IFLA_VF_PORTS": {1: "IFLA_VF_PORT"},
    "IFLA_VF_PORT": {1: "IFLA_PORT_VF", 2: "IFLA_PORT_PROFILE", 3: "IFLA_PORT_VSI_TYPE", 4: "IFLA_PORT_INSTANCE_UUID",
                     5: "IFLA_PORT_HOST_UUID", 6: "IFLA_PORT_REQUEST", 7: "IFLA_PORT_RESPONSE"},
}
_NESTED_NAMES["IFLA_PORT_SELF"] = _NESTED_NAMES["IFLA_VF_PORT"]


def attr_tree(data: bytes, names: dict[int, str]) -> list[dict[str, Any]]:
    """Attributes as JSON: name, type, flags, length; nested ones recursively, leaves as hex."""
    out = []
    off = 0
    while off + 4 <= len(data):
        length, raw = struct.unpack_from("=HH", data, off)
        atype = raw & 0x3FFF
        name = names.get(atype, str(atype))
        node: dict[str, Any] = {"name": name, "type": atype, "flags": raw & 0xC000, "len": length}
        payload = data[off + 4 : off + length]
        if raw & NLA_F_NESTED or name in _NESTED_NAMES:
            node["attrs"] = attr_tree(payload, _NESTED_NAMES.get(name, {}))
        else:
            node["hex"] = payload.hex()
        out.append(node)
        off += (length + 3) & ~3
    return out


def _flat(tree: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in tree:
        if "attrs" in n:
            out.update(_flat(n["attrs"]))
        else:
            out.setdefault(n["name"], n["hex"])
    return out


def message_vector(name: str, msg: bytes, **extra: Any) -> dict[str, Any]:
    """One golden message: hex, header and ifinfomsg fields, the varying fields, attribute tree."""
    length, mtype, flags, seq, pid = _HDR.unpack_from(msg)
    vec: dict[str, Any] = {"name": name, **extra, "length": len(msg), "hex": msg.hex()}
    vec["header"] = {"nlmsg_len": length, "nlmsg_type": mtype, "nlmsg_flags": flags, "nlmsg_seq": seq, "nlmsg_pid": pid}
    varying: dict[str, Any] = {"nlmsg_seq": seq, "nlmsg_pid": pid}
    if mtype in (RTM_GETLINK, RTM_SETLINK, NLMSG_DONE, 16, 17):
        fam, itype, index, iflags, change = _IFINFO.unpack_from(msg, _HDR.size)
        vec["ifinfomsg"] = {"ifi_family": fam, "ifi_type": itype, "ifi_index": index, "ifi_flags": iflags,
                            "ifi_change": change}
        varying["ifindex"] = index
        tree = attr_tree(msg[_HDR.size + _IFINFO.size :], _IFLA_NAMES)
        vec["attrs"] = tree
        flat = _flat(tree)
        if "IFLA_VF_VLAN" in flat:
            varying["vlan"] = struct.unpack("=III", bytes.fromhex(flat["IFLA_VF_VLAN"]))[1]
        if "IFLA_PORT_HOST_UUID" in flat:
            varying["host_uuid"] = str(uuidlib.UUID(bytes=bytes.fromhex(flat["IFLA_PORT_HOST_UUID"])))
        if "IFLA_PORT_INSTANCE_UUID" in flat:
            vec["instance_uuid"] = str(uuidlib.UUID(bytes=bytes.fromhex(flat["IFLA_PORT_INSTANCE_UUID"])))
        if "IFLA_PORT_REQUEST" in flat:
            vec["request"] = REQUEST_NAMES[bytes.fromhex(flat["IFLA_PORT_REQUEST"])[0]]
    elif mtype == NLMSG_ERROR:
        vec["error"] = struct.unpack_from("=i", msg, _HDR.size)[0]
    vec["varying"] = varying
    return vec


def _phase(t: float, host: str, hooks: list[dict[str, Any]]) -> str:
    mine = sorted((h for h in hooks if h["host"] == host), key=lambda h: h["t"])
    before = [h["argv"] for h in mine if h["t"] <= t]
    after = [h["argv"] for h in mine if h["t"] > t]
    return f"after hook '{before[-1] if before else '-'}', before hook '{after[0] if after else '-'}'"


def qbg_vectors(raw: dict[str, Any]) -> dict[str, Any]:
    """The Qbg golden file from a :func:`record_qbg` result."""
    hooks = [e for e in raw["events"] if e["event"] == "hook"]
    msgs = []
    last_req: dict[str, str] = {}
    contexts = {
        ("A", "ASSOCIATE"): "start on A (virsh create)",
        ("B", "PREASSOCIATE"): "incoming migration on B, Prepare phase",
        ("B", "ASSOCIATE"): "incoming migration on B, Finish phase",
        ("A", "DISASSOCIATE"): "outgoing migration done on A (source guest stopped)",
        ("B", "DISASSOCIATE"): "virsh destroy on B",
    }
    counts: dict[str, int] = {}
    for e in raw["events"]:
        if e["event"] not in ("recv", "send"):
            continue
        msg = bytes.fromhex(e["hex"])
        mtype = _HDR.unpack_from(msg)[1]
        host = e["host"]
        if mtype == RTM_SETLINK and e["event"] == "recv":
            last_req[host] = str(find_request(msg)["request"])
        req = last_req.get(host, "?")
        kind = {RTM_SETLINK: "setlink", RTM_GETLINK: "getlink", NLMSG_ERROR: "ack", NLMSG_DONE: "getlink_reply"}[mtype]
        base = f"{host}_{req.lower()}_{kind}"
        counts[base] = counts.get(base, 0) + 1
        extra: dict[str, Any] = {
            "host": host,
            "context": contexts.get((host, req), ""),
            "phase": _phase(e["t"], host, hooks),
        }
        if e["event"] == "recv":
            extra.update(origin="real libvirtd 9.0.0", destination="lldpad (port id from /run/lldpad.pid)",
                         sender_port=e["from_port"])
        else:
            extra.update(origin="capture.py lldpad poser (NOT real lldpad)", destination="libvirtd",
                         sender_port=None)
        vec = message_vector(base + (f"_{counts[base]}" if counts[base] > 1 else ""), msg, **extra)
        vec["varying"]["sending_socket_port"] = extra["sender_port"]
        msgs.append(vec)
    info = raw["info"]
    return {
        "format": "vdph-golden-1",
        "what": "802.1Qbg (VDP via lldpad) netlink messages sent by real libvirtd 9.0 for an "
                "<interface type='direct'> with <virtualport type='802.1Qbg'>",
        "port": {"type": "802.1Qbg", **QBG, "vlan": 0, "vf": -1, "uplink": "uplink0 (ifb)",
                 "source_mode": "vepa"},
        "domain_uuid": raw["domain_uuid"],
        "host_uuids": raw["host_uuids"],
        "hosts": {n: {k: info[n][k] for k in ("event_port", "libvirtd_pid", "ifindex_uplink0", "time_shift",
                                              "start_attempts")}
                  for n in "AB"},
        "migration": info.get("migrate"),
        "timeline": _timeline(raw["events"]),
        "versions": raw.get("versions", {}),
        "messages": msgs,
    }


def qbh_vectors(raw: dict[str, Any]) -> dict[str, Any]:
    """The Qbh golden file from a :func:`record_qbh` result."""
    msgs = []
    names = {16: "newlink_macvtap", 17: "dellink_macvtap", RTM_SETLINK: "setlink", RTM_GETLINK: "getlink"}
    info = raw["info"]
    cases = info["cases"]
    for m in raw["messages"]:
        msg = bytes.fromhex(m["bytes"]) if isinstance(m["bytes"], str) else m["bytes"]
        mtype = _HDR.unpack_from(msg)[1]
        phase = _phase(m["t"], "B", raw["hooks"])
        case = phase.split("'")[1].split()[0]  # the guest named by the hook call just before
        kind = "vf" if cases[case]["dev"] == "vf0" else "self"
        if mtype == RTM_SETLINK:
            name = f"{case}_{kind}_{str(find_request(msg).get('request')).lower()}_setlink"
            context = f"{cases[case]['how']}, NIC on {cases[case]['dev']}"
        else:
            name = f"{case}_{names[mtype]}"
            context = "macvtap set-up/tear-down around the request"
        vec = message_vector(
            name, msg, host="B", case=case, context=context, phase=phase,
            origin="real libvirtd 9.0.0 (strace -e write=all)",
            destination="kernel (nl_pid 0); answered -EOPNOTSUPP (ifb has no ndo_set_vf_port)",
        )
        if mtype == RTM_SETLINK:
            vec["varying"]["port_vf"] = find_request(msg).get("vf")
        msgs.append(vec)
    return {
        "format": "vdph-golden-1",
        "what": "802.1Qbh (port profile via the kernel) netlink messages sent by real libvirtd 9.0 for an "
                "<interface type='direct'> with <virtualport type='802.1Qbh'>: on a device that is not a VF "
                "(IFLA_PORT_SELF; qbh1, qbh2) and on a VF (IFLA_VF_PORTS with PORT_VF on the PF; qbh3, qbh4; "
                "the SR-IOV topology is a fake sysfs, the bytes are libvirt's)",
        "port": {"type": "802.1Qbh", **QBH, "source_mode": "vepa"},
        "devices": {
            "uplink0": "ifb, not a VF: libvirt sends IFLA_PORT_SELF on its ifindex",
            "pf0": "ifb posing as the PF (sysfs device/virtfn0, virtfn1, net/pf0)",
            "vf0": "ifb posing as VF 1 of pf0 (sysfs device/physfn); libvirt sends on pf0's ifindex with PORT_VF=1",
        },
        "cases": cases,
        "domain_uuids": raw["domain_uuids"],
        "host_uuids": raw["host_uuids"],
        "hosts": {n: info[n] for n in "AB"},
        "timeline": [f"{h['host']}: hook {h['argv']}" for h in sorted(raw["hooks"], key=lambda h: h["t"])],
        "versions": raw.get("versions", {}),
        "messages": msgs,
    }


def _main(argv: Sequence[str]) -> int:
    if argv[:1] == ["peer"]:
        LldpadPoser(Path(argv[1])).serve()
        return 0
    if argv[:1] in (["qbg"], ["qbh"]):
        workdir = Path(tempfile.mkdtemp(prefix="vdph-cap", dir="/tmp"))
        res = record_qbg(workdir) if argv[0] == "qbg" else record_qbh(workdir)
        res["versions"] = _versions()
        Path(argv[1]).write_text(json.dumps(res, indent=1, default=lambda b: b.hex()))
        print(workdir)
        return 0
    if argv[:1] == ["vectors"] and len(argv) == 4:
        qbg = json.loads(Path(argv[1]).read_text())
        qbh = json.loads(Path(argv[2]).read_text())
        out = Path(argv[3])
        (out / "libvirt9_qbg.json").write_text(json.dumps(qbg_vectors(qbg), indent=1) + "\n")
        (out / "libvirt9_qbh.json").write_text(json.dumps(qbh_vectors(qbh), indent=1) + "\n")
        return 0
    print("usage: capture.py peer OUT | qbg RAW.json | qbh RAW.json | vectors QBG_RAW QBH_RAW OUTDIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
