"""hooks/leanimport.py: lxml, pyroute2's netlink base and uuid imported without the standard-library modules
they only name at import time -- and loudly failing here when a new release of either changes that.

Every check runs in a fresh interpreter started like the entry (``-S``, site-packages added by hand), so
nothing this pytest process already imported hides a stand-in."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hooks import leanimport

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
        from hooks import leanimport
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


@pytest.mark.parametrize("dependency", sorted(leanimport.STAND_INS))
def test_dependency_imports_without_its_stand_in_modules(dependency: str) -> None:
    out = _fresh(
        f"""
        if {dependency!r} == "pyroute2.netlink":
            import vdp.nlmsg  # imports pyroute2.netlink the way the hook does (without pyroute2/__init__)
        else:
            leanimport.import_lean({dependency!r})
        out["fallbacks"] = leanimport.fallbacks
        out["bindings"] = leanimport.bindings.get({dependency!r}, {{}})
        out["loaded"] = sorted(m for m in {list(leanimport.STAND_INS[dependency])!r} if m in sys.modules)
        """
    )
    assert out["fallbacks"] == {}, f"{dependency} had to be imported the ordinary way: {out['fallbacks']}"
    assert out["loaded"] == [], f"{dependency} still loads {out['loaded']}: the saving is gone"
    bindings = out["bindings"]
    assert isinstance(bindings, dict) and set(bindings) == set(leanimport.STAND_INS[dependency])
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
        leanimport.import_lean("lxml.etree")
        out["loaded"] = sorted(m for m in {AVOIDED!r} if m in sys.modules)
        """
    )
    out = _fresh(
        f"""
        leanimport.import_lean("uuid")
        import hooks.runner, hooks.links, vdp.feature, vdp.qbg.session, vdp.qbg.preflight, vdp.profiles, vdp.qbg.clif
        from hooks.event import parse_event
        parse_event(["vm", "prepare", "begin", "-"], b"<domain><name>vm</name>"
                    b"<uuid>6f1b2c1e-4b7a-4f55-9a39-0c4e2b1d7a61</uuid></domain>")
        out["loaded"] = sorted(m for m in {AVOIDED!r} if m in sys.modules)
        out["fallbacks"] = leanimport.fallbacks
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
        leanimport.STAND_INS["binds_names"] = ("inspect", "logging", "typing")
        mod = leanimport.import_lean("binds_names")
        out["before"] = sorted(m for m in ("inspect", "logging", "typing") if m in sys.modules)
        out["args"] = mod.f(1)
        out["logger"] = mod.log.name
        out["after"] = sorted(m for m in ("inspect", "logging") if m in sys.modules)
        out["fallbacks"] = leanimport.fallbacks
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
        leanimport.STAND_INS["needs_real"] = ("inspect", "typing")
        mod = leanimport.import_lean("needs_real")
        out["ok"] = mod.OK
        out["fell_back"] = sorted(leanimport.fallbacks)
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
        leanimport.STAND_INS["pkgdep"] = ("inspect",)
        mod = leanimport.import_lean("pkgdep")
        import inspect
        out["real"] = mod.sub.getfullargspec is inspect.getfullargspec
        out["same_sub"] = mod.sub is sys.modules["pkgdep.sub"]
        out["fell_back"] = sorted(leanimport.fallbacks)
        """,
        path=[str(tmp_path)],
    )
    assert out == {"real": True, "same_sub": True, "fell_back": ["pkgdep"]}
