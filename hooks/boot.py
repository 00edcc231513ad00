"""Every start-up trick of the hook in one place -- and the switch that turns them all off.

Why: libvirt execs the hook for every guest event, and a 4-port ``prepare begin`` has 100 ms, interpreter
start included.  The ordinary way (``site.main()``, ``import lxml.etree``, ``import pyroute2``) costs more
than that budget on its own (``pyroute2/__init__`` alone: 150-200 ms).  So the slow path of the entry
(etc-libvirt-hooks/qemu) starts with these, and nothing else in the code base plays such games:

1. **site directories without site** (:func:`add_site_dirs`): the entry runs ``python3 -S``; only the
   site-packages directories are added, without running every ``.pth`` file there (``site.main()``:
   ~4 ms per event, and code a hook has no use for).  Distribution and pip installs of lxml/pyroute2
   need no ``.pth``.  A virtualenv is recognised by its ``pyvenv.cfg`` the way ``site`` does it, which
   Python <= 3.10 only learns from ``site.main()`` (its ``sys.prefix`` is still the base installation's
   under ``-S``).
2. **import stand-ins** (:func:`import_lean`, :data:`STAND_INS`): standard-library modules a dependency
   only *names* at import time are kept out while it imports (below).
3. **a package's __init__ skipped** (:data:`SKIP_INIT`): ``pyroute2.netlink`` is imported below a bare
   placeholder for ``pyroute2`` (below).
4. **leaving without the interpreter's teardown** (:func:`leave`): ``os._exit`` as soon as the run is
   over (the teardown of lxml, pyroute2 and the rest: ~10 ms).
5. **modules loaded on first use** (:func:`on_first_use`): a feature names the backends it may need at
   its top (``profiles = boot.on_first_use("vdp.profiles")``) and an event that needs none of them never
   loads them (a 4-port 802.1Qbg start loaded ~15 modules it does not use, 802.1Qbh's and the preflight's,
   when the feature imported them all together: ~7 ms measured).

Off switch: ``VDP_HOOKS_NO_TRICKS=1`` in the environment.  libvirt runs hooks with a stripped environment
(``LC_ALL``, ``PATH``, ``HOME`` and the like), so the hook never gets it from libvirt: set it by hand to
rule the tricks out of a problem, e.g. ``VDP_HOOKS_NO_TRICKS=1 vdp-hooks replay guest.xml prepare begin``
or under a debugger.  Then the process is ordinary Python: ``site.main()``, plain imports, a normal exit --
and slower (a 4-port ``prepare begin``: ~1.5x, tests/bench/test_bench_boot.py).
``tests/unit/test_boot.py`` checks that the hook's results are the same either way.

Not here, by necessity: finding this module.  The entry puts the source tree, the distribution packages'
private directory (/usr/share/libvirt-vdp-hooks, where it also turns byte-code writing off: the packages
compile it) or a pip install's libvirt_vdp_hooks/ on ``sys.path`` first (etc-libvirt-hooks/qemu:
``_find_code``), and the launcher packaging/vdp-hooks does the same for the CLI.

Only ``os`` and ``sys`` are imported here: this module runs before anything else of ours.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is one of the modules this file exists to keep out
# Any: the stand-ins forward whatever attribute a dependency binds from an arbitrary module.
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = [
    "NO_TRICKS_ENV",
    "SKIP_INIT",
    "STAND_INS",
    "add_site_dirs",
    "bindings",
    "fallbacks",
    "import_lean",
    "leave",
    "on_first_use",
    "site_dirs",
    "start",
    "tricks",
]

#: The off switch (see above): any value but "" and "0" turns every trick off.
NO_TRICKS_ENV = "VDP_HOOKS_NO_TRICKS"


def tricks() -> bool:
    """Whether the start-up tricks are on (read each time: tests flip it within one process)."""
    return os.environ.get(NO_TRICKS_ENV, "") in ("", "0")


def start() -> None:
    """The entry's slow path, once hooks/ is importable: site directories, then what every module of ours
    would otherwise import the slow way (``uuid``, before any of them imports it)."""
    if not tricks():
        if sys.flags.no_site:
            import site

            site.main()
        return
    add_site_dirs()
    import_lean("uuid")


def leave(rc: int) -> int:
    """End the hook process: at once (``os._exit``), or with the tricks off by returning ``rc`` for an
    ordinary exit.  Everything of ours is written with ``os.write`` or closed by now; only stderr is
    buffered."""
    if not tricks():
        return rc
    sys.stderr.flush()
    os._exit(rc)


# ----------------------------------------------------------------------------------------------- 1. site
class _OnFirstUse(type(sys)):  # type: ignore[misc]  # type(sys) is ModuleType without importing types
    """Stands for the module of its name until something of it is asked for; then imports it (the ordinary
    way, into ``sys.modules``) and forwards every lookup to it.  Never in ``sys.modules`` itself."""

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        if name not in sys.modules:
            __import__(name)
        return getattr(sys.modules[name], attr)


def on_first_use(name: str) -> ModuleType:
    """The module ``name``, imported when first used (:class:`_OnFirstUse`); at once with the tricks off
    or when it is loaded already."""
    if name not in sys.modules and tricks():
        return _OnFirstUse(name)
    __import__(name)
    return sys.modules[name]


def _system_site(pyvenv_cfg: str) -> bool:
    try:
        with open(pyvenv_cfg, encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition("=")
                if key.strip().lower() == "include-system-site-packages":
                    return value.strip().lower() == "true"
    except OSError:
        pass
    return False


def site_dirs() -> list[str]:
    """The site-packages directories of this interpreter, as ``site.main()`` would add them (without the
    user's own ``~/.local`` one: the hook runs as root for libvirt, not for a login)."""
    import site

    # A venv: <venv>/bin/python with <venv>/pyvenv.cfg (site.venv's test).  Under -S, Debian's Python
    # (3.11 too) and upstream's <= 3.10 still have the base installation as sys.prefix, and Debian's
    # getsitepackages() names dist-packages even for a venv's prefix: so the venv's directory is named
    # here, the way venv lays it out, ahead of the system's when the venv includes them.
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    cfg = os.path.join(venv, "pyvenv.cfg")
    if not os.path.isfile(cfg):
        return site.getsitepackages()
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    libdirs = dict.fromkeys([getattr(sys, "platlibdir", "lib"), "lib"])
    found = [os.path.join(venv, libdir, version, "site-packages") for libdir in libdirs]
    if _system_site(cfg):
        found += site.getsitepackages([sys.base_prefix, sys.base_exec_prefix])
    return list(dict.fromkeys(found))


def add_site_dirs() -> None:
    """Under ``-S``: append the site directories not on ``sys.path`` yet (idempotent)."""
    if sys.flags.no_site:
        sys.path.extend(p for p in site_dirs() if p not in sys.path)


# ----------------------------------------------------------------------------------------------- 2. stand-ins
# Import a dependency without the standard-library modules it only names at import time.
#
# Some of what we import pulls in standard-library modules for code paths the hook never takes:
#
# - ``lxml.etree`` binds ``inspect.getfullargspec``/``isgenerator`` (XPath extension functions, incremental
#   writers) and ``gzip.GzipFile`` (compressed output); ``inspect`` alone drags in ``ast``, ``dis`` and
#   ``tokenize``;
# - pyroute2's netlink base (``pyroute2.common``, ``pyroute2.netlink``) creates loggers, binds ``typing``
#   names for its annotations and imports ``traceback`` for its error paths;
# - ``uuid`` calls ``platform.system()`` once, and ``platform`` compiles nine regular expressions.
#
# Together ~15-20 ms per run on the reference machine (execs of ``python3 -S`` importing what the hook does,
# with and without the stand-ins).
#
# How: while the dependency imports, ``sys.modules`` holds a stand-in for each of those modules.  A name
# taken from a stand-in is a forwarder: called later, it imports the real module and calls the real thing,
# so a code path that does use it still works, it just pays for the import then.  The stand-ins leave
# ``sys.modules`` as soon as the import is over, so a later ``import inspect`` anywhere gets the real module.
# (The forwarders stay bound in lxml's and pyroute2's globals for the life of the process: the hook's.)
# While the import runs the real module cannot be reached (the stand-in shadows it), so the few calls made
# at that moment are answered here (``logging.getLogger``, ``platform.system``, ``typing.TypeVar`` and the
# like).  Anything else -- a constant used in arithmetic, a stand-in used as a base class -- raises; then the
# modules the attempt loaded that hold a stand-in's names are dropped and the dependency is imported the
# ordinary way, so a new release can cost time, never correctness.  ``tests/unit/test_boot.py`` fails
# loudly when a release names things this module does not expect, or when the ordinary way had to be taken.

#: dependency -> the modules it gets stand-ins for while it imports.  (lxml 6 also imports ``typing``, but
#: derives classes from ``typing.Generic``: that one it needs for real.)
STAND_INS: dict[str, tuple[str, ...]] = {
    "lxml.etree": ("inspect", "gzip"),
    "pyroute2.netlink": ("logging", "typing", "traceback"),
    "uuid": ("platform",),
}

#: Dependencies that had to be imported the ordinary way in this process, with the reason (for the tests).
fallbacks: dict[str, str] = {}
#: dependency -> stand-in module -> the names the dependency took from it (for the tests).
bindings: dict[str, dict[str, list[str]]] = {}


class _Shadowed(Exception):
    """A stand-in was used in a way only the real module can serve."""


class _Deferred:
    """``module.name`` as bound by a dependency: resolved on first use, after the stand-in is gone."""

    __slots__ = ("_module", "_name", "_stand_in")

    def __init__(self, stand_in: _StandIn, name: str) -> None:
        self._stand_in = stand_in
        self._module = stand_in.__name__
        self._name = name

    def _real(self) -> Any:
        __import__(self._module)
        return getattr(sys.modules[self._module], self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._stand_in.active:
            return self._stand_in.call_during_import(self._name, args, kwargs)
        return self._real()(*args, **kwargs)

    def __getitem__(self, item: Any) -> _Deferred:
        # typing.Optional[int] and friends in annotations: the hook never inspects them.
        if self._stand_in.__name__ != "typing":
            raise _Shadowed(f"{self._module}.{self._name}[...] at import time")
        return self

    def __getattr__(self, name: str) -> Any:
        if self._stand_in.active:
            # Cython modules probe ``getattr(inspect.isgenerator, '_cython_generator_types', None)`` and
            # then wrap the function for their own generator type; the wrapper lands on the stand-in and
            # is dropped with it (only ``inspect.isgenerator`` on an lxml generator would notice).
            self._stand_in.bound.append(f"{self._name}.{name}")
            raise AttributeError(name)
        return getattr(self._real(), name)

    def __repr__(self) -> str:
        return f"<deferred {self._module}.{self._name}>"


class _DeferredLogger:
    """``logging.getLogger(name)``: the real logger is looked up the first time it is used."""

    __slots__ = ("_name",)

    def __init__(self, name: str | None = None) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import logging

        return getattr(logging.getLogger(self._name), attr)


class _StandIn:
    """What ``sys.modules[name]`` holds while a dependency imports."""

    def __init__(self, name: str) -> None:
        self.__name__ = name
        self.active = True
        self.bound: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # importlib and ``from x import *`` probe dunders
        self.bound.append(name)
        return _Deferred(self, name)

    def call_during_import(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.__name__ == "logging" and name == "getLogger":
            return _DeferredLogger(*args, **kwargs)
        if self.__name__ == "platform" and name == "system":
            return os.uname().sysname  # what platform.system() answers on Linux
        if self.__name__ == "typing":
            return _Deferred(self, name)  # TypeVar("T"), NewType(...): annotation material only
        raise _Shadowed(f"{self.__name__}.{name}() at import time")


_STAND_IN_TYPES = (_StandIn, _Deferred, _DeferredLogger)


# ----------------------------------------------------------------------------------------------- 3. skip init
#: dependency -> the package whose ``__init__`` is not run while the dependency imports.
#:
#: ``import pyroute2`` costs 150-200 ms (it imports IPRoute, NDB, sqlite, the plan9 server ...), while the
#: nla/nlmsg base classes in ``pyroute2.netlink`` cost ~5 ms (with the stand-ins keeping logging, typing
#: and traceback out).  For the duration of the import, ``sys.modules['pyroute2']`` is a bare package
#: object whose ``__path__`` is the real package directory, so ``pyroute2.netlink`` (and the
#: ``pyroute2.common`` and ``pyroute2.netlink.exceptions`` it needs) load from their usual files.  The
#: placeholder is removed afterwards, so a later ``import pyroute2`` anywhere in the process runs the real
#: ``__init__`` and reuses the submodules already loaded.  ``tests/unit/test_pyroute2_internals.py`` fails
#: loudly if a pyroute2 release breaks any of this.
SKIP_INIT = {"pyroute2.netlink": "pyroute2"}
#: What to install when a dependency is missing (the import error says it).
_INSTALL = {"pyroute2": "python3-pyroute2 / pip install pyroute2", "lxml": "python3-lxml / pip install lxml"}


def _placeholder(package: str) -> ModuleType:
    """A bare ``package`` in ``sys.modules`` whose submodules load from the real directory."""
    import importlib.machinery
    import types

    spec = importlib.machinery.PathFinder.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed ({_INSTALL.get(package, 'pip install ' + package)})")
    placeholder = types.ModuleType(package)
    placeholder.__path__ = list(spec.submodule_search_locations)
    placeholder.__spec__ = spec
    sys.modules[package] = placeholder
    return placeholder


def import_lean(name: str) -> ModuleType:
    """``import name``: with stand-ins for the modules :data:`STAND_INS` lists for it, and below a
    placeholder for the package :data:`SKIP_INIT` names for it; the ordinary way with the tricks off."""
    if name in sys.modules:
        return sys.modules[name]
    if not tricks():
        __import__(name)
        return sys.modules[name]
    package = SKIP_INIT.get(name, "")
    placeholder = _placeholder(package) if package and package not in sys.modules else None
    try:
        return _import_with_stand_ins(name)
    finally:
        if placeholder is not None and sys.modules.get(package) is placeholder:
            del sys.modules[package]


def _import_with_stand_ins(name: str) -> ModuleType:
    stand_ins = [_StandIn(m) for m in STAND_INS.get(name, ()) if m not in sys.modules]
    before = set(sys.modules)
    for s in stand_ins:
        sys.modules[s.__name__] = s  # type: ignore[assignment]  # a stand-in, not a module, on purpose
    try:
        __import__(name)
        return sys.modules[name]
    except (_Shadowed, TypeError, AttributeError) as exc:
        # TypeError/AttributeError: a stand-in used as a base class, a number, a real object ...
        reason = f"{type(exc).__name__}: {exc}"
    finally:
        bindings[name] = {s.__name__: sorted(set(s.bound)) for s in stand_ins}
        for s in stand_ins:
            s.active = False
            if sys.modules.get(s.__name__) is s:
                del sys.modules[s.__name__]
    fallbacks[name] = reason
    # Forget the modules the attempt loaded that hold a stand-in's names in their globals (the failed one
    # is gone already); the others (re, enum ...) stay: loading them twice would make two copies of their
    # classes.
    for loaded in set(sys.modules) - before:
        module = sys.modules.get(loaded)
        if module is not None and any(isinstance(v, _STAND_IN_TYPES) for v in vars(module).values()):
            del sys.modules[loaded]
    __import__(name)
    return sys.modules[name]
