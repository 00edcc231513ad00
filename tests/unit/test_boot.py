"""hooks/boot.py: the start-up tricks and their off switch.

lxml, pyroute2's netlink base and uuid imported without the standard-library modules they only name at
import time -- and loudly failing here when a new release of either changes that; site directories under
``-S`` as ``site`` would add them (a venv's too, on Python <= 3.10); ``VDP_HOOKS_NO_TRICKS=1`` turns all of
it off and the hook's results stay the same.

Every check runs in a fresh interpreter started like the entry (``-S``, site-packages added by hand), so
nothing this pytest process already imported hides a stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hooks import boot
from tests.unit.conftest import MAC_A, MAC_B, HookEnv, domain_xml, hooks_md, port

REPO = Path(__file__).resolve().parents[2]

#: Names a dependency may take from a stand-in: each is used only off the hook's paths (extension
#: functions, compressed output, incremental writers, annotations, error logging).  A new name fails the
#: test below; before adding it here, check that the hook never calls it on its hot path.
KNOWN_BINDINGS = {
    "inspect": {"getfullargspec", "isgenerator", "isgenerator._cython_generator_types"},
    "gzip": {"GzipFile"},
    "logging": {"getLogger"},
    "typing": {"Any", "Callable", "Dict", "Literal", "Optional", "TypeVar", "Union"},
    "traceback": set(),
    "platform": {"system"},
}


#: This interpreter's package directories: a venv's (newest lxml/pyroute2) are not among the
#: site.getsitepackages() of a ``-S`` interpreter, where sys.prefix is still the base installation's.
SITE_DIRS = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]


def _fresh(code: str, *, path: list[str] | None = None) -> dict[str, object]:
    """Run ``code`` in a fresh ``-S`` interpreter; it leaves its answer in ``out`` (printed as JSON)."""
    prelude = textwrap.dedent(
        f"""
        import json, sys
        sys.path[:0] = {[str(REPO), *(path or [])]!r}
        sys.path.extend({SITE_DIRS!r})
        from hooks import boot
        out = {{}}
        """
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", prelude + textwrap.dedent(code) + "\nprint(json.dumps(out))"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # e.g. Cython's "failed to patch module" warning
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("dependency", sorted(boot.STAND_INS))
def test_dependency_imports_without_its_stand_in_modules(dependency: str) -> None:
    out = _fresh(
        f"""
        if {dependency!r} == "pyroute2.netlink":
            import vdp.wire.netlink  # imports pyroute2.netlink the way the hook does (without pyroute2/__init__)
        else:
            boot.import_lean({dependency!r})
        out["fallbacks"] = boot.fallbacks
        out["bindings"] = boot.bindings.get({dependency!r}, {{}})
        out["loaded"] = sorted(m for m in {list(boot.STAND_INS[dependency])!r} if m in sys.modules)
        """
    )
    assert out["fallbacks"] == {}, f"{dependency} had to be imported the ordinary way: {out['fallbacks']}"
    assert out["loaded"] == [], f"{dependency} still loads {out['loaded']}: the saving is gone"
    bindings = out["bindings"]
    assert isinstance(bindings, dict) and set(bindings) == set(boot.STAND_INS[dependency])
    for module, names in bindings.items():
        unknown = set(names) - KNOWN_BINDINGS[module]
        assert not unknown, (
            f"{dependency} now takes {sorted(unknown)} from {module} at import time: check that the hook never "
            "uses them on its hot path, then add them to KNOWN_BINDINGS (or drop the stand-in)"
        )


AVOIDED = ("inspect", "gzip", "logging", "typing", "traceback", "platform", "dataclasses", "hashlib")


def test_the_hooks_modules_together_leave_the_stand_in_modules_out() -> None:
    """What the entry's slow path imports for a Qbg port, in its order: none of the avoided modules, except
    what lxml itself needs (lxml 6 derives classes from typing.Generic, so it imports typing for real)."""
    lxml_alone = _fresh(
        f"""
        boot.import_lean("lxml.etree")
        out["loaded"] = sorted(m for m in {AVOIDED!r} if m in sys.modules)
        """
    )
    out = _fresh(
        f"""
        boot.import_lean("uuid")
        import hooks.runner, hooks.links, vdp.feature, vdp.qbg.session, vdp.qbg.preflight, vdp.profiles, vdp.qbg.clif
        from hooks.event import parse_event
        parse_event(["vm", "prepare", "begin", "-"], b"<domain><name>vm</name>"
                    b"<uuid>6f1b2c1e-4b7a-4f55-9a39-0c4e2b1d7a61</uuid></domain>")
        out["loaded"] = sorted(m for m in {AVOIDED!r} if m in sys.modules)
        out["fallbacks"] = boot.fallbacks
        """
    )
    assert out == {"loaded": lxml_alone["loaded"], "fallbacks": {}}
    assert set(lxml_alone["loaded"]) <= {"typing"}  # type: ignore[arg-type]


def test_names_taken_from_a_stand_in_reach_the_real_module_when_used(tmp_path: Path) -> None:
    (tmp_path / "binds_names.py").write_text(
        textwrap.dedent(
            """
            import logging
            from inspect import getfullargspec
            from typing import Optional
            log = logging.getLogger("binds_names")
            def f(a: Optional[int], b=2): return getfullargspec(f).args
            """
        )
    )
    out = _fresh(
        """
        boot.STAND_INS["binds_names"] = ("inspect", "logging", "typing")
        mod = boot.import_lean("binds_names")
        out["before"] = sorted(m for m in ("inspect", "logging", "typing") if m in sys.modules)
        out["args"] = mod.f(1)
        out["logger"] = mod.log.name
        out["after"] = sorted(m for m in ("inspect", "logging") if m in sys.modules)
        out["fallbacks"] = boot.fallbacks
        """,
        path=[str(tmp_path)],
    )
    assert out == {
        "before": [],
        "args": ["a", "b"],
        "logger": "binds_names",
        "after": ["inspect", "logging"],
        "fallbacks": {},
    }


@pytest.mark.parametrize(
    "body",
    [
        "import inspect\nFLAGS = inspect.CO_GENERATOR | 1\n",  # a constant used at import time
        "import inspect\nDOC = inspect.cleandoc('  x')\n",  # a function called at import time
        "import typing\nT = typing.TypeVar('T')\nclass Box(typing.Generic[T]): pass\n",  # a stand-in as a base
    ],
    ids=["constant", "call", "base-class"],
)
def test_a_dependency_that_needs_the_real_module_is_imported_the_ordinary_way(tmp_path: Path, body: str) -> None:
    (tmp_path / "needs_real.py").write_text(body + "OK = True\n")
    out = _fresh(
        """
        boot.STAND_INS["needs_real"] = ("inspect", "typing")
        mod = boot.import_lean("needs_real")
        out["ok"] = mod.OK
        out["fell_back"] = sorted(boot.fallbacks)
        out["real"] = all(type(sys.modules[m]).__name__ == "module" for m in ("inspect", "typing") if m in sys.modules)
        """,
        path=[str(tmp_path)],
    )
    assert out == {"ok": True, "fell_back": ["needs_real"], "real": True}


def test_after_a_fallback_no_module_of_the_dependency_keeps_a_stand_in(tmp_path: Path) -> None:
    """The submodule that imported fine during the failed attempt is loaded again, with the real names."""
    package = tmp_path / "pkgdep"
    package.mkdir()
    (package / "sub.py").write_text("from inspect import getfullargspec\n")
    (package / "__init__.py").write_text("from pkgdep import sub\nimport inspect\nFLAGS = inspect.CO_GENERATOR | 1\n")
    out = _fresh(
        """
        boot.STAND_INS["pkgdep"] = ("inspect",)
        mod = boot.import_lean("pkgdep")
        import inspect
        out["real"] = mod.sub.getfullargspec is inspect.getfullargspec
        out["same_sub"] = mod.sub is sys.modules["pkgdep.sub"]
        out["fell_back"] = sorted(boot.fallbacks)
        """,
        path=[str(tmp_path)],
    )
    assert out == {"real": True, "same_sub": True, "fell_back": ["pkgdep"]}


# --- 1. site directories under -S ------------------------------------------------------------------------
def _interpreters() -> list[str]:
    """This one, and any Python <= 3.10 found here (they learn of a venv only in site.main())."""
    found = [sys.executable]
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3")):
        version = tuple(int(x) for x in candidate.parts[-3].split(".")[:2])
        if (3, 9) <= version <= (3, 10):
            found.append(str(candidate))
    return found


def test_a_module_on_first_use_loads_when_used_and_not_before() -> None:
    """A 4-port 802.1Qbg start must not load 802.1Qbh's client (hooks/boot.py trick 5); with the tricks off
    the same call imports at once."""
    out = _fresh(
        """
        import vdp.feature
        out["loaded_by_the_feature"] = sorted(m for m in ("vdp.profiles", "vdp.checks", "vdp.qbh.client",
                                                           "vdp.qbg.session") if m in sys.modules)
        profiles = boot.on_first_use("vdp.profiles")
        out["before_use"] = "vdp.profiles" in sys.modules
        out["forwards"] = profiles.send is sys.modules["vdp.profiles"].send
        import os
        os.environ[boot.NO_TRICKS_ENV] = "1"
        out["host_before"] = "vdp.checks" in sys.modules
        boot.on_first_use("vdp.checks")
        out["off_switch_imports_at_once"] = "vdp.checks" in sys.modules
        """
    )
    assert out == {
        "loaded_by_the_feature": [],
        "before_use": False,
        "forwards": True,
        "host_before": False,
        "off_switch_imports_at_once": True,
    }


@pytest.mark.parametrize("python", _interpreters())
@pytest.mark.parametrize("system_site", [False, True])
def test_site_dirs_under_dash_s_are_the_ones_site_adds(tmp_path: Path, python: str, system_site: bool) -> None:
    """In a venv (made here, without pip) and outside one: boot.site_dirs() under -S names exactly the
    package directories that an ordinary start of the same interpreter puts on sys.path (user site aside)."""
    venv = tmp_path / "venv"
    args = ["--system-site-packages"] if system_site else []
    subprocess.run([python, "-m", "venv", "--without-pip", *args, str(venv)], check=True, capture_output=True)
    for exe in (str(venv / "bin" / "python"), python):
        ordinary = subprocess.run(
            [exe, "-s", "-c", "import json, sys; print(json.dumps([p for p in sys.path if p.endswith('-packages')]))"],
            capture_output=True, text=True, check=True,
        )
        booted = subprocess.run(
            [exe, "-S", "-c", f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from hooks import boot; "
             "boot.add_site_dirs(); print(json.dumps([p for p in sys.path if p.endswith('-packages')]))"],
            capture_output=True, text=True, check=True,
        )
        want = [p for p in json.loads(ordinary.stdout) if os.path.isdir(p)]
        got = [p for p in json.loads(booted.stdout) if os.path.isdir(p)]
        assert got == want, (exe, booted.stdout, ordinary.stdout)


# --- the off switch ---------------------------------------------------------------------------------------
def test_the_off_switch_makes_the_start_ordinary() -> None:
    """With VDP_HOOKS_NO_TRICKS=1: site.main() ran (its sys.flags-independent marks: sys.__interactivehook__
    and the quit builtin), lxml brought its inspect, and pyroute2.netlink came with pyroute2's __init__."""
    code = textwrap.dedent(
        f"""
        import builtins, json, sys
        sys.path.insert(0, {str(REPO)!r})
        from hooks import boot
        boot.start()
        boot.import_lean("lxml.etree")
        boot.import_lean("pyroute2.netlink")
        print(json.dumps({{"site": hasattr(builtins, "quit"), "inspect": "inspect" in sys.modules,
                          "pyroute2": hasattr(sys.modules.get("pyroute2"), "IPRoute"),
                          "fallbacks": boot.fallbacks}}))
        """
    )

    def run(**env: str) -> dict[str, object]:
        proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=False,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env})
        assert proc.returncode == 0, proc.stderr
        result: dict[str, object] = json.loads(proc.stdout)
        return result

    assert run() == {"site": False, "inspect": False, "pyroute2": False, "fallbacks": {}}
    assert run(VDP_HOOKS_NO_TRICKS="0") == {"site": False, "inspect": False, "pyroute2": False, "fallbacks": {}}
    assert run(VDP_HOOKS_NO_TRICKS="1") == {"site": True, "inspect": True, "pyroute2": True, "fallbacks": {}}


def _outcome(env: HookEnv, tricks: bool, op: str, subop: str, xml: bytes) -> tuple[object, ...]:
    extra = {} if tricks else {"VDP_HOOKS_NO_TRICKS": "1"}
    result = env.run(op, subop, xml, env=env.env(**extra))
    calls = [(e["feature"], e["call"], e.get("key"), e.get("kind")) for e in env.events()]
    return result.returncode, result.stdout, result.stderr, calls


def _journal(env: HookEnv) -> object:
    """The guest's journal without the records' creation times."""
    doc = env.journal(_GID)
    if doc is not None:
        for record in doc["records"]:
            record.pop("created")
    return doc


_GID = "6f1b2c1e-4b7a-4f55-9a39-0c4e2b1d7a61"
_BAD_QBG = "<vdp:qbg managerid='300' typeid='1193047' typeidversion='2'/>"  # managerid is one byte
#: case -> (write_config arguments, the operations in order, metadata, whether one of them vetoes)
_CASES: dict[str, tuple[dict[str, str | None], list[tuple[str, str]], str, bool]] = {
    "setup then release": ({}, [("prepare", "begin"), ("release", "end")], hooks_md(port(MAC_A), port(MAC_B)), False),
    "veto and rollback": ({}, [("prepare", "begin")], hooks_md(port(MAC_A), port(MAC_B, attrs="")), True),
    "vdp: a broken required port": (
        {"features": "vdp", "vdp_required": None},
        [("prepare", "begin"), ("release", "end")],
        hooks_md(port(MAC_A, required="yes", body=_BAD_QBG)),
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_the_off_switch_gives_the_same_hook_results(tmp_path: Path, case: str) -> None:
    config, hooks, metadata, vetoes = _CASES[case]
    xml = domain_xml(guest_uuid=_GID, metadata=metadata)
    outcomes = []
    for tricks in (True, False):
        root = tmp_path / ("tricks" if tricks else "ordinary")
        root.mkdir()
        env = HookEnv(root)
        env.write_config(**config)  # type: ignore[arg-type]
        if case == "veto and rollback":
            env.write_config(rec2={"fail": MAC_B})
        outcomes.append([(*_outcome(env, tricks, op, subop, xml), _journal(env)) for op, subop in hooks])
    assert outcomes[0] == outcomes[1]
    assert any(o[0] == 1 for o in outcomes[0]) == vetoes, outcomes[0]
