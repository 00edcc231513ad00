"""The feature contract, and how features are found by name.

A feature sets something up for a guest and knows how to undo it.  ``setup()`` journals what it is about
to do through the :class:`Context` *before* it sends anything and confirms it afterwards, so whatever
happens to the process, ``release end`` finds a record to tear down.  ``teardown()`` sits right beside it
and takes those records back; it must be idempotent (tearing down what is already gone is success).

Features are named in the host config (``[hooks] features``).  Built-in ones are listed here by dotted
path; third-party ones register an entry point in the group ``libvirt_vdp_hooks.features``.

The hook process ends with ``os._exit`` as soon as the run is over (the interpreter's teardown costs ~10 ms
of the time budget): a feature closes or flushes whatever it wrote before returning; Python-level buffers
and ``atexit`` handlers are not honoured.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Iterable, Mapping, Sequence

from hooks import NAMESPACE
from hooks.config import Config, Option
from hooks.errors import ConfigError, HookError
from hooks.log import EventLog, Sink
from hooks.ops import BEGIN_OPS  # for feature authors' ``handles`` (hooks/ops.py holds the table)
from hooks.plain import field, plain

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
# Any: settings and journal data are parsed config/JSON values; entry_points() has no one type on 3.9 and 3.10+.
if TYPE_CHECKING:
    from importlib.metadata import EntryPoint
    from typing import Any, ClassVar

    from hooks.deadline import Deadline
    from hooks.event import Event
    from hooks.journal import GuestJournal, Record

__all__ = [
    "BEGIN_OPS",
    "BUILTIN_FEATURES",
    "ENTRY_POINT_GROUP",
    "CheckResult",
    "Context",
    "Feature",
    "Outcome",
    "feature_class",
    "instances",
    "is_known_feature",
]

ENTRY_POINT_GROUP = "libvirt_vdp_hooks.features"

#: Built-in features by name; imported only when enabled and needed.
BUILTIN_FEATURES: Mapping[str, str] = {
    "vdp": "vdp.feature:VdpFeature",
    "links": "hooks.links:LinksFeature",
}

_OUR_NAMESPACE = (f'"{NAMESPACE}"'.encode(), f"'{NAMESPACE}'".encode())



@plain(frozen=True)
class Outcome:
    """The result of setup or teardown for one target (a port's key; None = the feature as a whole)."""

    key: str | None
    error: HookError | None = None
    note: str = ""  # what was done, for the log ("associated vlan 100")

    @property
    def ok(self) -> bool:
        return self.error is None


@plain(frozen=True)
class CheckResult:
    """One line of ``vdp-hooks check``: ``PASS``, ``WARN`` or ``FAIL`` with a hint."""

    what: str
    verdict: str
    hint: str = ""


@plain(frozen=True)
class Context:
    """What a feature gets for one invocation: settings, deadline, journal access, logger.

    Frozen: what a feature was given stays what it was given (the framework makes a new one with
    ``hooks.plain.replace`` for the rollback's deadline); ``created`` is the one list it appends to.
    """

    feature: str
    event: Event
    config: Config
    settings: Mapping[str, Any]
    deadline: Deadline
    journal: GuestJournal
    incoming: bool = False  # this start is the destination side of a live migration
    log: EventLog = field(default_factory=lambda: EventLog(Sink()))
    created: list[Record] = field(default_factory=list)  # records this invocation journaled

    def intend(self, key: str, kind: str, data: Mapping[str, Any]) -> Record:
        """Journal the intent to set ``key`` up (written to disk before returning)."""
        return self.intend_many([(key, kind, data)])[0]

    def intend_many(self, items: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[Record]:
        """Journal several intents with one atomic write: all ports of a guest go out together."""
        records = self.journal.add(self.feature, items, op=f"{self.event.op} {self.event.subop}")
        self.created.extend(records)
        return records

    def confirm(self, records: Sequence[Record], updates: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Mark records as done (optionally merging data learnt from the peer, e.g. a switch-chosen VLAN)."""
        self.journal.confirm(records, updates or {})

    def journaled(self, kind: str | None = None) -> list[Record]:
        """This feature's records from earlier invocations too (e.g. a reservation made at prepare)."""
        return [r for r in self.journal.records if r.feature == self.feature and (kind is None or r.kind == kind)]

    def forget(self, records: Sequence[Record]) -> None:
        """Drop records whose state no longer exists (e.g. a reservation replaced by an association)."""
        self.journal.remove(records)


class Feature(abc.ABC):
    """Base of every feature.  Subclasses set the class attributes and implement setup and teardown."""

    #: The name used in the config and in ``<vdp:feature name=...>``.
    name: ClassVar[str]
    #: Raw-bytes markers: the guest concerns this feature only if one occurs in the domain XML.
    #: Our metadata namespace always counts.  Keep cheap: this runs for every guest on every event.  Select
    #: only what the feature acts on: whatever matches pays the slow path on every event, and an XML error
    #: vetoes only guests that some enabled feature wants.
    #: The entry's fast path knows only the namespace and the built-in features' markers (it runs before
    #: any feature is imported): a third-party feature is reached through the guest's <vdp:hooks> metadata.
    markers: ClassVar[tuple[bytes, ...]] = ()
    #: The (operation, sub-operation) pairs setup() acts on.
    handles: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    #: Keys of this feature's config section.
    options: ClassVar[Mapping[str, Option]] = {}

    def __init__(self, config: Config, settings: Mapping[str, Any]) -> None:
        self.config = config
        self.settings = settings

    @classmethod
    def wants(cls, raw: bytes) -> bool:
        """The cheap test on the raw XML bytes (a feature may add cheap host-side facts, see ``markers``)."""
        # The URI with its quotes: "http://libvirt-vdp-hooks.org/xmlns/" is a near miss, not ours.
        return any(ns in raw for ns in _OUR_NAMESPACE) or any(marker in raw for marker in cls.markers)

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for ``vdp-hooks check`` and the logs."""

    def targets(self, event: Event) -> list[str]:
        """The keys (ports) this feature acts on for ``event``: the policy is decided per key."""
        return [p.key for p in event.ports]

    @abc.abstractmethod
    def setup(self, event: Event, ctx: Context) -> list[Outcome]:
        """Do what ``event`` asks of this feature; one Outcome per target.  Journal through ``ctx``."""

    @abc.abstractmethod
    def teardown(self, records: Sequence[Record], ctx: Context) -> list[Outcome]:
        """Undo ``records`` (all at once where the peer allows); one Outcome per record, key = record.key.

        Idempotent: a record whose state is already gone is a success.
        """

    def declared(self, event: Event) -> list[tuple[str, str, Mapping[str, Any]]]:
        """Records (key, kind, data) for what the XML declares, torn down at ``release end`` even if the
        journal lost them (a crash before the journal existed, a wiped /run)."""
        return []

    def check(self) -> list[CheckResult]:
        """Host checks for ``vdp-hooks check``."""
        return []

    def live_state(self, records: Sequence[Record]) -> dict[str, str]:
        """For ``vdp-hooks status``: what the peer says about each record (key -> short state)."""
        return {}


def instances(
    config: Config, raw: bytes, extra_names: tuple[str, ...] = (), log: EventLog | None = None
) -> list[Feature]:
    """Instances of the enabled features that want this guest, in config order (plus ``extra_names``,
    features no longer enabled that still have journal records to tear down).

    A feature's bad settings raise, unless the config was loaded leniently (the never-fail operations):
    then its built-in defaults count and each problem is logged.
    """
    found = []
    for name in (*config.features, *(n for n in extra_names if n not in config.features)):
        try:
            cls = feature_class(name)
            # A feature with journal records is needed whatever the XML says now (metadata removed at run time).
            if name in config.features and name not in extra_names and not cls.wants(raw):
                continue
            bad: list[ConfigError] = []
            settings = config.feature_settings(name, cls.options, errors=bad if config.lenient else None)
            found.append(cls(config, settings))
            for problem in bad:
                if log is not None:
                    log.error("%s; using its built-in default", problem.one_line(), feature=name, outcome="error")
        except ConfigError as exc:
            if name in config.features and not config.lenient:
                raise
            # Journaled by a feature that is no longer installed: the others still tear down their part.
            if log is not None:
                log.error("%s; its journal records are kept", exc.one_line(), feature=name, outcome="pending")
    return found


def _entry_point(name: str) -> EntryPoint | None:
    from importlib import metadata

    # Python 3.9 returns a dict of lists; 3.10+ an EntryPoints object with select(): no one type fits both.
    found: Any = metadata.entry_points()
    eps = found.select(group=ENTRY_POINT_GROUP) if hasattr(found, "select") else found.get(ENTRY_POINT_GROUP, [])
    for ep in eps:
        if ep.name == name:
            return ep
    return None


def is_known_feature(name: str) -> bool:
    if name in BUILTIN_FEATURES:
        return True
    try:
        return _entry_point(name) is not None
    except Exception as exc:  # someone else's broken *.dist-info must not become a traceback on stderr
        raise ConfigError(
            f"cannot look up feature '{name}': the installed entry points are unreadable ({type(exc).__name__}: {exc})",
            hint="repair or remove the broken Python package, then run 'vdp-hooks check'",
        ) from exc


def feature_class(name: str) -> type[Feature]:
    """The class for a feature name: built-in first, then entry points."""
    try:
        if name in BUILTIN_FEATURES:
            module, _, attr = BUILTIN_FEATURES[name].partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            ep = _entry_point(name)
            if ep is None:
                raise ConfigError(
                    f"feature '{name}' is neither built in ({', '.join(BUILTIN_FEATURES)}) nor installed "
                    f"(entry point group {ENTRY_POINT_GROUP})"
                )
            cls = ep.load()
    except HookError:
        raise
    except Exception as exc:  # a broken plugin must name itself, not crash the hook with a traceback
        raise ConfigError(f"feature '{name}' cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Feature)):
        raise ConfigError(f"feature '{name}' does not subclass hooks.feature.Feature")
    return cls
