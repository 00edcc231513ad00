"""The entry ``etc-libvirt-hooks/qemu``, exec'd exactly as libvirt runs it: exit codes per operation, the
fast path (decided from raw bytes, without importing our code), and a broken installation that must not make
libvirt kill or refuse running guests.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hooks
from hooks import ops, runner
from hooks.config import HOOKS_OPTIONS
from hooks.feature import BUILTIN_FEATURES, feature_class
from tests.unit.conftest import (
    BEGIN_HOOKS,
    DATA,
    ENTRY,
    MAC_A,
    NEVER_FAIL_HOOKS,
    REPO,
    HookEnv,
    check_contract,
    domain_xml,
    hooks_md,
    interface,
    port,
)

#: Surrogates cannot be passed in argv or encoded (spelled for Debian's hypothesis 6.67 and the newest).
_NO_SURROGATES: Any = ("Cs",)

UNKNOWN_HOOKS = [("frobnicate", "begin"), ("prepare", "end"), ("attach", "begin"), ("start", "end"), ("", "")]
ALL_OPS = "migrate, restore, prepare, start, started, reconnect"


def _load_entry() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("vdp_hooks_entry", str(ENTRY))
    spec = importlib.util.spec_from_loader("vdp_hooks_entry", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _copy_tree(root: Path) -> Path:
    """The entry and hooks/ copied as a source tree of their own (the entry finds hooks/ beside it)."""
    (root / "etc-libvirt-hooks").mkdir(parents=True)
    shutil.copy2(ENTRY, root / "etc-libvirt-hooks" / "qemu")
    shutil.copytree(REPO / "hooks", root / "hooks", ignore=shutil.ignore_patterns("__pycache__"))
    return root / "etc-libvirt-hooks" / "qemu"


# ------------------------------------------------------------------------------------------ the entry's constants
def test_entry_constants_match_the_framework() -> None:
    entry = _load_entry()
    assert hooks.NAMESPACE.encode() in entry._MARKERS
    # The entry's stdlib copies of hooks/ops.py's table.
    assert entry._NEVER_FAIL == ops.NEVER_FAIL
    assert entry._HANDLED == ops.HANDLED
    assert HOOKS_OPTIONS["invocation_timeout"].default == entry._STDIN_SECONDS
    assert entry._STATE_DIR == hooks.STATE_DIR_DEFAULT
    for name in BUILTIN_FEATURES:
        try:
            cls = feature_class(name)
        except hooks.errors.ConfigError:
            continue  # a built-in feature still being written (vdp)
        for marker in cls.markers:
            assert marker in entry._MARKERS, f"feature {name}'s marker {marker!r} is missing from the entry"
        for hook in cls.handles:
            assert hook in entry._HANDLED, f"feature {name} handles {hook} but the entry skips it"


def test_entry_uses_only_the_standard_library_before_the_slow_path() -> None:
    first_lines = ENTRY.read_text().split("def _slow_path", 1)[0]
    assert "import hooks" not in first_lines and "from hooks" not in first_lines
    assert ENTRY.read_text().startswith("#!/usr/bin/python3 -S\n")


# ------------------------------------------------------------------------------------------ exit code per operation
@pytest.mark.parametrize("hook", BEGIN_HOOKS + NEVER_FAIL_HOOKS + UNKNOWN_HOOKS)
def test_every_operation_proceeds_when_all_is_well(hookenv: HookEnv, hook: tuple[str, str]) -> None:
    hookenv.write_config(rec1={"ops": ALL_OPS})
    xml = domain_xml(metadata=hooks_md(port(MAC_A)))
    result = hookenv.run(*hook, xml)
    assert result.returncode == 0


@pytest.mark.parametrize(
    ("hook", "code"),
    [(h, 1) for h in BEGIN_HOOKS] + [(h, 0) for h in NEVER_FAIL_HOOKS] + [(h, 0) for h in UNKNOWN_HOOKS],
)
def test_exit_code_when_a_required_port_fails(hookenv: HookEnv, hook: tuple[str, str], code: int) -> None:
    hookenv.write_config(rec1={"ops": ALL_OPS, "fail": MAC_A})
    xml = domain_xml(metadata=hooks_md(port(MAC_A)))
    result = hookenv.run(*hook, xml)
    assert result.returncode == code
    if code:
        line = result.err.strip()
        for part in ("guest guest1", f"port {MAC_A}", "feature rec1", "refused on purpose", "required by host config"):
            assert part in line, (part, line)


def test_reconnect_that_fails_and_crashes_still_exits_0(hookenv: HookEnv) -> None:
    hookenv.write_config(rec1={"ops": "reconnect", "fail": MAC_A}, rec2={"ops": "reconnect", "crash": "yes"})
    result = hookenv.run("reconnect", "begin", domain_xml(metadata=hooks_md(port(MAC_A))))
    assert result.returncode == 0
    assert [e["feature"] for e in hookenv.events("setup")] == ["rec1", "rec2"]
    assert "recorder crashed on purpose" in hookenv.hook_log()


@pytest.mark.parametrize("args", [[], ["guest1"], ["guest1", "prepare"], ["guest1", "release"]])
def test_missing_arguments_exit_0(hookenv: HookEnv, args: list[str]) -> None:
    result = hookenv.run("", "", domain_xml(metadata=hooks_md(port(MAC_A))), args=args)
    assert result.returncode == 0
    assert hookenv.events() == []


def test_extra_argument_is_optional(hookenv: HookEnv) -> None:
    xml = domain_xml(metadata=hooks_md(port(MAC_A)))
    assert hookenv.run("", "", xml, args=["guest1", "prepare", "begin"]).returncode == 0
    assert hookenv.run("", "", xml, args=["guest1", "release", "end", "migrated", "more"]).returncode == 0
    calls = [(e["feature"], e["call"]) for e in hookenv.events() if e["call"] in ("setup", "teardown")]
    assert calls == [("rec1", "setup"), ("rec2", "setup"), ("rec2", "teardown"), ("rec1", "teardown")]


def test_empty_stdin(hookenv: HookEnv) -> None:
    for hook in BEGIN_HOOKS + NEVER_FAIL_HOOKS:
        assert hookenv.run(*hook, b"").returncode == 0  # nothing for us in nothing


# ------------------------------------------------------------------------------------------ fast path
def test_fast_path_never_imports_our_code(tmp_path: Path) -> None:
    """A copy whose hooks/ cannot even be imported still lets every guest without our markers through."""
    entry = _copy_tree(tmp_path / "src")
    (tmp_path / "src" / "hooks" / "__init__.py").write_text("raise ImportError('hooks/ must not be imported here')\n")
    env = HookEnv(tmp_path, entry=entry)
    plain = (DATA / "plain.xml").read_bytes()
    for hook in BEGIN_HOOKS + NEVER_FAIL_HOOKS + UNKNOWN_HOOKS:
        result = env.run(*hook, plain)
        assert result.returncode == 0, (hook, result.err)
    # The copy really is broken: a guest with our metadata reaches the import and is refused.
    vetoed = env.run("prepare", "begin", domain_xml(metadata=hooks_md(port(MAC_A))))
    assert vetoed.returncode == 1
    assert "cannot load its code" in vetoed.err and "must not be imported here" in vetoed.err
    # A <virtualport> (libvirt-managed port profiles get a host-side preflight) also takes the slow path.
    vport = plain.replace(b"<model type='virtio'/>", b"<virtualport type='802.1Qbg'/><model type='virtio'/>", 1)
    assert env.run("prepare", "begin", vport).returncode == 1


def test_fast_path_imports_nothing_beyond_the_interpreter_start(hookenv: HookEnv) -> None:
    """Measured with -X importtime, with -S as in the shebang: no site, no lxml, none of our modules."""
    argv = [sys.executable, "-S", "-X", "importtime", str(ENTRY), "web-frontend-03", "prepare", "begin", "-"]
    proc = subprocess.run(
        argv, input=(DATA / "plain.xml").read_bytes(), capture_output=True, env=hookenv.env(), check=False
    )
    assert proc.returncode == 0 and proc.stdout == b""
    imported = {line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines() if "|" in line}
    for name in ("hooks", "hooks.runner", "lxml", "lxml.etree", "pyroute2", "site", "json", "configparser"):
        assert name not in imported, f"fast path imported {name}"


def test_release_with_a_journal_takes_the_slow_path_even_without_metadata(hookenv: HookEnv) -> None:
    gid = uuid.uuid4()
    assert hookenv.run("prepare", "begin", domain_xml(guest_uuid=gid, metadata=hooks_md(port(MAC_A)))).returncode == 0
    assert hookenv.journal(gid) is not None
    # The admin removed the metadata while the guest ran: the journal alone brings release end to us.
    bare = domain_xml(guest_uuid=gid)
    assert hookenv.run("release", "end", bare).returncode == 0
    assert hookenv.teardowns() == [("rec2", MAC_A, "assoc"), ("rec1", MAC_A, "assoc")]
    assert hookenv.journal(gid) is None
    assert not any((hookenv.state).glob(f"{gid}*")), "no files left for a released guest"


def test_other_guests_journal_does_not_matter(hookenv: HookEnv) -> None:
    gid = uuid.uuid4()
    assert hookenv.run("prepare", "begin", domain_xml(guest_uuid=gid, metadata=hooks_md(port(MAC_A)))).returncode == 0
    other = domain_xml(guest_uuid=uuid.uuid4(), name="other")
    assert hookenv.run("release", "end", other, name="other").returncode == 0
    assert hookenv.teardowns() == []
    assert hookenv.journal(gid) is not None


def test_journal_does_not_pull_begin_operations_off_the_fast_path(tmp_path: Path) -> None:
    entry = _copy_tree(tmp_path / "src")
    (tmp_path / "src" / "hooks" / "__init__.py").write_text("raise ImportError('not here')\n")
    env = HookEnv(tmp_path, entry=entry)
    gid = uuid.uuid4()
    env.state.mkdir(mode=0o700)
    (env.state / f"{gid}.json").write_text("{}")
    bare = domain_xml(guest_uuid=gid)
    assert env.run("prepare", "begin", bare).returncode == 0  # fast path: the broken code is never reached
    assert env.run("release", "end", bare).returncode == 0  # slow path, broken code, but never fails


# ------------------------------------------------------------------------------------------ broken installation
BREAKAGES = {
    "syntax": "def run(:\n",
    "import": "import hooks_module_that_does_not_exist  # noqa\n",
    "raise": "raise RuntimeError('half-upgraded package')\n",
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_import_never_fails_teardown_and_vetoes_starts(tmp_path: Path, breakage: str) -> None:
    entry = _copy_tree(tmp_path / "src")
    (tmp_path / "src" / "hooks" / "runner.py").write_text(BREAKAGES[breakage])
    env = HookEnv(tmp_path, entry=entry)
    xml = domain_xml(metadata=hooks_md(port(MAC_A)))
    for hook in NEVER_FAIL_HOOKS:
        result = env.run(*hook, xml)
        assert result.returncode == 0, (hook, result.err)
    for hook in BEGIN_HOOKS:
        result = env.run(*hook, xml)
        assert result.returncode == 1, (hook, result.err)
        assert "libvirt-vdp-hooks cannot load its code" in result.err
        assert "reinstall libvirt-vdp-hooks" in result.err
    assert env.run("frobnicate", "begin", xml).returncode == 0


def test_executed_through_its_shebang(hookenv: HookEnv) -> None:
    """libvirt execs the file itself: /usr/bin/python3 -S, site set up only on the slow path."""
    if not os.access(ENTRY, os.X_OK) or not os.path.exists("/usr/bin/python3"):
        pytest.skip("the entry is not executable here or /usr/bin/python3 is missing")
    xml = domain_xml(metadata=hooks_md(port(MAC_A)))
    proc = subprocess.run(
        [str(ENTRY), "guest1", "prepare", "begin", "-"], input=xml, capture_output=True, env=hookenv.env(), check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert [e["feature"] for e in hookenv.events("setup")] == ["rec1", "rec2"]


# ------------------------------------------------------------------------------------------ odd argv (hypothesis)
_arg = st.text(st.characters(blacklist_categories=_NO_SURROGATES, blacklist_characters="\x00"), max_size=12)
_op = st.sampled_from(["migrate", "restore", "prepare", "start", "started", "reconnect", "stopped", "release", "x"])
_sub = st.sampled_from(["begin", "end", "-", ""])


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    args=st.one_of(
        st.lists(_arg, max_size=6),
        st.tuples(_arg, _op, _sub, _arg).map(list),
        st.tuples(_arg, _op, _sub, _arg, _arg).map(list),
    )
)
def test_odd_argv_never_breaks_the_contract(tmp_path_factory: pytest.TempPathFactory, args: list[str]) -> None:
    env = HookEnv(tmp_path_factory.mktemp("argv"))
    env.write_config(rec1={"ops": ALL_OPS})
    result = env.run("", "", domain_xml(metadata=hooks_md(port(MAC_A))), args=args, contract=False)
    check_contract(result)
    hook = tuple(args[1:3]) if len(args) >= 3 else ("", "")
    if hook not in BEGIN_HOOKS:
        assert result.returncode == 0, (args, result.err)


# ------------------------------------------------------------------------------------------ what takes the slow path
_IFID = "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"


def _vport_guest(vport: str) -> bytes:
    return domain_xml(interfaces=[interface(MAC_A, virtualport=vport)])


@pytest.mark.parametrize(
    ("xml", "slow"),
    [
        (
            _vport_guest(f"<virtualport type='openvswitch'><parameters interfaceid='{_IFID}'/></virtualport>"),
            False,
        ),
        (
            _vport_guest(f"<virtualport type='midonet'><parameters interfaceid='{_IFID}'/></virtualport>"),
            False,
        ),
        (_vport_guest("<virtualport type='802.1Qbg'/>"), True),
        (_vport_guest('<virtualport type="802.1Qbh"/>'), True),
        (
            domain_xml(metadata=hooks_md(port(MAC_A)).replace(hooks.NAMESPACE, "https://Libvirt-VDP-Hooks.org/xmlns")),
            True,
        ),
    ],
)
def test_fast_path_selects_only_what_we_act_on(tmp_path: Path, xml: bytes, slow: bool) -> None:
    """openvswitch and midonet virtualports are none of ours; a near-miss namespace comes in to be warned about."""
    assert _load_entry()._NEAR_MISS.decode() in hooks.NAMESPACE
    entry = _copy_tree(tmp_path / "src")
    (tmp_path / "src" / "hooks" / "__init__.py").write_text("raise ImportError('hooks/ must not be imported here')\n")
    result = HookEnv(tmp_path, entry=entry).run("migrate", "begin", xml)
    assert result.returncode == (1 if slow else 0), result.err


def test_network_guests_take_the_slow_path_only_for_a_network_with_our_port_profile(tmp_path: Path) -> None:
    entry = _copy_tree(tmp_path / "src")
    (tmp_path / "src" / "hooks" / "__init__.py").write_text("raise ImportError('hooks/ must not be imported here')\n")
    nets = tmp_path / "networks"
    nets.mkdir()
    (nets / "lan.xml").write_text("<network><name>lan</name><forward mode='nat'/></network>")
    (nets / "fabric.xml").write_text(
        "<network><name>fabric</name><forward mode='vepa' dev='eth1'/><virtualport type='802.1Qbg'>"
        "<parameters managerid='11' typeid='1193047' typeidversion='2'/></virtualport></network>"
    )
    env = HookEnv(tmp_path, entry=entry)

    def run(network: str) -> int:
        nic = f"<interface type='network'><mac address='{MAC_A}'/><source network='{network}'/></interface>"
        xml = domain_xml(interfaces=[nic])
        return env.run("migrate", "begin", xml, env=env.env(VDP_HOOKS_NETWORK_DIRS=str(nets))).returncode

    assert run("lan") == 0 and run("nowhere") == 0  # fast path: the broken code is never reached
    assert run("fabric") == 1  # slow path


# ------------------------------------------------------------------------------------------ bounded input
def test_entry_size_cap_matches_the_parser() -> None:
    from hooks.event import MAX_XML_BYTES

    assert _load_entry()._MAX_XML == MAX_XML_BYTES


def test_the_clock_starts_before_anything_else() -> None:
    """The invocation deadline counts from process start: the entry's first statement takes the time and
    hands it to the runner."""
    import ast

    tree = ast.parse(ENTRY.read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert ast.unparse(body[0]) == "import time"
    assert ast.unparse(body[1]) == "_STARTED = time.monotonic()"
    assert "run(argv, raw, started=_STARTED)" in ENTRY.read_text()


def test_deadline_counts_from_the_start_given(hookenv: HookEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that spent the invocation's time before the runner (slow imports, slow stdin) has none
    left: setup must not begin; with the clock taken now it proceeds."""
    import io
    import time

    hookenv.write_config(hooks={"exchange_timeout": "1", "invocation_timeout": "3"})
    for key, value in hookenv.env().items():
        monkeypatch.setenv(key, value)
    xml = domain_xml(guest_uuid=uuid.uuid4(), metadata=hooks_md(port(MAC_A)))
    err = io.StringIO()
    assert runner.run(["guest1", "prepare", "begin", "-"], xml, stderr=err, started=time.monotonic() - 5) == 1
    assert "deadline" in err.getvalue()
    assert [e for e in hookenv.events("setup")] == []
    assert runner.run(["guest1", "prepare", "begin", "-"], xml, stderr=io.StringIO(), started=time.monotonic()) == 0
    assert runner.run(["guest1", "release", "end", "-"], xml, stderr=io.StringIO()) == 0


@pytest.mark.parametrize("hook", BEGIN_HOOKS + NEVER_FAIL_HOOKS)
def test_stdin_closed(hookenv: HookEnv, hook: tuple[str, str]) -> None:
    """``<&-``: there is no XML at all.  Never-fail operations exit 0, begin operations veto saying so."""
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *hookenv.argv("guest1", *hook)],
        capture_output=True,
        env=hookenv.env(),
        timeout=60,
        check=False,
    )
    if hook in NEVER_FAIL_HOOKS:
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    else:
        assert proc.returncode == 1 and proc.stdout == b""
        (line,) = proc.stderr.decode().splitlines()
        assert line.startswith("libvirt-vdp-hooks: guest guest1: ") and "stdin was closed" in line


def _short_stdin_entry(root: Path, seconds: int) -> Path:
    entry = _copy_tree(root)
    text = entry.read_text()
    line = "_STDIN_SECONDS = 30  #"
    assert line in text
    entry.write_text(text.replace(line, f"_STDIN_SECONDS = {seconds}  #"))
    return entry


@pytest.mark.parametrize("hook", [("prepare", "begin"), ("release", "end")])
def test_stdin_that_never_ends_is_bounded(tmp_path: Path, hook: tuple[str, str], procs: list[Any]) -> None:
    """A caller that writes the XML and never closes stdin: the read gives up (here after 1 s instead of
    the built-in 30 s, which is the whole invocation deadline): a begin op vetoes, a never-fail op exits 0."""
    env = HookEnv(tmp_path, entry=_short_stdin_entry(tmp_path / "src", 1))
    env.write_config(rec1={"declare": "yes"}, rec2={"declare": "yes"})
    xml = domain_xml(guest_uuid=uuid.uuid4(), metadata=hooks_md(port(MAC_A)))
    proc = subprocess.Popen(env.argv("guest1", *hook), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env.env())
    procs.append(proc)
    assert proc.stdin is not None
    proc.stdin.write(xml)
    proc.stdin.flush()  # and never closed (communicate() would close it)
    proc.wait(timeout=30)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    if hook == ("release", "end"):
        assert (proc.returncode, out, err) == (0, b"", b"")
    else:
        assert proc.returncode == 1 and out == b""
        assert err.decode() == "libvirt-vdp-hooks: guest guest1: no domain XML, stdin was not closed after 1 s\n"
    proc.stdin.close()


def test_stdin_read_stops_at_the_size_cap(hookenv: HookEnv) -> None:
    """Read at most the cap + 1 byte: a caller writing without end is not drained into memory."""
    import threading

    from hooks.event import MAX_XML_BYTES

    xml = domain_xml(guest_uuid=uuid.uuid4(), metadata=hooks_md(port(MAC_A)))
    head = xml.replace(b"</domain>", b"<!--")
    proc = subprocess.Popen(hookenv.argv("guest1", "prepare", "begin"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=hookenv.env(), bufsize=0)
    written = [0]

    def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(head)
            written[0] += len(head)
            chunk = b"x" * 65536
            while written[0] < 64 * MAX_XML_BYTES:
                proc.stdin.write(chunk)
                written[0] += len(chunk)
        except (BrokenPipeError, OSError):
            pass

    feeder = threading.Thread(target=feed)
    feeder.start()
    proc.wait(timeout=60)  # not communicate(): it would close stdin
    feeder.join(timeout=30)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 1 and out == b""
    assert "more than" in err.decode() and str(MAX_XML_BYTES) in err.decode()
    assert written[0] < MAX_XML_BYTES + 4 * 65536 + len(head), "the entry read past its cap"
