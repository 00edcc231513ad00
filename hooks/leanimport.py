"""Import a dependency without the standard-library modules it only names at import time.

Why: the hook is exec'd for every guest event and a 4-port ``prepare begin`` has 100 ms, interpreter start
included.  Some of what we import pulls in standard-library modules for code paths the hook never takes:

- ``lxml.etree`` binds ``inspect.getfullargspec``/``isgenerator`` (XPath extension functions, incremental
  writers) and ``gzip.GzipFile`` (compressed output); ``inspect`` alone drags in ``ast``, ``dis`` and
  ``tokenize``;
- pyroute2's netlink base (``pyroute2.common``, ``pyroute2.netlink``) creates loggers, binds ``typing``
  names for its annotations and imports ``traceback`` for its error paths;
- ``uuid`` calls ``platform.system()`` once, and ``platform`` compiles nine regular expressions.

Together ~15-20 ms per run on the reference machine (execs of ``python3 -S`` importing what the hook does,
with and without this module).

How: while the dependency imports, ``sys.modules`` holds a stand-in for each of those modules.  A name
taken from a stand-in is a forwarder: called later, it imports the real module and calls the real thing,
so a code path that does use it still works, it just pays for the import then.  The stand-ins leave
``sys.modules`` as soon as the import is over, so a later ``import inspect`` anywhere gets the real module.
While the import runs the real module cannot be reached (the stand-in shadows it), so the few calls made
at that moment are answered here (``logging.getLogger``, ``platform.system``, ``typing.TypeVar`` and the
like).  Anything else -- a constant used in arithmetic, a stand-in used as a base class -- raises; then the
modules the attempt loaded that hold a stand-in's names are dropped and the dependency is imported the
ordinary way, so a new release can cost time, never correctness.  ``tests/unit/test_leanimport.py`` fails
loudly when a release names things this module does not expect, or when the ordinary way had to be taken.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is one of the modules this file exists to keep out
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = ["STAND_INS", "bindings", "fallbacks", "import_lean"]

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


def import_lean(name: str) -> ModuleType:
    """``import name`` with stand-ins for the modules :data:`STAND_INS` lists for it."""
    if name in sys.modules:
        return sys.modules[name]
    stand_ins = [_StandIn(m) for m in STAND_INS.get(name, ()) if m not in sys.modules]
    before = set(sys.modules)
    for s in stand_ins:
        sys.modules[s.__name__] = s  # type: ignore[assignment]
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
