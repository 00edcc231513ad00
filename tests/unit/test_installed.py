"""The product as pip installs it into a virtualenv (``make venv`` does ``pip install .``): the console
script and the entry, run from outside the source tree, find the installed packages and work -- and the
only name it puts into site-packages is ours (``libvirt_vdp_hooks``), never a top-level ``hooks`` or ``vdp``."""

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


def _site_packages() -> list[Path]:
    import site

    return [Path(d) for d in site.getsitepackages()]


def _installed_location() -> Path | None:
    """Where pip installed ``hooks`` for this interpreter (in its site-packages), if it did.

    Not importlib.metadata: pip leaves an egg-info in the source tree, which is on sys.path here."""
    for directory in _site_packages():
        found = directory / "libvirt_vdp_hooks" / "hooks"
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


def test_the_venv_install_has_no_top_level_hooks_or_vdp() -> None:
    location = _installed_location()
    assert location is not None
    site_packages = location.parents[1]
    assert not (site_packages / "hooks").exists() and not (site_packages / "vdp").exists()
    assert (location.parent / "vdp" / "feature.py").exists()


def test_pip_install_target_puts_only_our_name_at_the_top(tmp_path: Path) -> None:
    """``pip install --target`` (what a shared site-packages gets) of a clean copy of the sources: one
    package of ours at the top, hooks/ and vdp/ with every subpackage inside it, and console script and
    features that work from there."""
    source = tmp_path / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=False,
    )
    if listed.returncode != 0:
        pytest.skip("needs git to list the sources")
    for name in listed.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    target = tmp_path / "target"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(target),
         str(source)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    top = sorted(p.name for p in target.iterdir() if p.name != "bin")
    assert top == ["libvirt_vdp_hooks", "libvirt_vdp_hooks-0.1.0.dist-info"], top
    inside = target / "libvirt_vdp_hooks"
    packages = [str(p.parent.relative_to(source)) for d in ("hooks", "vdp") for p in (source / d).rglob("__init__.py")]
    assert packages and all((inside / p / "__init__.py").exists() for p in packages), packages
    # From the target alone (no source tree on the path): the console script's function, the features'
    # entry points, and hooks/vdp importable only once libvirt_vdp_hooks is.
    code = (
        "import sys, importlib.util\n"
        "assert importlib.util.find_spec('hooks') is None, 'hooks importable without us'\n"
        "import libvirt_vdp_hooks\n"
        "from importlib.metadata import entry_points\n"
        "eps = entry_points()\n"
        "group = eps.select(group='libvirt_vdp_hooks.features') if hasattr(eps, 'select') "
        "else eps['libvirt_vdp_hooks.features']\n"
        "print(sorted(f'{e.name}={e.load().__module__}' for e in group))\n"
        "sys.argv = ['vdp-hooks', '--version']\n"
        "libvirt_vdp_hooks.main()\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(target), "LC_ALL": "C"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         check=False)
    assert run.stdout.splitlines()[0] == "['links=hooks.links', 'vdp=vdp.feature']", run.stdout + run.stderr
    assert run.stdout.splitlines()[1].startswith("vdp-hooks "), run.stdout + run.stderr


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
