"""Real libvirtd 9.0 + QEMU (TCG) "hosts", each in its own network and private mount namespace.

Each :class:`LibvirtHost` gets a directory ``workdir/<name>/`` holding everything the daemon would
normally keep under /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and
/run/libvirt, plus private copies of /etc/passwd and /etc/group (the QEMU driver refuses to load
without a ``libvirt-qemu`` user).  Those are bind-mounted over the real paths inside the daemon's
private mount namespace, so hooks run by this daemon read *its* /etc/libvirt (e.g.
``/etc/libvirt/vdp-hooks.conf``) and *its* /run (e.g. ``/run/lldpad.pid``), never the host's.

libvirtd runs in the foreground (no ``-d``): the pid the harness keeps is the daemon itself and it
is stopped by that pid with SIGTERM.  (With ``-d`` libvirtd forks: the process started exits 0
at once -- 0.06 s here, long before the daemon answers -- and the daemon, reparented to init, is
known only from the ``-p`` pid file.)  ``-p`` is passed anyway and checked against the tracked pid.

The QEMU capability probe takes ~8 s; the result is kept in a warm cache under
``/var/tmp/vdph-qemu-capcache/<key>/`` (keyed by the QEMU and libvirtd binaries) and copied into each
new daemon's cache directory before start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .netns import Daemon, Netns, unique_suffix

__all__ = [
    "CAPCACHE_ROOT",
    "LibvirtHost",
    "Nic",
    "guest_xml",
    "link_hosts",
    "migrate",
    "release_reason",
]

LIBVIRTD = "/usr/sbin/libvirtd"
QEMU = "/usr/bin/qemu-system-x86_64"
CAPCACHE_ROOT = Path("/var/tmp/vdph-qemu-capcache")

# Paths the daemon sees, and the sub-directory of the host dir bind-mounted there.
_BINDS = (
    ("run", "/run/libvirt"),
    ("etc", "/etc/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
)

# Debian's ids for the QEMU user and groups; only names matter here (the daemon runs QEMU as root).
_EXTRA_GROUPS = (("libvirt-qemu", 64055), ("kvm", 64056), ("libvirt", 64057))
_QEMU_USER = "libvirt-qemu:x:64055:64055:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n"


def _capcache_key() -> str:
    """Cache key: libvirt invalidates its capability cache when either binary changes, so do we."""
    parts = []
    for binary in (QEMU, LIBVIRTD):
        st = os.stat(binary)
        parts.append(f"{Path(binary).name}-{st.st_size}-{int(st.st_mtime)}")
    return "_".join(parts)


@functools.cache
def libvirt_version() -> tuple[int, ...]:
    """The lab's libvirtd version, from ``libvirtd (libvirt) 11.3.0``."""
    out = subprocess.run([LIBVIRTD, "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(part) for part in out.split()[-1].split("."))


def release_reason(reason: str) -> str:
    """``release end``'s last argument for a guest that stopped for ``reason``: libvirt >= 10.5 passes
    the shutoff reason (docs/hooks.rst), 9.0 (Debian 12) always ``-``."""
    return reason if libvirt_version() >= (10, 5) else "-"


def _private_passwd_group(dest: Path) -> tuple[Path, Path]:
    """Copies of /etc/passwd and /etc/group with the user and groups the QEMU driver looks up."""
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    if not any(line.startswith("libvirt-qemu:") for line in passwd.splitlines()):
        passwd += _QEMU_USER
    names = {line.split(":", 1)[0] for line in group.splitlines() if line}
    for gname, gid in _EXTRA_GROUPS:
        if gname not in names:
            group += f"{gname}:x:{gid}:{'libvirt-qemu' if gname != 'libvirt-qemu' else ''}\n"
    (dest / "passwd").write_text(passwd)
    (dest / "group").write_text(group)
    return dest / "passwd", dest / "group"


class LibvirtHost:
    """One libvirtd (9.0, QEMU driver) in a network namespace and a private mount namespace.

    ``netns``: an existing :class:`Netns` to run in (so other lab daemons can share the host's
    namespace); ``None`` makes one named after ``name`` which is deleted on :meth:`close`.
    ``hooks``: ``{"qemu": path}`` or ``{"qemu.d/50-x": path}`` -- symlinks created under the
    daemon's ``etc/hooks/`` before start (libvirt runs linked executables with ``$0`` = the link).
    ``etc_files``: extra files for the daemon's /etc/libvirt (``{"vdp-hooks.conf": text}``; a
    :class:`Path` value is copied).
    ``env``: extra environment for the daemon (e.g. ``LD_PRELOAD``); hooks inherit only what
    libvirt passes on (it strips the environment).
    """

    def __init__(
        self,
        name: str,
        netns: Netns | None,
        workdir: Path,
        *,
        host_uuid: str | None = None,
        hooks: Mapping[str, Path] | None = None,
        etc_files: Mapping[str, str | bytes | Path] | None = None,
        migration_port_base: int = 49152,
        env: Mapping[str, str] | None = None,
        use_capcache: bool = True,
        start: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self._own_netns = netns is None
        self.netns = netns if netns is not None else Netns(f"lv{name[:6]}{unique_suffix()}")
        self.dir = Path(workdir) / name
        self.host_uuid = host_uuid or str(uuidlib.uuid4())
        self.hooks = dict(hooks or {})
        self.etc_files = dict(etc_files or {})
        self.migration_port_base = migration_port_base
        self.env = dict(env or {})
        self.use_capcache = use_capcache
        self.daemon: Daemon | None = None
        self.start_seconds: float | None = None
        self.capcache_hit: bool | None = None
        self.extra_links: list[str] = []  # veth ends made by link_hosts(), deleted on close
        self.migration_addr: str | None = None
        try:
            self._prepare()
            if start:
                self.start(timeout=start_timeout)
        except BaseException:
            self.close()  # also deletes the netns it made: a failed set-up leaves nothing
            raise

    # -- layout -------------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        """The daemon's read-write unix socket (reachable from any namespace by path)."""
        return self.dir / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """Connection URI for virsh / libvirt clients outside the daemon's namespaces."""
        return f"qemu:///system?socket={self.socket}"

    @property
    def p2p_uri(self) -> str:
        """URI another daemon uses to reach this one for ``migrate --p2p``."""
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def log_path(self) -> Path:
        """libvirtd's own log (log_outputs level 3 = warnings and errors)."""
        return self.dir / "log" / "libvirtd.log"

    @property
    def stdout_path(self) -> Path:
        return self.dir / "libvirtd.stdout"

    @property
    def etc(self) -> Path:
        """The directory the daemon sees as /etc/libvirt."""
        return self.dir / "etc"

    @property
    def pid(self) -> int:
        if self.daemon is None:
            raise RuntimeError(f"libvirtd {self.name} is not running")
        return self.daemon.pid

    def _prepare(self) -> None:
        d = self.dir
        for sub, _ in _BINDS:
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "etc" / "hooks" / "qemu.d").mkdir(parents=True, exist_ok=True)
        _private_passwd_group(d)
        (d / "etc" / "libvirtd.conf").write_text(
            'unix_sock_group = "root"\n'
            'unix_sock_rw_perms = "0770"\n'
            'auth_unix_rw = "none"\n'
            'auth_unix_ro = "none"\n'
            f'log_outputs = "3:file:{self.log_path}"\n'
            f'host_uuid = "{self.host_uuid}"\n'
        )
        base = self.migration_port_base
        (d / "etc" / "qemu.conf").write_text(
            'user = "root"\n'
            'group = "root"\n'
            "dynamic_ownership = 0\n"
            'security_driver = "none"\n'
            'stdio_handler = "file"\n'
            "cgroup_controllers = [ ]\n"
            f"migration_port_min = {base}\n"
            f"migration_port_max = {base + 9}\n"
        )
        for rel, target in self.hooks.items():
            link = d / "etc" / "hooks" / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path(target).resolve())
        for rel, content in self.etc_files.items():
            dest = d / "etc" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, dest)
            elif isinstance(content, bytes):
                dest.write_bytes(content)
            else:
                dest.write_text(content)

    def _capcache_dirs(self) -> tuple[Path, Path]:
        return CAPCACHE_ROOT / _capcache_key(), self.dir / "cache" / "qemu" / "capabilities"

    # -- life cycle -----------------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> float:
        """Start libvirtd and wait until it answers; returns (and records) the seconds it took."""
        if self.daemon is not None and self.daemon.alive():
            raise RuntimeError(f"libvirtd {self.name} already running")
        warm, mine = self._capcache_dirs()
        self.capcache_hit = False
        if self.use_capcache and warm.is_dir() and any(warm.glob("*.xml")) and not any(mine.glob("*.xml")):
            mine.mkdir(parents=True, exist_ok=True)
            for f in warm.glob("*.xml"):
                shutil.copy2(f, mine / f.name)
            self.capcache_hit = True
        # Mount points for the bind mounts must exist on the host (a package reinstall can remove them).
        for _, target in _BINDS[2:]:
            Path(target).mkdir(parents=True, exist_ok=True)
        binds = [f"mount --bind {self.dir / sub} {target}" for sub, target in _BINDS]
        binds.append(f"mount --bind {self.dir / 'passwd'} /etc/passwd")
        binds.append(f"mount --bind {self.dir / 'group'} /etc/group")
        setup = "mkdir -p /run/libvirt && " + " && ".join(binds)
        env = dict(os.environ)
        env.update(self.env)
        pidfile = self.dir / "libvirtd.pid"
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        t0 = time.monotonic()
        self.daemon = Daemon(
            self.netns,
            [LIBVIRTD, "-f", "/etc/libvirt/libvirtd.conf", "-p", str(pidfile)],
            log=self.stdout_path,
            setup=setup,
            env=env,
        )
        try:
            self.daemon.wait_for(self._answers, timeout, f"libvirtd {self.name} start")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        if pidfile.exists() and int(pidfile.read_text().split()[0]) != self.daemon.pid:
            raise RuntimeError(f"libvirtd {self.name}: pid file says {pidfile.read_text()!r}, tracked {self.pid}")
        if self.use_capcache and not self.capcache_hit and any(mine.glob("*.xml")):
            self._save_capcache(warm, mine)
        return self.start_seconds

    @staticmethod
    def _save_capcache(warm: Path, mine: Path) -> None:
        tmp = warm.with_name(warm.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in mine.glob("*.xml"):
            shutil.copy2(f, tmp / f.name)
        try:
            # Atomic publish: concurrent labs either see the whole cache or none.
            tmp.rename(warm)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        # `virsh version` needs the QEMU driver, i.e. waits for the capability probe to finish.
        r = self.virsh("version", check=False, timeout=60)
        return r.returncode == 0 and "Running hypervisor: QEMU" in r.stdout

    def virsh(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c URI args...``; raises with virsh's stderr when ``check`` and it fails."""
        r = subprocess.run(
            ["virsh", "-q", "-c", self.uri, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"virsh -c {self.uri} {' '.join(args)} -> {r.returncode}: {r.stderr.strip()}")
        return r

    def reload(self, *, timeout: float = 30.0) -> None:
        """SIGHUP the daemon by pid (it re-reads its config and rediscovers hooks, and stays up);
        returns once it answers again."""
        os.kill(self.pid, signal.SIGHUP)
        assert self.daemon is not None
        # libvirtd reloads in a short-lived thread named "daemon-reload" (hooks are rediscovered
        # there; it took < 2 ms here): give it a moment, then wait until none is left and the
        # daemon answers.
        time.sleep(0.1)
        self.daemon.wait_for(
            lambda: not self._has_thread("daemon-reload") and self._answers(), timeout, f"libvirtd {self.name} reload"
        )

    def _has_thread(self, comm: str) -> bool:
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                if (task / "comm").read_text().strip() == comm:
                    return True
        return False

    def guests(self) -> list[str]:
        """Names of running guests."""
        r = self.virsh("list", "--name", check=False, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"virsh list on {self.name} failed: {r.stderr.strip()}")
        return [n.strip() for n in r.stdout.splitlines() if n.strip()]

    def qemu_pids(self) -> list[int]:
        """Pids of this daemon's QEMU processes, from libvirt's pid files."""
        pids = []
        for f in (self.dir / "run" / "qemu").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError, IndexError):
                pid = int(f.read_text().split()[0])
                # run/qemu also holds the driver's own pid file (libvirtd); keep QEMUs only.
                if b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
        return pids

    def stop(self, timeout: float = 10.0) -> None:
        """Destroy running guests, then SIGTERM libvirtd by pid; leftover QEMUs are killed by pid."""
        if self.daemon is None:
            return
        # A hung daemon must not stop the tear-down: virsh failures and timeouts are only logged
        # here, QEMUs left behind are killed by pid below.
        if self.daemon.alive():
            try:
                for g in self.guests():
                    self.virsh("destroy", g, check=False, timeout=30)
            except (subprocess.SubprocessError, RuntimeError) as exc:
                print(f"libvirtd {self.name}: destroying guests failed ({exc}); killing QEMU by pid")
        leftover = self.qemu_pids()
        self.daemon.stop(timeout)
        for pid in leftover:
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                # The pid files are this daemon's own; still make sure the pid was not reused.
                if b"qemu-system" in cmd:
                    os.kill(pid, signal.SIGKILL)
        # A killed QEMU is not our child (libvirt daemonises it): wait until init has reaped it.
        end = time.monotonic() + 5
        while time.monotonic() < end and any(Path(f"/proc/{pid}").exists() for pid in leftover):
            time.sleep(0.05)
        self.daemon = None

    def close(self) -> None:
        """Stop everything this host started; delete links and the netns it made."""
        try:
            self.stop()
        finally:
            for link in self.extra_links:
                self.netns.run(["ip", "link", "del", link], check=False)
            self.extra_links.clear()
            if self._own_netns:
                self.netns.close()

    def __enter__(self) -> LibvirtHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- guests -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Nic:
    """A guest NIC: ``kind='ethernet'`` (a tap, needs nothing), ``'direct'`` (macvtap on ``dev``) or
    ``'network'`` (a libvirt network ``network``, optionally its ``portgroup``)."""

    mac: str
    kind: str = "ethernet"
    dev: str | None = None
    mode: str = "vepa"
    virtualport: str | None = None  # raw <virtualport> XML
    model: str = "virtio"
    network: str | None = None
    portgroup: str | None = None

    def xml(self) -> str:
        inner = [f"<mac address={quoteattr(self.mac)}/>", f"<model type={quoteattr(self.model)}/>"]
        if self.kind == "direct":
            if not self.dev:
                raise ValueError("a direct NIC needs dev")
            inner.insert(1, f"<source dev={quoteattr(self.dev)} mode={quoteattr(self.mode)}/>")
        if self.kind == "network":
            if not self.network:
                raise ValueError("a network NIC needs network")
            group = f" portgroup={quoteattr(self.portgroup)}" if self.portgroup else ""
            inner.insert(1, f"<source network={quoteattr(self.network)}{group}/>")
        if self.virtualport:
            inner.append(self.virtualport)
        body = "\n      ".join(inner)
        return f"    <interface type={quoteattr(self.kind)}>\n      {body}\n    </interface>"


def guest_xml(
    name: str,
    uuid: str,
    nics: Iterable[Nic | str] = (),
    metadata: str | None = None,
    *,
    memory_mib: int = 64,
) -> str:
    """Domain XML for a tiny TCG guest: no disk (it idles in the BIOS), virtio NICs, a pty serial.

    ``nics``: :class:`Nic` objects or bare MAC strings (``type='ethernet'`` virtio NICs).
    ``metadata``: raw XML placed inside ``<metadata>`` (libvirt keeps one element per namespace).
    """
    nic_xml = "\n".join((Nic(n) if isinstance(n, str) else n).xml() for n in nics)
    meta = f"  <metadata>\n    {metadata}\n  </metadata>\n" if metadata else ""
    return (
        "<domain type='qemu'>\n"
        f"  <name>{escape(name)}</name>\n"
        f"  <uuid>{escape(uuid)}</uuid>\n"
        f"{meta}"
        f"  <memory unit='MiB'>{memory_mib}</memory>\n"
        "  <vcpu>1</vcpu>\n"
        "  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        f"    <emulator>{QEMU}</emulator>\n"
        f"{nic_xml}\n"
        "    <serial type='pty'><target port='0'/></serial>\n"
        "    <memballoon model='none'/>\n"
        "  </devices>\n"
        "</domain>\n"
    )


# -- migration ----------------------------------------------------------------------------------


def link_hosts(a: LibvirtHost, b: LibvirtHost, *, suffix: str | None = None) -> tuple[str, str]:
    """Join two hosts' namespaces with a veth carrying 10.99.X.1/24 <-> 10.99.X.2/24.

    X comes from the suffix; the addresses exist only inside the two namespaces.  The veth is
    deleted when ``a`` closes.  Returns the two addresses.
    """
    sfx = suffix or unique_suffix()
    x = int(sfx, 16) % 250 + 1
    na, nb = f"vm{sfx}a", f"vm{sfx}b"
    subprocess.run(
        ["ip", "link", "add", na, "netns", a.netns.name, "type", "veth", "peer", "name", nb, "netns", b.netns.name],
        check=True,
        capture_output=True,
        text=True,
    )
    a.extra_links.append(na)
    a.netns.run(["ip", "addr", "add", f"10.99.{x}.1/24", "dev", na])
    b.netns.run(["ip", "addr", "add", f"10.99.{x}.2/24", "dev", nb])
    a.netns.run(["ip", "link", "set", na, "up"])
    b.netns.run(["ip", "link", "set", nb, "up"])
    a.migration_addr, b.migration_addr = f"10.99.{x}.1", f"10.99.{x}.2"
    return a.migration_addr, b.migration_addr


def migrate(
    src: LibvirtHost,
    dst: LibvirtHost,
    guest: str,
    *,
    xml_file: Path | None = None,
    timeout: float = 60.0,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``virsh migrate --live --p2p`` from ``src`` to ``dst`` over their veth (made on first use).

    Returns virsh's CompletedProcess (not checked: a vetoed migration is a normal outcome here).
    """
    if dst.migration_addr is None or src.migration_addr is None:
        link_hosts(src, dst)
    argv = ["migrate", "--live", "--p2p", guest, dst.p2p_uri, "--migrateuri", f"tcp://{dst.migration_addr}"]
    if xml_file is not None:
        argv += ["--xml", str(xml_file)]
    argv += list(extra)
    return src.virsh(*argv, check=False, timeout=timeout)
