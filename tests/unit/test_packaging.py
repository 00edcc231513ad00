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
RPM_TOOLS = ("rpmbuild", "rpm", "rpm2cpio", "cpio", "checkmodule", "semodule_package")


def _missing(tools: tuple[str, ...]) -> list[str]:
    return [t for t in tools if shutil.which(t, path=SYSTEM_PATH) is None]


def _missing_deb_tools() -> list[str]:
    missing = _missing(DEB_TOOLS)
    if not Path("/usr/share/dh-python/dhpython/build/plugin_pyproject.py").exists():
        missing.append("pybuild-plugin-pyproject")
    return missing


def _run(cmd: list[str], env_extra: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=SYSTEM_PATH + ":" + os.environ.get("PATH", ""), **(env_extra or {}))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, **kwargs)  # type: ignore[call-overload]


def _build(kind: str, workdir: Path, version: str | None = None) -> Path:
    """Build one package with the project's script; the path of the result (build output in build.log)."""
    outdir = workdir / "out"
    cmd = ["sh", str(BUILD), f"--{kind}", "--workdir", str(workdir), "--outdir", str(outdir)]
    if version:
        cmd += ["--version", version]
    proc = _run(cmd, cwd=ROOT, timeout=900)
    (workdir / "build.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"build-packages.sh --{kind} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    found = sorted(outdir.glob("*.deb" if kind == "deb" else "*.noarch.rpm"))
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
        "/usr/share/man/man8/vdp-hooks.8.gz": 0o644,
        "/usr/share/man/man5/vdp-hooks.conf.5.gz": 0o644,
        "/usr/share/doc/libvirt-vdp-hooks/copyright": 0o644,
        "/usr/share/doc/libvirt-vdp-hooks/README.md.gz": 0o644,
        "/etc/apparmor.d/abstractions/libvirt-vdp-hooks": 0o644,
    }
    # dh_installsystemd puts units where the building release keeps them (/lib on Debian 12, /usr/lib on 13).
    units = [p for p in files if p.endswith("systemd/system/libvirt-vdp-hooks-agent.service")]
    assert len(units) == 1 and units[0] in {f"{d}/systemd/system/libvirt-vdp-hooks-agent.service"
                                            for d in ("/lib", "/usr/lib")}, units
    expected[units[0]] = 0o644
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
    abi = [r for r in requires if r.startswith("python(abi) = ")]
    assert abi and tuple(int(x) for x in abi[0].split(" = ")[1].split(".")) >= (3, 9), requires
    assert not [r for r in requires if r.startswith("lldpad")]
    assert _run(["rpm", "-qp", "--recommends", str(rpm)]).stdout.split() == ["lldpad", "python3-libvirt"]
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
    """The module source (.te rules, .fc file contexts) builds into a loadable policy package, as the RPM's
    %build does."""
    missing = _missing(("checkmodule", "semodule_package"))
    if missing:
        pytest.skip(f"{', '.join(missing)} missing (apt-get install checkpolicy semodule-utils)")
    src = ROOT / "packaging/selinux"
    mod, pp = tmp_path / "libvirt_vdp_hooks.mod", tmp_path / "libvirt_vdp_hooks.pp"
    proc = _run(["checkmodule", "-M", "-m", "-o", str(mod), str(src / "libvirt_vdp_hooks.te")])
    assert proc.returncode == 0, proc.stderr
    proc = _run(["semodule_package", "-o", str(pp), "-m", str(mod), "-f", str(src / "libvirt_vdp_hooks.fc")])
    assert proc.returncode == 0, proc.stderr
    assert b"/usr/libexec/libvirt-vdp-hooks/qemu" in pp.read_bytes()


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


# ------------------------------------------------------------------------------------- build environment
def _control_build_depends() -> list[str]:
    control = (ROOT / "packaging/debian/control").read_text()
    field = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S)
    assert field, "no Build-Depends in debian/control"
    names = [re.sub(r"\s*\(.*?\)", "", d).strip() for d in field.group(1).split(",")]
    return [n for n in names if n]


def test_ci_installs_everything_the_package_builds_need() -> None:
    """dpkg-checkbuilddeps also requires build-essential of every build; the RPM %build needs checkpolicy's
    checkmodule and semodule-utils' semodule_package.  A fresh machine has none of them."""
    listed = {
        line.strip() for line in (ROOT / ".ci/apt-packages").read_text().splitlines() if not line.startswith("#")
    }
    provided = {"debhelper-compat": "debhelper"}  # a virtual package of debhelper
    wanted = {provided.get(d, d) for d in _control_build_depends()}
    wanted |= {"build-essential", "checkpolicy", "semodule-utils", "rpm", "cpio", "lintian", "rpmlint", "man-db"}
    assert not sorted(wanted - listed), f"missing from .ci/apt-packages: {sorted(wanted - listed)}"


def test_versions_agree() -> None:
    """One version everywhere a user or a package manager reads one."""
    setup_cfg = re.search(r"^version *= *(\S+)", (ROOT / "setup.cfg").read_text(), re.M)
    module = re.search(r'^__version__ = "([^"]+)"', (ROOT / "hooks/__init__.py").read_text(), re.M)
    changelog = re.match(r"\S+ \(([^)]+)\)", (ROOT / "packaging/debian/changelog").read_text())
    spec = re.search(r"^Version:\s*(\S+)", (ROOT / f"packaging/rpm/{NAME}.spec").read_text(), re.M)
    man = re.search(r'^\.TH .* "libvirt-vdp-hooks (\S+)"', (ROOT / "packaging/man/vdp-hooks.8").read_text(), re.M)
    found = {k: m.group(1) if m else None for k, m in
             {"setup.cfg": setup_cfg, "hooks": module, "changelog": changelog, "spec": spec, "man": man}.items()}
    assert len(set(found.values())) == 1 and None not in found.values(), found


def _run_version(private: Path, launcher: Path, tmp_path: Path) -> str:
    """What the packaged launcher prints for --version, pointed at the extracted private directory."""
    relocated = tmp_path / "vdp-hooks-relocated"
    relocated.write_text(launcher.read_text().replace(f'"{PRIVATE}"', repr(str(private))))
    proc = _run(["/usr/bin/python3", "-I", str(relocated), "--version"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_deb_launcher_shows_the_package_version(deb: Path, tmp_path: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(tmp_path)]).check_returncode()
    version = _run(["dpkg-deb", "--field", str(deb), "Version"]).stdout.strip()
    shown = _run_version(tmp_path / PRIVATE.lstrip("/"), tmp_path / LAUNCHER.lstrip("/"), tmp_path)
    assert shown == f"vdp-hooks {version}"


def test_packaged_code_writes_no_bytecode_at_run_time(deb: Path, tmp_path: Path) -> None:
    """A root hook must not leave __pycache__ files that no package owns in the private directory: the
    DEB's py3compile and the RPM's build compile it; the entry and the launcher never write there."""
    _run(["dpkg-deb", "-x", str(deb), str(tmp_path)]).check_returncode()
    private = tmp_path / PRIVATE.lstrip("/")
    assert not list(private.rglob("*.pyc")), "the DEB itself ships no byte-code"
    relocated_entry = tmp_path / "entry"
    relocated_entry.write_text((tmp_path / ENTRY.lstrip("/")).read_text().replace(f'"{PRIVATE}"', repr(str(private))))
    relocated_entry.chmod(0o755)
    xml = "<domain><name>g</name><uuid>8d6bcd3c-0c3f-4b38-b3b8-5c2e1c8f9a02</uuid><devices><interface>" \
          "<virtualport type='802.1Qbh'/></interface></devices></domain>"
    env = {"PATH": SYSTEM_PATH, "VDP_HOOKS_STATE_DIR": str(tmp_path / "state"),
           "VDP_HOOKS_CONFIG": str(tmp_path / "none.conf")}
    proc = subprocess.run([str(relocated_entry), "g", "release", "end", "-"], input=xml, capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    _run_version(private, tmp_path / LAUNCHER.lstrip("/"), tmp_path)
    assert not list(private.rglob("__pycache__")), "the packaged entry or launcher wrote byte-code"


# ------------------------------------------------------------------------------------- RPM as Fedora takes it
def _rpm_query(path: Path, *args: str) -> str:
    proc = _run(["rpm", "-qp", *args, str(path)])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_rpm_requires_the_interpreter_its_bytecode_is_for(rpm: Path) -> None:
    """Byte-code compiled for one Python and a python(abi) requirement naming the same one; the libraries
    as python3dist() (the code is not in sitelib, so rpm's generator cannot find them)."""
    requires = _rpm_query(rpm, "-R").splitlines()
    files = _rpm_query(rpm, "-l").splitlines()
    tags = {f"{f.group(1)}.{f.group(2)}" for f in (re.search(r"\.cpython-(\d)(\d+)", p) for p in files) if f}
    assert len(tags) == 1, f"byte-code for more than one (or no) Python: {tags}"
    assert f"python(abi) = {tags.pop()}" in requires, requires
    assert "python3dist(lxml)" in requires
    assert "python3dist(pyroute2) >= 0.7" in requires
    assert not [r for r in requires if r.startswith(("python3-", "python3 "))], "python3dist(), not package names"


def test_rpm_build_ran_check_and_the_srpm_builds_from_a_clean_tarball(rpm: Path) -> None:
    workdir = rpm.parent.parent
    log = (workdir / "build.log").read_text()
    assert re.search(r"^\d+ passed", log, re.M), "the unit tests did not run in %check"
    (srpm,) = rpm.parent.glob("*.src.rpm")
    build_requires = _rpm_query(srpm, "-R").splitlines()
    for wanted in ("python3-devel", "systemd-rpm-macros", "checkpolicy", "python3dist(pytest)"):
        assert wanted in build_requires, f"BuildRequires: {wanted} missing ({build_requires})"
    (tarball,) = rpm.parent.glob(f"{NAME}-*.tar.gz")
    assert f"{tarball.name}\n" in _rpm_query(srpm, "-l")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    top = tarball.name[: -len(".tar.gz")]
    assert all(n == top or n.startswith(top + "/") for n in names)
    relative = [n[len(top) + 1 :] for n in names if n != top]
    products = re.compile(r"^(\.pybuild|build|dist|debian|\.venv)(/|$)|(^|/)__pycache__(/|$)|\.egg-info")
    leftovers = [n for n in relative if products.search(n)]
    assert not leftovers, f"build products in the source tarball: {leftovers[:10]}"
    tracked = _run(["git", "ls-files"], cwd=ROOT).stdout.split()
    if tracked:  # a git checkout: every tracked file is in the tarball
        assert not sorted(set(tracked) - set(relative) - _deleted_in_tree())


def _deleted_in_tree() -> set[str]:
    return set(_run(["git", "ls-files", "--deleted"], cwd=ROOT).stdout.split())


# Directories of the base system: owned by Fedora's filesystem, man-pages or systemd packages.
BASE_DIRS = {"/etc", "/run", "/usr", "/usr/sbin", "/usr/libexec", "/usr/lib", "/usr/lib/tmpfiles.d", "/usr/share",
             "/usr/share/doc", "/usr/share/licenses", "/usr/share/man", "/usr/share/man/man5",
             "/usr/share/man/man8", "/usr/share/selinux", "/usr/share/selinux/packages",
             "/usr/lib/systemd/system"}  # %{_unitdir} belongs to systemd (Fedora's systemd guideline)


def test_rpm_owns_every_directory_it_creates(rpm: Path) -> None:
    listing = _rpm_query(rpm, "--qf", "[%{FILEMODES:perms} %{FILENAMES}\\n]").splitlines()
    paths = {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in listing}
    dirs = {p for p, perms in paths.items() if perms.startswith("d")}
    unowned = sorted({os.path.dirname(p) for p in paths} - dirs - BASE_DIRS)
    assert not unowned, f"directories the RPM puts files in but does not own: {unowned}"
    assert {"/etc/libvirt", "/run/libvirt", "/run/libvirt/vdp-hooks", PRIVATE} <= dirs


def test_rpm_ships_the_selinux_module_and_the_package_version(rpm: Path, tmp_path: Path) -> None:
    cpio = subprocess.run(["rpm2cpio", str(rpm)], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=cpio, cwd=tmp_path, check=True)
    module = tmp_path / "usr/share/selinux/packages" / NAME / "libvirt_vdp_hooks.pp"
    assert module.stat().st_size > 0
    version = _rpm_query(rpm, "--qf", "%{VERSION}")
    shown = _run_version(tmp_path / PRIVATE.lstrip("/"), tmp_path / LAUNCHER.lstrip("/"), tmp_path)
    assert shown == f"vdp-hooks {version}"


# ------------------------------------------------------------------------- purge removes what enable made
def _purge_scripts(rpm_path: Path | None) -> dict[str, tuple[str, str]]:
    """The scripts that run on purge / erase, with the argument they get then."""
    scripts = {"deb-postrm": ((ROOT / "packaging/debian/libvirt-vdp-hooks.postrm").read_text(), "purge")}
    if rpm_path is not None:
        scripts["rpm-postun"] = (_rpm_query(rpm_path, "--qf", "%{POSTUN}"), "0")
    return scripts


@pytest.mark.parametrize("kind", ["deb-postrm", "rpm-postun"])
@pytest.mark.parametrize("hooks_existed", [False, True])
def test_purge_removes_the_directories_enable_created(kind: str, hooks_existed: bool, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    """enable (the real CLI) creates what is missing and lists it; purge removes exactly that, when empty."""
    rpm_path = request.getfixturevalue("rpm") if kind == "rpm-postun" and not _missing(RPM_TOOLS) else None
    scripts = _purge_scripts(rpm_path)
    if kind not in scripts:
        pytest.skip("rpm is missing: cannot read the %postun of the RPM")
    script, arg = scripts[kind]
    etc = tmp_path / "etc-libvirt"
    hooks_dir = etc / "hooks"
    etc.mkdir()
    if hooks_existed:
        hooks_dir.mkdir()
    conf = tmp_path / "vdp-hooks.conf"
    conf.write_text("[hooks]\nfeatures = links\nsyslog = no\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), VDP_HOOKS_CONFIG=str(conf), VDP_HOOKS_STATE_DIR=str(tmp_path / "st"))
    proc = subprocess.run([sys.executable, "-m", "hooks.cli", "--hooks-dir", str(hooks_dir), "enable"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (hooks_dir / "qemu.d" / "50-vdp-hooks").unlink()  # what the removal (prerm / %preun) does first
    path = tmp_path / f"{kind}.sh"
    relocated = script.replace("/etc/libvirt", str(etc)).replace("/run/libvirt/vdp-hooks", str(tmp_path / "st"))
    path.write_text(relocated.replace("#DEBHELPER#", ""))
    assert _run(["sh", str(path), arg]).returncode == 0
    assert not (hooks_dir / "qemu.d").exists()
    assert hooks_dir.is_dir() == hooks_existed, "a hooks directory that was there before enable stays"
    assert etc.is_dir()


def test_purge_keeps_created_directories_that_hold_something(tmp_path: Path) -> None:
    etc = tmp_path / "etc-libvirt"
    qemu_d = etc / "hooks" / "qemu.d"
    qemu_d.mkdir(parents=True)
    (etc / "hooks" / ".vdp-hooks-created").write_text(f"{etc / 'hooks'}\n{qemu_d}\n")
    (qemu_d / "10-other").write_text("#!/bin/sh\n")
    script = (ROOT / "packaging/debian/libvirt-vdp-hooks.postrm").read_text().replace("/etc/libvirt", str(etc))
    path = tmp_path / "postrm"
    path.write_text(script.replace("/run/libvirt/vdp-hooks", str(tmp_path / "st")).replace("#DEBHELPER#", ""))
    assert _run(["sh", str(path), "purge"]).returncode == 0
    assert (qemu_d / "10-other").exists()
    assert not (etc / "hooks" / ".vdp-hooks-created").exists()


# -------------------------------------------------------------------- AppArmor reload on upgrade (DEB)
def _apparmor_upgrade(tmp_path: Path, *, change: bool, local: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """preinst upgrade, the new abstraction unpacked, postinst configure OLD: what apparmor_parser got.

    The kernel here has no AppArmor, so apparmor_parser is a stand-in that records its arguments; sysfs
    and /etc/apparmor.d are scratch copies."""
    root = tmp_path / "root"
    aa = root / "etc/apparmor.d"
    (aa / "abstractions").mkdir(parents=True)
    (aa / "local").mkdir()
    for profile in ("usr.sbin.libvirtd", "usr.sbin.virtqemud"):
        (aa / profile).write_text(f"profile {profile} {{}}\n")
        (aa / "local" / profile).write_text(local)
    abstraction = aa / "abstractions/libvirt-vdp-hooks"
    abstraction.write_text((ROOT / "packaging/apparmor/libvirt-vdp-hooks").read_text())
    sysfs = root / "sys/module/apparmor/parameters"
    sysfs.mkdir(parents=True)
    (sysfs / "enabled").write_text("Y\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    parser = bindir / "apparmor_parser"
    parser.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    parser.chmod(0o755)

    def script(name: str) -> Path:
        text = (ROOT / f"packaging/debian/libvirt-vdp-hooks.{name}").read_text().replace("#DEBHELPER#", "")
        for path in ("/etc/apparmor.d", "/sys/module/apparmor", "/run/libvirt-vdp-hooks", "/etc/libvirt"):
            text = text.replace(path, str(root) + path)
        out = tmp_path / name
        out.write_text(text)
        return out

    (root / "run").mkdir()
    env = dict(os.environ, PATH=f"{bindir}:{SYSTEM_PATH}")
    pre = subprocess.run(["sh", str(script("preinst")), "upgrade", "0.1.0"], env=env, capture_output=True,
                         text=True, check=False)
    assert pre.returncode == 0, pre.stderr
    if change:
        abstraction.write_text(abstraction.read_text() + "  /usr/share/libvirt-vdp-hooks/new r,\n")
    post = subprocess.run(["sh", str(script("postinst")), "configure", "0.1.0"], env=env, capture_output=True,
                          text=True, check=False)
    assert not list((root / "run").iterdir()), "the saved checksum is removed"
    return post, calls.read_text() if calls.exists() else ""


INCLUDE = "include if exists <abstractions/libvirt-vdp-hooks>\n"


@pytest.mark.parametrize(
    ("change", "local", "reloaded"),
    [
        (True, INCLUDE, True),
        (True, "#include <abstractions/libvirt-vdp-hooks>\n", True),  # AppArmor's old include syntax
        (False, INCLUDE, False),  # the abstraction did not change: nothing to reload
        (True, "", False),  # not included: the profiles do not use it
        (True, "# include if exists <abstractions/libvirt-vdp-hooks>\n", False),  # commented out
    ],
)
def test_deb_upgrade_reloads_the_profiles_that_include_a_changed_abstraction(
    tmp_path: Path, change: bool, local: str, reloaded: bool
) -> None:
    post, calls = _apparmor_upgrade(tmp_path, change=change, local=local)
    assert post.returncode == 0, post.stderr
    if reloaded:
        reloads = sorted(line.split()[-1].rsplit("/", 1)[1] for line in calls.splitlines() if line.startswith("-r "))
        assert reloads == ["usr.sbin.libvirtd", "usr.sbin.virtqemud"], calls
        assert "reloaded" in post.stderr
    else:
        assert calls == ""


# ------------------------------------------------------------------------------------------- man page
def test_man_page_renders_every_command_on_its_own_tag_line(tmp_path: Path) -> None:
    """Each command's synopsis line, options included, is one tag line; its text starts below it."""
    if shutil.which("man", path=SYSTEM_PATH) is None:
        pytest.skip("man missing (apt-get install man-db)")
    proc = _run(["man", "-l", str(ROOT / "packaging/man/vdp-hooks.8")],
                env_extra={"LC_ALL": "C", "MANWIDTH": "200", "MAN_KEEP_FORMATTING": ""})
    assert proc.returncode == 0, proc.stderr
    lines = [re.sub(r".\x08", "", line) for line in proc.stdout.splitlines()]
    tags = {line.strip().split(" ")[0]: line.strip() for line in lines if re.match(r"^ {7}[a-z]", line)}
    assert tags.get("emergency") == "emergency [--for DURATION] [--reason TEXT] [--off]", tags.get("emergency")
    assert tags.get("check") == "check [-q]"
    assert tags.get("replay", "").startswith("replay FILE OP SUBOP [EXTRA]")


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
        step("upgrade leaves no AppArmor checksum behind",
             not os.path.exists("/run/libvirt-vdp-hooks.apparmor-before-upgrade"))
        proc = sh(LAUNCHER, "--version")
        step("--version shows the package version", proc.stdout.strip() == "vdp-hooks 0.1.0+1", proc.stdout)
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

        # enable on a host without /etc/libvirt/hooks: purge removes what it created.
        shutil.rmtree(hooks)
        proc = _dpkg(["-i", v1])
        step("reinstall v1 without a hooks directory", proc.returncode == 0, proc.stderr[-500:])
        proc = sh(LAUNCHER, "enable")
        step("enable creates hooks/qemu.d", proc.returncode == 0 and link.is_symlink(), proc.stderr[-300:])
        held = sorted(os.listdir(journal)) if journal.is_dir() else []
        proc = _dpkg(["--purge", NAME])
        step("purge", proc.returncode == 0, proc.stderr[-500:])
        step("purge removes the conffile", not os.path.exists(CONFIG))
        step("purge removes the directories enable created", not hooks.exists(),
             repr(sorted(os.listdir(hooks))) if hooks.exists() else "")
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
    assert "dh_installsystemd --name=libvirt-vdp-hooks-agent --no-enable --no-start" in rules
    spec = (ROOT / "packaging/rpm/libvirt-vdp-hooks.spec").read_text()
    assert "%systemd_post " not in spec and "systemctl enable" not in spec and "systemctl start" not in spec


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_distro_trees_install_what_ci_installs(suite: str) -> None:
    """The other release's tree (tests/distro/) runs the same tests, packaging included: it needs every
    package .ci/apt-packages lists, but the venv tools (the tree runs its own Python's libraries)."""

    def names(path: Path) -> set[str]:
        return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}

    missing = names(ROOT / ".ci/apt-packages") - names(ROOT / f"tests/distro/{suite}.packages")
    assert missing <= {"python3-pip", "python3-venv"}, f"missing from tests/distro/{suite}.packages: {missing}"
