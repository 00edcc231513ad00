"""The distribution packages: build them with packaging/build-packages.sh and check what they install.

Without root: the DEB and RPM contents (paths, modes, conffiles, dependencies), that the packaged
launcher runs the packaged code, that the packaged entry never breaks libvirt when its code is missing,
and the disable-on-removal shell logic of the DEB prerm and the RPM %preun against a scratch hooks
directory.  As root (``lab``): the DEB installed for real with dpkg, in a private mount namespace where
/etc/libvirt and /run are scratch copies, through install -> enable -> upgrade -> remove -> purge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "build-packages.sh"
NAME = "libvirt-vdp-hooks"
PRIVATE = "/usr/share/libvirt-vdp-hooks"
ENTRY = "/usr/libexec/libvirt-vdp-hooks/qemu"
LAUNCHER = "/usr/sbin/vdp-hooks"
CONFIG = "/etc/libvirt/vdp-hooks.conf"
HOOK_LINK = "/etc/libvirt/hooks/qemu.d/50-vdp-hooks"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

DEB_TOOLS = ("dpkg-buildpackage", "dpkg-deb", "dh", "dh_python3", "dpkg-parsechangelog")
RPM_TOOLS = ("rpmbuild", "rpm")


def _missing(tools: tuple[str, ...]) -> list[str]:
    return [t for t in tools if shutil.which(t, path=SYSTEM_PATH) is None]


def _missing_deb_tools() -> list[str]:
    missing = _missing(DEB_TOOLS)
    if not Path("/usr/share/dh-python/dhpython/build/plugin_pyproject.py").exists():
        missing.append("pybuild-plugin-pyproject")
    return missing


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=SYSTEM_PATH + ":" + os.environ.get("PATH", ""))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, **kwargs)  # type: ignore[call-overload]


def _build(kind: str, workdir: Path, version: str | None = None) -> Path:
    """Build one package with the project's script; the path of the result."""
    outdir = workdir / "out"
    cmd = ["sh", str(BUILD), f"--{kind}", "--workdir", str(workdir), "--outdir", str(outdir)]
    if version:
        cmd += ["--version", version]
    proc = _run(cmd, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, f"build-packages.sh --{kind} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    found = sorted(outdir.glob("*.deb" if kind == "deb" else "*.rpm"))
    assert len(found) == 1, f"expected one package in {outdir}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = _missing_deb_tools()
    if missing:
        pytest.skip(f"DEB build tools missing: {', '.join(missing)} (apt-get install dpkg-dev debhelper "
                    "dh-python pybuild-plugin-pyproject python3-all python3-setuptools)")
    return _build("deb", tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = _missing(RPM_TOOLS)
    if missing:
        pytest.skip(f"RPM build tools missing: {', '.join(missing)} (apt-get install rpm)")
    return _build("rpm", tmp_path_factory.mktemp("rpm"))


class Entry(NamedTuple):
    mode: int
    link: str


def _deb_listing(deb: Path) -> dict[str, Entry]:
    """Path -> (mode, link target) of everything in the DEB's data archive."""
    raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as fh:
        fh.write(raw)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            return {
                "/" + m.name.lstrip("./"): Entry(m.mode | (stat.S_IFDIR if m.isdir() else 0), m.linkname)
                for m in tar.getmembers()
                if m.name not in (".", "./")
            }


def _deb_control_file(deb: Path, name: str) -> str:
    proc = _run(["dpkg-deb", "--info", str(deb), name])
    return proc.stdout if proc.returncode == 0 else ""


def _source_modules() -> set[str]:
    return {
        f"{PRIVATE}/{p.relative_to(ROOT).as_posix()}"
        for pkg in ("hooks", "vdp")
        for p in (ROOT / pkg).rglob("*.py")
        if "__pycache__" not in p.parts
    }


# --------------------------------------------------------------------------------------------------- DEB
def test_deb_installs_the_agreed_files_with_their_modes(deb: Path) -> None:
    files = _deb_listing(deb)
    expected = {
        ENTRY: 0o755,
        LAUNCHER: 0o755,
        CONFIG: 0o644,
        "/usr/lib/tmpfiles.d/libvirt-vdp-hooks.conf": 0o644,
        "/lib/systemd/system/libvirt-vdp-hooks-agent.service": 0o644,
        "/usr/share/man/man8/vdp-hooks.8.gz": 0o644,
        "/usr/share/man/man5/vdp-hooks.conf.5.gz": 0o644,
        "/usr/share/doc/libvirt-vdp-hooks/copyright": 0o644,
        "/usr/share/doc/libvirt-vdp-hooks/README.md.gz": 0o644,
        "/etc/apparmor.d/abstractions/libvirt-vdp-hooks": 0o644,
    }
    for path, mode in expected.items():
        assert path in files, f"{path} missing from {deb.name}"
        assert stat.S_IMODE(files[path].mode) == mode, f"{path}: mode {oct(files[path].mode)}, want {oct(mode)}"
    for path, entry in files.items():
        if path.startswith(PRIVATE + "/") and not stat.S_ISDIR(entry.mode):
            assert stat.S_IMODE(entry.mode) == 0o644, f"{path}: mode {oct(entry.mode)}"


def test_deb_code_is_private_and_complete(deb: Path) -> None:
    files = _deb_listing(deb)
    python = {p for p in files if p.endswith((".py", ".pyc"))}
    outside = sorted(p for p in python if not p.startswith(PRIVATE + "/"))
    assert not outside, f"Python files outside {PRIVATE}: {outside}"
    assert not [p for p in files if "-packages/" in p], "nothing may go to dist-packages/site-packages"
    assert _source_modules() <= python, f"modules not packaged: {sorted(_source_modules() - python)}"
    # No console script that would import "hooks" from the global path; no stale byte-code or
    # pip metadata in the private directory (dh_python3 byte-compiles at install time).
    assert "/usr/bin/vdp-hooks" not in files
    assert not [p for p in files if p.endswith(".pyc") or ".dist-info" in p or ".egg-info" in p]
    assert f"py3compile -p {NAME} {PRIVATE}" in _deb_control_file(deb, "postinst")


def test_deb_never_ships_libvirt_hooks_and_has_the_right_conffiles(deb: Path) -> None:
    files = _deb_listing(deb)
    assert not [p for p in files if p.startswith("/etc/libvirt/hooks")]
    conffiles = set(_deb_control_file(deb, "conffiles").split())
    assert conffiles == {CONFIG, "/etc/apparmor.d/abstractions/libvirt-vdp-hooks"}


def test_deb_dependencies(deb: Path) -> None:
    fields = _run(["dpkg-deb", "--field", str(deb), "Depends", "Recommends", "Architecture"]).stdout
    depends = re.search(r"^Depends: (.*)$", fields, re.M)
    assert depends, fields
    deps = [d.strip() for d in depends.group(1).split(",")]
    assert "python3 (>= 3.9)" in deps
    assert "python3-lxml" in deps
    assert any(d.startswith("python3-pyroute2") for d in deps)
    assert not [d for d in deps if d.startswith("lldpad")], "lldpad is only recommended"
    assert re.search(r"^Recommends: .*\blldpad\b", fields, re.M)
    assert re.search(r"^Architecture: all$", fields, re.M)


def test_deb_entry_and_launcher_are_the_source_files(deb: Path, tmp_path: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(tmp_path)]).check_returncode()
    assert (tmp_path / ENTRY.lstrip("/")).read_bytes() == (ROOT / "etc-libvirt-hooks" / "qemu").read_bytes()
    assert (tmp_path / LAUNCHER.lstrip("/")).read_bytes() == (ROOT / "packaging" / "vdp-hooks").read_bytes()
    conf = (tmp_path / CONFIG.lstrip("/")).read_text()
    assert (ROOT / "etc-libvirt-hooks" / "vdp-hooks.conf").read_text() == conf
    tmpfiles = (tmp_path / "usr/lib/tmpfiles.d/libvirt-vdp-hooks.conf").read_text()
    assert re.search(r"^d\s+/run/libvirt/vdp-hooks\s+0700\s+root\s+root\b", tmpfiles, re.M)


def test_packaged_launcher_runs_the_packaged_code(deb: Path, tmp_path: Path) -> None:
    """The launcher, pointed at the extracted private directory, imports everything it needs from there."""
    _run(["dpkg-deb", "-x", str(deb), str(tmp_path)]).check_returncode()
    private = tmp_path / PRIVATE.lstrip("/")
    launcher = (tmp_path / LAUNCHER.lstrip("/")).read_text()
    assert launcher.startswith("#!/usr/bin/python3\n")
    assert f'sys.path.insert(0, "{PRIVATE}")' in launcher
    relocated = tmp_path / "vdp-hooks"
    relocated.write_text(launcher.replace(f'"{PRIVATE}"', repr(str(private))))
    # Run the launcher as __main__ with --help, then report where the modules it loaded came from.
    probe = "\n".join([
        "import runpy, sys",
        "sys.argv = ['vdp-hooks', '--help']",
        "try:",
        f"    runpy.run_path({str(relocated)!r}, run_name='__main__')",
        "except SystemExit as exc:",
        "    code = exc.code",
        "import hooks, hooks.cli, vdp",
        "print('MODULES', hooks.__file__, hooks.cli.__file__, vdp.__file__)",
        "sys.exit(code)",
    ])
    proc = _run(["/usr/bin/python3", "-I", "-c", probe], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "vdp-hooks" in proc.stdout and "enable" in proc.stdout
    modules = re.search(r"^MODULES (.*)$", proc.stdout, re.M)
    assert modules
    for path in modules.group(1).split():
        assert path.startswith(str(private) + "/"), f"{path} imported from outside the package"


@pytest.mark.parametrize("op", [("reconnect", "begin"), ("release", "end"), ("stopped", "end")])
def test_packaged_entry_never_fails_teardown_without_its_code(
    deb: Path, tmp_path: Path, op: tuple[str, str]
) -> None:
    """A half-installed package (code missing) must not make libvirt kill or fail a running guest."""
    _run(["dpkg-deb", "-x", str(deb), str(tmp_path)]).check_returncode()
    entry = tmp_path / "libexec-copy" / "qemu"  # no ../hooks beside it: the private dir is what it falls back to
    entry.parent.mkdir()
    shutil.copy2(tmp_path / ENTRY.lstrip("/"), entry)
    xml = (
        "<domain type='qemu'><name>g</name><uuid>8d6bcd3c-0c3f-4b38-b3b8-5c2e1c8f9a01</uuid><metadata>"
        "<vdp:hooks xmlns:vdp='http://libvirt-vdp-hooks.org/xmlns' version='1'/></metadata></domain>"
    )
    env = {
        "PATH": SYSTEM_PATH,
        "VDP_HOOKS_STATE_DIR": str(tmp_path / "state"),
        "VDP_HOOKS_CONFIG": str(tmp_path / "none.conf"),
    }
    proc = subprocess.run(
        [str(entry), "g", *op, "-"], input=xml, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------------------------------- RPM
def test_rpm_installs_the_agreed_files_with_their_modes(rpm: Path) -> None:
    proc = _run(["rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", str(rpm)])
    assert proc.returncode == 0, proc.stderr
    files: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        perms, path = line.split(" ", 1)
        files[path] = perms
    expected = {
        ENTRY: "-rwxr-xr-x",
        LAUNCHER: "-rwxr-xr-x",
        CONFIG: "-rw-r--r--",
        "/usr/lib/tmpfiles.d/libvirt-vdp-hooks.conf": "-rw-r--r--",
        "/usr/lib/systemd/system/libvirt-vdp-hooks-agent.service": "-rw-r--r--",
        "/usr/share/man/man8/vdp-hooks.8.gz": "-rw-r--r--",
        "/usr/share/man/man5/vdp-hooks.conf.5.gz": "-rw-r--r--",
        "/run/libvirt/vdp-hooks": "drwx------",
        PRIVATE: "drwxr-xr-x",
    }
    for path, mode in expected.items():
        assert files.get(path) == mode, f"{path}: {files.get(path)}, want {mode}"
    assert [p for p in files if p.startswith("/usr/share/licenses/") and p.endswith("/LICENSE")]
    assert not [p for p in files if p.startswith("/etc/libvirt/hooks")]
    python = {p for p in files if p.endswith((".py", ".pyc"))}
    assert not [p for p in python if not p.startswith(PRIVATE + "/")]
    assert not [p for p in files if "-packages/" in p or p == "/usr/bin/vdp-hooks"]
    assert _source_modules() <= python
    # Byte-compiled at build time (Fedora's way), both optimisation levels, for every module.
    for module in _source_modules():
        folder, name = module.rsplit("/", 1)
        assert [p for p in python if p.startswith(f"{folder}/__pycache__/{name[:-3]}.cpython-")], module


def test_rpm_config_and_dependencies(rpm: Path) -> None:
    assert _run(["rpm", "-qp", "--configfiles", str(rpm)]).stdout.split() == [CONFIG]
    flags = _run(["rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", str(rpm)]).stdout
    assert re.search(r"^\S*n\S* /etc/libvirt/vdp-hooks\.conf$", flags, re.M), "config must be noreplace"
    assert re.search(r"^\S*g\S* /run/libvirt/vdp-hooks$", flags, re.M), "state dir: %ghost"
    requires = _run(["rpm", "-qpR", str(rpm)]).stdout.splitlines()
    assert "python3 >= 3.9" in requires
    assert "python3-lxml" in requires
    assert any(r.startswith("python3-pyroute2") for r in requires)
    assert not [r for r in requires if r.startswith("lldpad")]
    assert _run(["rpm", "-qp", "--recommends", str(rpm)]).stdout.split() == ["lldpad"]
    arch = _run(["rpm", "-qp", "--qf", "%{ARCH}", str(rpm)]).stdout
    assert arch == "noarch"


# ------------------------------------------------------------------------------- removal disables the hook
def _preun_scripts(rpm_path: Path | None) -> dict[str, str]:
    """The two removal scripts as shell text, before any packaging tool expanded them."""
    scripts = {"deb-prerm": (ROOT / "packaging/debian/libvirt-vdp-hooks.prerm").read_text()}
    if rpm_path is not None:
        text = _run(["rpm", "-qp", "--qf", "%{PREUN}", str(rpm_path)]).stdout
        scripts["rpm-preun"] = text
    return scripts


@pytest.fixture
def removal_scripts(request: pytest.FixtureRequest) -> dict[str, str]:
    rpm_path = request.getfixturevalue("rpm") if not _missing(RPM_TOOLS) else None
    return _preun_scripts(rpm_path)


def _relocate(script: str, hooks_dir: Path, entry: Path) -> str:
    assert "/etc/libvirt/hooks" in script and ENTRY in script
    return script.replace(ENTRY, str(entry)).replace("/etc/libvirt/hooks", str(hooks_dir))


def _run_removal(kind: str, script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{kind}.sh"
    path.write_text(script.replace("#DEBHELPER#", ""))
    arg = "remove" if kind == "deb-prerm" else "0"
    return _run(["sh", str(path), arg])


@pytest.mark.parametrize("kind", ["deb-prerm", "rpm-preun"])
def test_removal_drops_only_our_link(kind: str, removal_scripts: dict[str, str], tmp_path: Path) -> None:
    if kind not in removal_scripts:
        pytest.skip("rpm is missing: cannot read the %preun of the RPM")
    hooks_dir, entry = tmp_path / "hooks", tmp_path / "libexec" / "qemu"
    (hooks_dir / "qemu.d").mkdir(parents=True)
    entry.parent.mkdir()
    entry.write_text("#!/bin/sh\nexit 0\n")
    entry.chmod(0o755)
    foreign = hooks_dir / "qemu.d" / "40-foreign"
    foreign.write_text("#!/bin/sh\nexit 0\n")
    (hooks_dir / "qemu.d" / "50-vdp-hooks").symlink_to(entry)
    (hooks_dir / "qemu").symlink_to("/bin/true")  # somebody else's single-script hook
    proc = _run_removal(kind, _relocate(removal_scripts[kind], hooks_dir, entry), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(hooks_dir / "qemu.d" / "50-vdp-hooks")
    assert foreign.read_text() == "#!/bin/sh\nexit 0\n"
    assert os.readlink(hooks_dir / "qemu") == "/bin/true"
    assert "vdp-hooks(8)" in proc.stderr and "replay" in proc.stderr


@pytest.mark.parametrize("kind", ["deb-prerm", "rpm-preun"])
def test_removal_keeps_foreign_files_at_our_names(
    kind: str, removal_scripts: dict[str, str], tmp_path: Path
) -> None:
    if kind not in removal_scripts:
        pytest.skip("rpm is missing: cannot read the %preun of the RPM")
    hooks_dir, entry = tmp_path / "hooks", tmp_path / "libexec" / "qemu"
    (hooks_dir / "qemu.d").mkdir(parents=True)
    entry.parent.mkdir()
    entry.write_text("#!/bin/sh\nexit 0\n")
    ours = hooks_dir / "qemu.d" / "50-vdp-hooks"
    ours.write_text("#!/bin/sh\n# the admin's own script under our name\n")
    (hooks_dir / "qemu").symlink_to(tmp_path / "elsewhere")
    proc = _run_removal(kind, _relocate(removal_scripts[kind], hooks_dir, entry), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ours.read_text().startswith("#!/bin/sh\n# the admin's own")
    assert os.path.islink(hooks_dir / "qemu")
    assert "disabled" not in proc.stderr


@pytest.mark.parametrize("kind", ["deb-prerm", "rpm-preun"])
def test_removal_drops_a_relative_link_and_the_old_location(
    kind: str, removal_scripts: dict[str, str], tmp_path: Path
) -> None:
    """A relative link to our entry, and /etc/libvirt/hooks/qemu as made on libvirt < 6.5, are ours too."""
    if kind not in removal_scripts:
        pytest.skip("rpm is missing: cannot read the %preun of the RPM")
    hooks_dir, entry = tmp_path / "hooks", tmp_path / "libexec" / "qemu"
    hooks_dir.mkdir()
    entry.parent.mkdir()
    entry.write_text("#!/bin/sh\nexit 0\n")
    (hooks_dir / "qemu").symlink_to(os.path.relpath(entry, hooks_dir))
    proc = _run_removal(kind, _relocate(removal_scripts[kind], hooks_dir, entry), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(hooks_dir / "qemu")


def test_deb_upgrade_keeps_the_link(tmp_path: Path) -> None:
    """prerm upgrade / deconfigure / failed-upgrade touch nothing."""
    script = (ROOT / "packaging/debian/libvirt-vdp-hooks.prerm").read_text()
    hooks_dir, entry = tmp_path / "hooks", tmp_path / "libexec" / "qemu"
    (hooks_dir / "qemu.d").mkdir(parents=True)
    entry.parent.mkdir()
    entry.write_text("#!/bin/sh\nexit 0\n")
    (hooks_dir / "qemu.d" / "50-vdp-hooks").symlink_to(entry)
    path = tmp_path / "prerm"
    path.write_text(_relocate(script, hooks_dir, entry).replace("#DEBHELPER#", ""))
    for arg in ("upgrade", "deconfigure", "failed-upgrade"):
        assert _run(["sh", str(path), arg, "0.1.0"]).returncode == 0
        assert os.path.islink(hooks_dir / "qemu.d" / "50-vdp-hooks"), arg


# ------------------------------------------------------------------------------------- documentation sync
def test_config_man_page_documents_every_hooks_key() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from hooks.config import HOOKS_OPTIONS
    finally:
        sys.path.remove(str(ROOT))
    page = (ROOT / "packaging/man/vdp-hooks.conf.5").read_text()
    undocumented = [key for key in HOOKS_OPTIONS if not re.search(rf"^\.BR {re.escape(key)}\b", page, re.M)]
    assert not undocumented, f"vdp-hooks.conf(5) lacks [hooks] keys: {undocumented}"


def test_man_page_documents_every_cli_command() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from hooks import cli
    finally:
        sys.path.remove(str(ROOT))
    parser = cli._parser()
    commands = list(next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices or [])
    page = (ROOT / "packaging/man/vdp-hooks.8").read_text()
    missing = [c for c in commands if not re.search(rf"^\.B[IR]? \"?{c}\b", page, re.M)]
    assert not missing, f"vdp-hooks(8) lacks commands: {missing}"


# ---------------------------------------------------------------------------------- security modules
def test_selinux_module_compiles(tmp_path: Path) -> None:
    if shutil.which("checkmodule", path=SYSTEM_PATH) is None:
        pytest.skip("checkmodule missing (apt-get install checkpolicy)")
    out = tmp_path / "libvirt_vdp_hooks.mod"
    proc = _run(["checkmodule", "-M", "-m", "-o", str(out), str(ROOT / "packaging/selinux/libvirt_vdp_hooks.te")])
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_apparmor_abstraction_compiles_into_libvirtd_profile(tmp_path: Path) -> None:
    """The shipped abstraction, included the documented way into libvirtd's real profile, compiles."""
    parser = shutil.which("apparmor_parser", path=SYSTEM_PATH)
    profile = Path("/etc/apparmor.d/usr.sbin.libvirtd")
    if parser is None or not profile.exists():
        pytest.skip("needs apparmor_parser (apparmor) and libvirtd's profile (libvirt-daemon-system)")
    base = tmp_path / "apparmor.d"
    shutil.copytree("/etc/apparmor.d", base, symlinks=True)
    shutil.copy(ROOT / "packaging/apparmor/libvirt-vdp-hooks", base / "abstractions" / "libvirt-vdp-hooks")
    (base / "local").mkdir(exist_ok=True)
    (base / "local" / "usr.sbin.libvirtd").write_text("include if exists <abstractions/libvirt-vdp-hooks>\n")
    proc = _run([parser, "--base", str(base), "-I", str(base), "-Q", "-K", "-p", str(base / profile.name)])
    assert proc.returncode == 0, proc.stderr
    assert "/usr/libexec/libvirt-vdp-hooks/qemu rix," in proc.stdout
    assert "network netlink dgram," in proc.stdout


# --------------------------------------------------------------------------------- real install (root)
def _dpkg_status() -> str:
    proc = _run(["dpkg-query", "-W", "-f", "${db:Status-Status}", NAME])
    return proc.stdout.strip() if proc.returncode == 0 else "not-installed"


@pytest.fixture
def two_debs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    if os.geteuid() != 0:
        pytest.skip("installs a package with dpkg: needs root")
    missing = _missing_deb_tools() + _missing(("unshare", "dpkg", "mount"))
    if missing:
        pytest.skip(f"missing: {', '.join(missing)}")
    status = _dpkg_status()
    if status not in ("not-installed", "config-files", ""):
        pytest.skip(f"{NAME} is already installed here ({status}); not touching it")
    if status == "config-files" or os.path.exists(PRIVATE) or os.path.exists(ENTRY):
        pytest.skip(f"{NAME} left files on this machine (dpkg status {status!r}); not touching them")
    v1 = _build("deb", tmp_path_factory.mktemp("deb-v1"))
    v2 = _build("deb", tmp_path_factory.mktemp("deb-v2"), version="0.1.0+1")
    yield v1, v2


@pytest.mark.lab
def test_install_enable_upgrade_remove_purge(two_debs: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = two_debs
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    try:
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "/usr/bin/python3", "-I", __file__,
             "lifecycle", str(v1), str(v2), str(scratch)],
            capture_output=True, text=True, timeout=600, check=False,
        )
        steps = [json.loads(line[5:]) for line in proc.stdout.splitlines() if line.startswith("STEP ")]
        log = "\n".join(f"{s['step']}: {s['ok']} {s.get('detail', '')}" for s in steps)
        print(log)  # shown with -rA: what was checked
        assert proc.returncode == 0, f"{log}\n--- stderr ---\n{proc.stderr[-4000:]}"
        assert steps and all(s["ok"] for s in steps), log
    finally:
        # Whatever happened inside, the package must not stay on this machine.
        if _dpkg_status() not in ("not-installed", ""):
            _dpkg(["--purge", NAME])
    assert _dpkg_status() in ("not-installed", "")
    assert not os.path.exists(PRIVATE) and not os.path.exists(ENTRY)


def _dpkg(args: list[str]) -> subprocess.CompletedProcess[str]:
    """dpkg, waiting for the lock when another installer on this machine holds it."""
    for _ in range(60):
        proc = _run(["dpkg", *args], stdin=subprocess.DEVNULL)
        if proc.returncode == 0 or "lock" not in proc.stderr:
            return proc
        time.sleep(2)
    return proc


# The lifecycle runs as a child in its own mount namespace: /etc/libvirt and /run are scratch copies,
# so no libvirtd on this machine (the host's or another lab's) can see the hooks it creates.
def _lifecycle(v1: str, v2: str, scratch: str) -> int:
    failures = 0

    def step(name: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print("STEP " + json.dumps({"step": name, "ok": bool(ok), "detail": detail}), flush=True)

    def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
        return _run(list(cmd), stdin=subprocess.DEVNULL)

    etc = Path(scratch) / "etc-libvirt"
    shutil.copytree("/etc/libvirt", etc, symlinks=True) if os.path.isdir("/etc/libvirt") else etc.mkdir()
    created_mountpoint = not os.path.isdir("/etc/libvirt")
    if created_mountpoint:
        os.makedirs("/etc/libvirt")
    sh("mount", "--bind", str(etc), "/etc/libvirt").check_returncode()
    sh("mount", "-t", "tmpfs", "-o", "mode=755", "run", "/run").check_returncode()
    hooks = Path("/etc/libvirt/hooks")
    foreign = hooks / "qemu.d" / "40-foreign"
    link = Path(HOOK_LINK)
    try:
        (hooks / "qemu.d").mkdir(parents=True, exist_ok=True)
        foreign.write_text("#!/bin/sh\n# someone else's hook\nexit 0\n")
        foreign.chmod(0o755)

        proc = _dpkg(["-i", v1])
        step("install v1", proc.returncode == 0, proc.stderr[-500:])
        step("status installed", _dpkg_status() == "installed", _dpkg_status())
        modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in (ENTRY, LAUNCHER, CONFIG) if os.path.exists(p)}
        step("modes", modes == {ENTRY: 0o755, LAUNCHER: 0o755, CONFIG: 0o644}, repr(modes))
        step("not enabled by itself", not os.path.lexists(link) and not os.path.lexists(hooks / "qemu"))
        step("install message", "vdp-hooks enable" in proc.stderr, proc.stderr[-300:])
        if shutil.which("systemd-tmpfiles"):
            sdir = Path("/run/libvirt/vdp-hooks")
            ok = sdir.is_dir() and stat.S_IMODE(sdir.stat().st_mode) == 0o700 and sdir.stat().st_uid == 0
            step("state dir from tmpfiles.d", ok)
        pyc = list(Path(PRIVATE).rglob("*.pyc"))
        step("byte-compiled at install", len(pyc) > 0, f"{len(pyc)} .pyc")

        proc = sh(LAUNCHER, "--help")
        step("launcher runs", proc.returncode == 0 and "enable" in proc.stdout, proc.stderr[-500:])
        proc = sh(LAUNCHER, "enable")
        step("vdp-hooks enable", proc.returncode == 0, proc.stdout[-300:] + proc.stderr[-500:])
        step("link made by enable", os.path.islink(link) and os.readlink(link) == ENTRY,
             os.readlink(link) if os.path.islink(link) else "no link")
        xml = "<domain type='qemu'><name>g</name><uuid>5b0e3c2a-44c6-4d3b-9f5e-2a1d7c9e8b10</uuid></domain>"
        for op in (("prepare", "begin"), ("release", "end")):
            run = subprocess.run([str(link), "g", *op, "-"], input=xml, capture_output=True, text=True,
                                 timeout=60, check=False, env={"PATH": SYSTEM_PATH})
            step(f"entry through the link: {' '.join(op)}", run.returncode == 0 and run.stdout == "",
                 run.stderr[-300:])

        with open(CONFIG, "a") as fh:
            fh.write("\n# edited by the admin (test)\n")
        journal = Path("/run/libvirt/vdp-hooks")
        journal.mkdir(mode=0o700, parents=True, exist_ok=True)
        (journal / "kept-by-upgrade.test").write_text("x")

        proc = _dpkg(["-i", v2])
        step("upgrade to v2", proc.returncode == 0, proc.stderr[-500:])
        version = _run(["dpkg-query", "-W", "-f", "${Version}", NAME]).stdout
        step("v2 installed", version == "0.1.0+1", version)
        step("upgrade keeps config edits", "# edited by the admin (test)" in Path(CONFIG).read_text())
        step("upgrade keeps the link", os.path.islink(link) and os.readlink(link) == ENTRY)
        step("upgrade keeps the journal", (journal / "kept-by-upgrade.test").exists())
        step("upgrade keeps the foreign hook", foreign.exists())
        (journal / "kept-by-upgrade.test").unlink()

        proc = _dpkg(["-r", NAME])
        step("remove", proc.returncode == 0, proc.stderr[-500:])
        step("remove drops the link", not os.path.lexists(link))
        step("remove keeps the foreign hook", foreign.read_text().startswith("#!/bin/sh\n# someone else's"))
        step("remove says how to tear down", "vdp-hooks(8)" in proc.stderr, proc.stderr[-400:])
        left = [p for p in (ENTRY, LAUNCHER, PRIVATE) if os.path.lexists(p)]
        step("code gone", not left, repr(left))
        step("config kept until purge", Path(CONFIG).exists() and _dpkg_status() == "config-files",
             _dpkg_status())

        # A foreign file at our link's name survives a removal.
        proc = _dpkg(["-i", v1])
        step("reinstall v1", proc.returncode == 0, proc.stderr[-500:])
        link.write_text("#!/bin/sh\n# the admin's own 50-vdp-hooks\nexit 0\n")
        proc = _dpkg(["-r", NAME])
        step("remove with a foreign 50-vdp-hooks", proc.returncode == 0, proc.stderr[-500:])
        step("foreign 50-vdp-hooks kept", link.is_file() and "admin's own" in link.read_text())
        link.unlink()

        held = sorted(os.listdir(journal)) if journal.is_dir() else []
        proc = _dpkg(["--purge", NAME])
        step("purge", proc.returncode == 0, proc.stderr[-500:])
        step("purge removes the conffile", not os.path.exists(CONFIG))
        # An empty state directory goes; one that still holds something (state of running guests) stays.
        step("purge: state dir gone only if empty", journal.exists() == bool(held), repr(held))
        step("not installed", _dpkg_status() in ("not-installed", ""), _dpkg_status())
    finally:
        if _dpkg_status() not in ("not-installed", ""):
            _dpkg(["--purge", NAME])
        sh("umount", "/run")
        sh("umount", "/etc/libvirt")
        if created_mountpoint:
            os.rmdir("/etc/libvirt")
    return 1 if failures else 0


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "lifecycle":
    sys.exit(_lifecycle(sys.argv[2], sys.argv[3], sys.argv[4]))


def test_agent_unit_is_notify_restarts_on_failure_and_is_never_enabled_by_the_package() -> None:
    unit = (ROOT / "packaging/systemd/libvirt-vdp-hooks-agent.service").read_text()
    keys = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert keys["Type"] == "notify" and keys["Restart"] == "on-failure"
    assert keys["ExecStart"] == "/usr/sbin/vdp-hooks agent"
    assert set(keys["After"].split()) == {"lldpad.service", "libvirtd.service", "virtqemud.service"}
    assert "Requires" not in keys and "Wants" not in keys  # it outlives lldpad/libvirtd restarts
    rules = (ROOT / "packaging/debian/rules").read_text()
    assert "dh_installsystemd --no-enable --no-start" in rules
    spec = (ROOT / "packaging/rpm/libvirt-vdp-hooks.spec").read_text()
    assert "%systemd_post " not in spec and "systemctl enable" not in spec and "systemctl start" not in spec
