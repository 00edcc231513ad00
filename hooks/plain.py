"""Plain value classes for the hook's hot path, without the ``dataclasses`` module.

Why: the hook runs for every guest event, and ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis``,
``tokenize``, ...) and ``exec()``s generated source for every class it decorates: several milliseconds
on each run, for classes that need no more than an ``__init__``, ``__repr__``, ``__eq__`` and, for frozen
ones, immutability.  ``@plain`` gives exactly that from the class annotations, with closures instead of
generated source.  Field order, positional and keyword arguments and defaults behave like dataclasses';
``field(default_factory=...)`` gives each instance its own mutable default.

Annotations are read as written (every module here uses ``from __future__ import annotations``); names
annotated ``ClassVar[...]`` are class attributes, not fields.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time; mypy treats this name as always true
# Any: field values are of every type, as with dataclasses.field (dataclass_transform types the classes).
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar, overload

    from typing_extensions import dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_kwargs: object) -> object:
        return lambda f: f

    def overload(f: object) -> object:
        return f


__all__ = ["as_dict", "field", "plain", "replace"]

_MISSING = object()


class _Field:
    __slots__ = ("default", "make", "repr")

    def __init__(self, default: Any, make: Callable[[], Any] | None, repr: bool) -> None:
        self.default = default
        self.make = make
        self.repr = repr


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None, repr: bool = True) -> Any:
    """A field with a per-instance default (``default_factory``, for mutable values) or left out of repr."""
    return _Field(default, default_factory, repr)


def _fields(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name, annotation in klass.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 - no typing here
            if not str(annotation).startswith(("ClassVar", "typing.ClassVar")) and name not in names:
                names.append(name)
    return tuple(names)


@overload
def plain(cls: type[T], /) -> type[T]: ...


@overload
def plain(*, frozen: bool = False) -> Callable[[type[T]], type[T]]: ...  # noqa: F811


@dataclass_transform(field_specifiers=(field,))
def plain(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:  # noqa: F811
    """Class decorator: ``@plain`` or ``@plain(frozen=True)`` (type checkers treat it like a dataclass)."""

    def wrap(klass: type[T]) -> type[T]:
        names = _fields(klass)
        defaults: dict[str, Any] = {}
        for base in reversed(klass.__mro__):  # a subclass inherits its bases' defaults
            defaults.update({n: base.__dict__[n] for n in names if n in base.__dict__})
        shown = tuple(n for n in names if not (isinstance(defaults.get(n), _Field) and not defaults[n].repr))
        setter = object.__setattr__

        def init(self: object, *args: object, **kwargs: object) -> None:
            if len(args) > len(names):
                raise TypeError(f"{klass.__name__}() takes {len(names)} arguments, {len(args)} given")
            values = dict(zip(names, args))
            for key, value in kwargs.items():
                if key not in names or key in values:
                    raise TypeError(f"{klass.__name__}() got an unexpected or repeated argument '{key}'")
                values[key] = value
            for name in names:
                if name not in values:
                    default = defaults.get(name, _MISSING)
                    if default is _MISSING:
                        raise TypeError(f"{klass.__name__}() missing argument '{name}'")
                    if isinstance(default, _Field):
                        default = default.make() if default.make is not None else default.default
                        if default is _MISSING:
                            raise TypeError(f"{klass.__name__}() missing argument '{name}'")
                    values[name] = default
                setter(self, name, values[name])
            post = getattr(self, "__post_init__", None)
            if post is not None:
                post()

        def represent(self: object) -> str:
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
            return f"{klass.__name__}({inner})"

        def equal(self: object, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        methods: dict[str, object] = {
            "__init__": init,
            "__repr__": represent,
            "__eq__": equal,
            "__hash__": None,  # mutable: unhashable, like dataclasses
            "__plain_fields__": names,
        }
        if frozen:

            def refuse_set(self: object, name: str, value: object) -> None:
                raise AttributeError(f"{klass.__name__} is frozen: cannot set '{name}'")

            def refuse_delete(self: object, name: str) -> None:
                raise AttributeError(f"{klass.__name__} is frozen: cannot delete '{name}'")

            def hashed(self: object) -> int:
                return hash(tuple(getattr(self, n) for n in names))

            methods.update({"__setattr__": refuse_set, "__delattr__": refuse_delete, "__hash__": hashed})
        for name, value in methods.items():
            setattr(klass, name, value)
        return klass

    return wrap if cls is None else wrap(cls)


def replace(obj: T, **changes: Any) -> T:
    """A copy of ``obj`` with some fields changed (like ``dataclasses.replace``)."""
    values = as_dict(obj)
    values.update(changes)
    return obj.__class__(**values)


def as_dict(obj: Any) -> dict[str, Any]:
    """The fields as a dict (shallow: values are not converted)."""
    return {n: getattr(obj, n) for n in obj.__plain_fields__}
