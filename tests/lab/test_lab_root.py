"""The lab's daemons run the binaries of the root the tests run in, never another root's.

In a tests/distro tree (Debian 13 on a Debian 12 machine, say) this proves the lab tested *that*
distribution: a lab entered by chroot instead of pivot_root would have its `nsenter --mount` land in
the host's root and run the host's lldpad and libvirtd.  On the machine itself it holds trivially.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.lab.harness.libvirt import LIBVIRTD, LibvirtHost
from tests.lab.harness.lldpad import LLDPAD
from tests.lab.harness.vdplab import VdpLab


def _file_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _assert_runs_ours(pid: int, binary: str) -> None:
    """``pid``'s root is our / and its executable is our ``binary`` (same inode, not just the same path)."""
    assert _file_id(f"/proc/{pid}/root") == _file_id("/"), f"pid {pid} runs in another root than the tests"
    assert _file_id(f"/proc/{pid}/exe") == _file_id(binary), (
        f"pid {pid} runs {os.readlink(f'/proc/{pid}/exe')}, not this root's {binary}"
    )


def _confinement(pid: int) -> str:
    """The LSM label of ``pid`` ('unconfined' where the kernel has no AppArmor/SELinux at all)."""
    try:
        return Path(f"/proc/{pid}/attr/current").read_text().strip("\0\n ") or "unconfined"
    except OSError:  # EINVAL: no LSM provides the attribute
        return "unconfined"


@pytest.mark.lab
def test_lab_lldpads_are_this_roots(vdp_lab: VdpLab) -> None:
    version = subprocess.run([LLDPAD, "-v"], capture_output=True, text=True, check=False)
    print(f"lldpad here: {(version.stdout + version.stderr).splitlines()[0]}")
    assert vdp_lab.switch_lldpad is not None
    pids = [vdp_lab.lldpad().pid, vdp_lab.switch_lldpad.pid]  # started by nsenter and by `ip netns exec`
    for pid in pids:
        assert pid is not None
        _assert_runs_ours(pid, LLDPAD)


@pytest.mark.libvirt
@pytest.mark.skipif(not os.access(LIBVIRTD, os.X_OK), reason="apt-get install libvirt-daemon-driver-qemu")
def test_lab_libvirtd_is_this_roots_and_unconfined(tmp_path: Path) -> None:
    """Also unconfined: a libvirtd under Debian's AppArmor profile may not execute hooks that the lab
    links from the source tree (the profile allows /etc/libvirt/hooks/** only)."""
    with LibvirtHost("R", None, tmp_path, host_uuid=str(uuid.uuid4())) as host:
        version = host.daemon.run([LIBVIRTD, "--version"]).stdout.strip() if host.daemon else ""
        print(f"libvirtd in the lab: {version}")
        _assert_runs_ours(host.pid, LIBVIRTD)
        label = _confinement(host.pid)
        assert label == "unconfined", f"the lab's libvirtd runs confined ({label}): hooks under the tree fail"
