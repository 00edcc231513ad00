"""The product as pip installs it into a virtualenv (``make venv`` does ``pip install .``): the console
script and the entry, run from outside the source tree, find the installed packages and work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _installed_location() -> Path | None:
    """Where pip installed ``hooks`` for this interpreter (its site-packages), if it did.

    Not importlib.metadata: pip leaves an egg-info in the source tree, which is on sys.path here."""
    import site

    for directory in site.getsitepackages():
        found = Path(directory) / "hooks"
        if (found / "__init__.py").exists() and (found / "plain.py").exists():
            return found
    return None


pytestmark = pytest.mark.skipif(
    _installed_location() is None, reason="libvirt-vdp-hooks is not pip-installed in this interpreter (make venv)"
)


def _env(tmp_path: Path) -> dict[str, str]:
    conf = tmp_path / "vdp-hooks.conf"
    conf.write_text("[hooks]\nfeatures = links\nsyslog = no\n[uplinks]\nfabric-a = lo\n")
    return {
        "LC_ALL": "C",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "VDP_HOOKS_CONFIG": str(conf),
        "VDP_HOOKS_STATE_DIR": str(tmp_path / "state"),
    }


def test_installed_package_is_outside_the_source_tree() -> None:
    location = _installed_location()
    assert location is not None and location != REPO / "hooks"


def test_console_script_runs_the_installed_code(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "vdp-hooks"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, cwd=tmp_path, check=False)
    version = re.search(r"^version *= *(\S+)", (REPO / "setup.cfg").read_text(), re.M)
    assert version and proc.returncode == 0 and proc.stdout.strip() == f"vdp-hooks {version.group(1)}"
    proc = subprocess.run(
        [str(script), "check"], capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), check=False
    )
    assert "Checking config" in proc.stdout, proc.stdout + proc.stderr
    assert str(REPO) not in proc.stdout


def test_entry_copied_out_of_the_tree_uses_installed_code(tmp_path: Path) -> None:
    entry = tmp_path / "libexec" / "qemu"
    entry.parent.mkdir()
    shutil.copy(REPO / "etc-libvirt-hooks" / "qemu", entry)
    guest_uuid = uuid.uuid4()
    xml = f"""<domain type='qemu'><name>vm</name><uuid>{guest_uuid}</uuid>
      <metadata><vdp:hooks xmlns:vdp="http://libvirt-vdp-hooks.org/xmlns" version="1">
        <vdp:port mac="52:54:00:aa:00:02" uplink="fabric-a" required="no">
          <vdp:qbg managerid="1" typeid="2" typeidversion="3"/></vdp:port></vdp:hooks></metadata>
      <devices><interface type='ethernet'><mac address='52:54:00:aa:00:02'/></interface></devices></domain>"""
    for op, subop in (("prepare", "begin"), ("release", "end")):
        proc = subprocess.run(
            [sys.executable, str(entry), "vm", op, subop, "-"],
            input=xml.encode(),
            capture_output=True,
            env=_env(tmp_path),
            cwd=tmp_path,
            check=False,
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
