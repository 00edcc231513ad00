"""The libvirt lab harness: two real libvirtd + QEMU (TCG) hosts, hooks, live migration, veto.

Hook calls are read from a log the hook scripts themselves append to (not from the harness), guest
placement from ``virsh list`` / ``virsh domstate``, clean-up from /proc and ``ip netns list``.
libvirt >= 10.5 passes the shutoff reason as the last argument of ``release end`` (9.0 passes ``-``):
the expected calls follow the version of the libvirtd that runs here.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness import capture
from tests.lab.harness.libvirt import LIBVIRTD, LibvirtHost, guest_xml, migrate, release_reason
from tests.lab.harness.netns import Netns, unique_suffix

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.skipif(not os.access(LIBVIRTD, os.X_OK), reason="apt-get install libvirt-daemon-driver-qemu"),
]

VETO_MESSAGE = "vdph-test: port profile refused by the switch"


LOG_HOOK = """#!/bin/sh
# Test hook: log argv (libvirt gives the domain XML on stdin: drain it).
cat >/dev/null
echo "$*" >> {log}
"""

VETO_HOOK = """#!/bin/sh
# Test hook: refuse 'prepare begin' while the flag file exists; message on stderr, nothing on stdout.
cat >/dev/null
if [ -e {flag} ] && [ "$2 $3" = "prepare begin" ]; then
    echo "{message}" >&2
    exit 1
fi
exit 0
"""


class Lab:
    """Two hosts, A and B, each with a logging hook; B also has the veto hook."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.logs = {n: workdir / f"hooks-{n}.log" for n in "AB"}
        self.veto_flag = workdir / "veto-B"
        self.timings: dict[str, float] = {}
        self.hosts: dict[str, LibvirtHost] = {}
        try:
            self._start(workdir)
        except BaseException:  # B failed (or ^C) after A started: A must not outlive the lab
            self.close()
            raise

    def _start(self, workdir: Path) -> None:
        for n in "AB":
            self.logs[n].write_text("")
            log_hook = workdir / f"log-hook-{n}.sh"
            log_hook.write_text(LOG_HOOK.format(log=self.logs[n]))
            log_hook.chmod(0o755)
            hooks = {"qemu.d/10-log": log_hook}
            if n == "B":
                veto = workdir / "veto-hook.sh"
                veto.write_text(VETO_HOOK.format(flag=self.veto_flag, message=VETO_MESSAGE))
                veto.chmod(0o755)
                hooks["qemu.d/20-veto"] = veto
            with self.timed(f"start libvirtd {n}"):
                self.hosts[n] = LibvirtHost(
                    n, None, workdir, host_uuid=str(uuid.uuid4()), hooks=hooks,
                    migration_port_base=49152 + 10 * (n == "B"),
                )

    def timed(self, what: str) -> _Timer:
        return _Timer(self.timings, what)

    def hook_calls(self, host: str) -> list[str]:
        return self.logs[host].read_text().splitlines()

    def clear_logs(self) -> None:
        for log in self.logs.values():
            log.write_text("")

    def start_guest(self, host: str, name: str) -> None:
        xml = self.workdir / f"{name}.xml"
        xml.write_text(guest_xml(name, str(uuid.uuid4()), ["52:54:00:5e:00:01"]))
        self.hosts[host].virsh("create", str(xml))

    def close(self) -> None:
        for h in self.hosts.values():
            h.close()


class _Timer:
    def __init__(self, sink: dict[str, float], what: str) -> None:
        self.sink, self.what = sink, what

    def __enter__(self) -> None:
        self.t0 = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.sink[self.what] = time.monotonic() - self.t0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    t0 = time.monotonic()
    the_lab = Lab(tmp_path_factory.mktemp("libvirtlab"))
    try:
        yield the_lab
    finally:
        with the_lab.timed("tear-down"):
            the_lab.close()
        the_lab.timings["whole module"] = time.monotonic() - t0
        print("\nlibvirt lab timings (s): " + ", ".join(f"{k}={v:.2f}" for k, v in the_lab.timings.items()))


def _state(host: LibvirtHost, guest: str) -> str:
    return host.virsh("domstate", guest, check=False).stdout.strip()


def test_start_runs_hooks_in_order(lab: Lab) -> None:
    lab.clear_logs()
    with lab.timed("start guest on A"):
        lab.start_guest("A", "g1")
    assert lab.hook_calls("A") == ["g1 prepare begin -", "g1 start begin -", "g1 started begin -"]
    assert lab.hook_calls("B") == []
    assert _state(lab.hosts["A"], "g1") == "running"


def test_live_migration_hook_sequences(lab: Lab) -> None:
    a, b = lab.hosts["A"], lab.hosts["B"]
    if "g1" not in a.guests():
        lab.start_guest("A", "g1")
    lab.clear_logs()
    with lab.timed("migrate A->B"):
        r = migrate(a, b, "g1")
    assert r.returncode == 0, r.stderr
    assert lab.hook_calls("B") == [
        "g1 migrate begin -", "g1 prepare begin -", "g1 start begin -", "g1 started begin -",
    ]
    assert lab.hook_calls("A") == ["g1 stopped end -", f"g1 release end {release_reason('migrated')}"]
    assert "g1" in b.guests() and "g1" not in a.guests()
    assert _state(b, "g1") == "running"


def test_prepare_hook_failure_vetoes_migration(lab: Lab) -> None:
    a, b = lab.hosts["A"], lab.hosts["B"]
    lab.start_guest("A", "g2")
    lab.clear_logs()
    lab.veto_flag.write_text("")
    try:
        with lab.timed("vetoed migrate A->B"):
            r = migrate(a, b, "g2")
    finally:
        lab.veto_flag.unlink()
    print(f"\nvetoed migration, virsh says: {r.stderr.strip()}")
    assert r.returncode != 0
    assert VETO_MESSAGE in r.stderr
    assert "prepare begin" in r.stderr  # libvirt names the failing hook call
    assert "g2" in a.guests() and "g2" not in b.guests()
    assert _state(a, "g2") == "running"
    assert lab.hook_calls("A") == []
    assert lab.hook_calls("B") == [
        "g2 migrate begin -", "g2 prepare begin -", "g2 stopped end -", f"g2 release end {release_reason('failed')}",
    ]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_close_leaves_nothing(tmp_path: Path) -> None:
    """Closing a host with a running guest ends libvirtd and QEMU (by pid) and deletes its netns."""
    netns = Netns(f"vhc{unique_suffix()}")
    try:
        host = LibvirtHost("C", netns, tmp_path, host_uuid=str(uuid.uuid4()), etc_files={"vdp-hooks.conf": "x=1\n"})
        seen = host.daemon.run(["cat", "/etc/libvirt/vdp-hooks.conf"]).stdout if host.daemon else ""
        xml = tmp_path / "g.xml"
        xml.write_text(guest_xml("g", str(uuid.uuid4()), ["52:54:00:5e:00:09"]))
        host.virsh("create", str(xml))
        pids = [host.pid, *host.qemu_pids()]
        assert len(pids) == 2
        host.close()
        assert seen == "x=1\n"  # the daemon's private /etc/libvirt holds the extra file
        assert not [p for p in pids if _alive(p)]
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert netns.name in names  # a caller's netns is the caller's to delete
    finally:
        netns.close()
    own = LibvirtHost("D", None, tmp_path, host_uuid=str(uuid.uuid4()))
    name = own.netns.name
    own.close()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert name not in names.split()


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_netns_whose_setup_fails_is_deleted() -> None:
    name = f"vhf{unique_suffix()}"
    with pytest.raises(subprocess.CalledProcessError):
        # an interface name longer than IFNAMSIZ: the kernel refuses it
        Netns(name, setup=lambda ns: ns.run(["ip", "link", "add", "x" * 20, "type", "dummy"]))
    assert name not in _netns_names()


def test_libvirt_host_whose_setup_fails_leaves_no_namespace(tmp_path: Path) -> None:
    name = f"F{unique_suffix()}"
    prefix = f"lv{name[:6]}"
    with pytest.raises(FileNotFoundError):
        LibvirtHost(name, None, tmp_path, etc_files={"vdp-hooks.conf": tmp_path / "no-such-file"})
    assert not [n for n in _netns_names() if n.startswith(prefix)]


def test_hook_added_later_runs_only_after_reload(tmp_path: Path) -> None:
    """LAB.md: with no hook at daemon start, a script added to qemu.d/ runs only after SIGHUP."""
    log = tmp_path / "late.log"
    hook = tmp_path / "late-hook.sh"
    hook.write_text(LOG_HOOK.format(log=log))
    hook.chmod(0o755)
    with LibvirtHost("E", None, tmp_path, host_uuid=str(uuid.uuid4())) as host:
        (host.etc / "hooks" / "qemu.d" / "10-late").symlink_to(hook)
        for name in ("before", "after"):
            if name == "after":
                pid = host.pid
                host.reload()
                assert host.pid == pid and host.daemon is not None and host.daemon.alive()
            xml = tmp_path / f"{name}.xml"
            xml.write_text(guest_xml(name, str(uuid.uuid4()), ["52:54:00:5e:00:0a"]))
            host.virsh("create", str(xml))
            host.virsh("destroy", name)
    calls = log.read_text().splitlines() if log.exists() else []
    assert [c for c in calls if c.startswith("before ")] == []
    assert calls == [
        "after prepare begin -", "after start begin -", "after started begin -", "after stopped end -",
        f"after release end {release_reason('destroyed')}",
    ]


GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.mark.parametrize("kind", ["qbg", "qbh"])
def test_libvirt_still_sends_the_golden_bytes(kind: str, tmp_path: Path) -> None:
    """Re-record with tests/lab/harness/capture.py: libvirt's requests equal tests/golden/ byte for byte
    once the varying header fields (seq, pid) are taken from the new recording."""
    if kind == "qbg":
        doc = capture.qbg_vectors(capture.record_qbg(tmp_path))
    else:
        doc = capture.qbh_vectors(capture.record_qbh(tmp_path))
    golden = json.loads((GOLDEN / f"libvirt9_{kind}.json").read_text())
    want = {m["name"]: m for m in golden["messages"] if m["origin"].startswith("real libvirtd")}
    got = {m["name"]: m for m in doc["messages"] if m["origin"].startswith("real libvirtd")}
    assert sorted(got) == sorted(want)
    for name, m in got.items():
        new, old = bytes.fromhex(m["hex"]), bytes.fromhex(want[name]["hex"])
        assert old[:8] + new[8:16] + old[16:] == new, name
