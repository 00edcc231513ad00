"""Lab fixtures: skip root-only tests with a clear reason, give each test a lab work dir and a VdpLab."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.vdplab import VdpLab


def _lab_unavailable() -> str | None:
    """Why lab tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, lldpad); run as root"
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"lab tests need '{tool}' (apt-get install iproute2 util-linux)"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"'ip netns' does not work here ({exc}); lab tests need network namespaces"
    return None


def _lldpad_unavailable() -> str | None:
    for path in ("/usr/sbin/lldpad", "/usr/sbin/lldptool", "/usr/sbin/vdptool"):
        if not os.access(path, os.X_OK):
            return f"{path} missing: apt-get install lldpad"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip lab/libvirt tests with the reason when this machine cannot run them."""
    reason = _lab_unavailable()
    lldpad_reason = _lldpad_unavailable()
    for item in items:
        if not ({"lab", "libvirt"} & {m.name for m in item.iter_markers()}):
            continue
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
        elif "lab" in {m.name for m in item.iter_markers()} and lldpad_reason:
            item.add_marker(pytest.mark.skip(reason=lldpad_reason))


@pytest.fixture
def lab_workdir(tmp_path: Path) -> Path:
    """A fresh directory for lab configs and daemon logs (kept by pytest for post-mortems)."""
    path = tmp_path / "lab"
    path.mkdir()
    return path


@pytest.fixture
def vdp_lab(lab_workdir: Path) -> Iterator[VdpLab]:
    """One host ("host", uplink "up0") with a station lldpad, one lldpad bridge; EVB negotiated."""
    with VdpLab(lab_workdir) as lab:
        yield lab


@pytest.fixture(scope="module")
def vdp_lab_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VdpLab]:
    """Like ``vdp_lab`` but shared by a module's tests (they must leave it as they found it)."""
    with VdpLab(tmp_path_factory.mktemp("vdplab")) as lab:
        yield lab
