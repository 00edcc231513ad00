"""The host configuration: ``/etc/libvirt/vdp-hooks.conf`` (INI), ``VDP_HOOKS_CONFIG`` overrides the path.

A small parser of our own instead of configparser so that every error names file *and line*, and so
that unknown keys and bad values are errors rather than silently ignored.  No file means defaults.

Sections: ``[hooks]`` (framework), ``[uplinks]`` (logical uplink name -> this host's interface), and one
section per feature (``[vdp]``, ``[links]``, ...) whose keys that feature declares.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

from hooks.errors import ConfigError
from hooks.plain import field, plain

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
# Any: an option's value is whatever its parse function returns (int, float, bool, str, tuples).
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = [
    "CONFIG_PATH",
    "Config",
    "Option",
    "load_config",
    "parse_bool",
    "parse_seconds",
]

CONFIG_PATH = "/etc/libvirt/vdp-hooks.conf"


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("yes", "true", "on", "1"):
        return True
    if low in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"'{text}' is not yes/no")


#: No duration of ours is sane beyond this: a hook waiting longer holds libvirtd's job for the guest.
MAX_SECONDS = 86400.0


def parse_seconds(text: str, *, maximum: float = MAX_SECONDS) -> float:
    """``10``, ``2.5``, ``500ms``, ``1m``, ``1h`` -> seconds (> 0, at most ``maximum``)."""
    t = text.strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], factor
            break
    try:
        value = float(t) * scale
    except ValueError:
        raise ValueError(f"'{text}' is not a duration (e.g. 10, 2.5s, 500ms)") from None
    if value != value:  # noqa: PLR0124 - only nan differs from itself (math would be one more import)
        raise ValueError(f"'{text}' is not a number")
    if not value > 0:
        raise ValueError(f"'{text}' must be more than zero")
    if value > maximum:  # "inf", "1e300", "1e9": a hook without a real deadline hangs libvirtd's job
        raise ValueError(f"'{text}' is more than the {_duration(maximum)} allowed")
    return value


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _seconds_upto(maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        return parse_seconds(text, maximum=maximum)

    return parse


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(n for n in (p.strip() for p in text.replace(",", " ").split()) if n)


@plain(frozen=True)
class Option:
    """One key of a section: how to parse it, its default, and a line for the docs."""

    parse: Callable[[str], Any]
    default: Any
    doc: str = ""


#: ``[hooks]``: the framework's own keys.
HOOKS_OPTIONS: Mapping[str, Option] = {
    "features": Option(_parse_names, ("links", "vdp"), "enabled features, in setup order"),
    "required": Option(parse_bool, True, "host default: a declared port that cannot be set up vetoes"),
    "exchange_timeout": Option(_seconds_upto(600.0), 10.0, "seconds per request/answer exchange (at most 10m)"),
    "invocation_timeout": Option(
        _seconds_upto(3600.0), 30.0, "seconds per hook invocation, rollback included (at most 1h)"
    ),
    "marker_ttl": Option(_seconds_upto(3600.0), 10.0, "seconds an incoming-migration marker stays valid (at most 1h)"),
    "log_file": Option(str, "", "also log to this file (for hosts without /dev/log)"),
    "syslog": Option(parse_bool, True, "log to syslog (journald)"),
    "debug": Option(parse_bool, False, "log debug lines"),
}

#: Sections that are neither a feature's nor the framework's; the named module parses their keys.
COMPONENT_SECTIONS: Mapping[str, str] = {"agent": "hooks.agent"}

#: Every feature section also takes this key (the host-wide policy for that feature).
FEATURE_COMMON: Mapping[str, Option] = {
    "required": Option(parse_bool, None, "host policy for this feature (default: [hooks] required)"),
}


@plain(frozen=True)
class Config:
    """The parsed host configuration; ``raw_sections[name]`` gives a feature's raw keys with line numbers.

    The ``[hooks]`` fields default to HOOKS_OPTIONS' defaults (declared there only).
    """

    path: str | None = None
    features: tuple[str, ...] = HOOKS_OPTIONS["features"].default
    required: bool = HOOKS_OPTIONS["required"].default
    exchange_timeout: float = HOOKS_OPTIONS["exchange_timeout"].default
    invocation_timeout: float = HOOKS_OPTIONS["invocation_timeout"].default
    marker_ttl: float = HOOKS_OPTIONS["marker_ttl"].default
    log_file: str = HOOKS_OPTIONS["log_file"].default
    syslog: bool = HOOKS_OPTIONS["syslog"].default
    debug: bool = HOOKS_OPTIONS["debug"].default
    uplinks: Mapping[str, str] = field(default_factory=dict)
    uplink_lines: Mapping[str, int] = field(default_factory=dict)  # logical name -> its [uplinks] line
    raw_sections: Mapping[str, Mapping[str, tuple[str, int]]] = field(default_factory=dict)
    #: Each feature section's ``required`` key, parsed once by load_config (absent: ``[hooks] required``).
    feature_required_keys: Mapping[str, bool] = field(default_factory=dict)
    #: Loaded leniently (``load_config(errors=...)``): feature sections take defaults for bad keys too.
    lenient: bool = False

    def where(self, line: int) -> str:
        return f"{self.path or '<defaults>'}:{line}"

    def uplink(self, name: str) -> str:
        """A logical uplink name -> this host's interface; an interface name maps to itself."""
        return self.uplinks.get(name, name)

    def uplink_origin(self, name: str) -> str:
        """Where ``name`` gets its interface, for messages: ``[uplinks] fabric-a = up0 (FILE:7)``."""
        if name in self.uplinks:
            return f"[uplinks] {name} = {self.uplinks[name]} ({self.where(self.uplink_lines.get(name, 0))})"
        return f"not in [uplinks] of {self.path or 'the built-in defaults'}: taken as an interface name"

    def feature_settings(
        self, name: str, options: Mapping[str, Option], *, errors: list[ConfigError] | None = None
    ) -> dict[str, Any]:
        """Parse a feature's section against the options the feature declares (errors name file:line).

        With ``errors``, a bad key is appended there and its default kept instead of raising.
        """
        allowed = {**FEATURE_COMMON, **options}
        values = {key: opt.default for key, opt in allowed.items()}
        values["required"] = self.feature_required_keys.get(name, values["required"])  # parsed at load
        for key, (text, line) in self.raw_sections.get(name, {}).items():
            if key == "required":
                continue
            try:
                if key not in allowed:
                    raise ConfigError(
                        f"{self.where(line)}: [{name}] has no key '{key}' (known: {', '.join(sorted(allowed))})"
                    )
                try:
                    values[key] = allowed[key].parse(text)
                except ValueError as exc:
                    raise ConfigError(f"{self.where(line)}: [{name}] {key}: {exc}") from None
            except ConfigError as exc:
                if errors is None:
                    raise
                errors.append(exc)
        return values

    def feature_required(self, name: str) -> bool:
        """The host's policy for feature ``name``: its section's ``required``, else ``[hooks] required``."""
        return self.feature_required_keys.get(name, self.required)


def _read_ini(path: str, text: str, errors: list[ConfigError] | None = None) -> dict[str, dict[str, tuple[str, int]]]:
    sections: dict[str, dict[str, tuple[str, int]]] = {}
    current: dict[str, tuple[str, int]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        try:
            current = _ini_line(path, number, line, sections, current)
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
            if line.strip().startswith("["):
                current = {}  # the keys of a section we cannot use go nowhere
    return sections


def _ini_line(
    path: str,
    number: int,
    line: str,
    sections: dict[str, dict[str, tuple[str, int]]],
    current: dict[str, tuple[str, int]] | None,
) -> dict[str, tuple[str, int]] | None:
    """Take one line into ``sections``; returns the section that following keys go to."""
    stripped = line.strip()
    if not stripped or stripped[0] in "#;":
        return current
    if stripped.startswith("["):
        if not stripped.endswith("]") or len(stripped) < 3:
            raise ConfigError(f"{path}:{number}: malformed section header {stripped!r}")
        name = stripped[1:-1].strip()
        if name in sections:
            raise ConfigError(f"{path}:{number}: section [{name}] appears twice")
        sections[name] = {}
        return sections[name]
    if "=" not in stripped:
        raise ConfigError(f"{path}:{number}: expected 'key = value', got {stripped!r}")
    if current is None:
        raise ConfigError(f"{path}:{number}: 'key = value' before any [section]")
    key, _, value = stripped.partition("=")
    key = key.strip()
    if key in current:
        raise ConfigError(f"{path}:{number}: key '{key}' repeated (first on line {current[key][1]})")
    current[key] = (value.strip(), number)
    return current


def load_config(
    path: str | None = None,
    *,
    known_features: Callable[[str], bool] | None = None,
    errors: list[ConfigError] | None = None,
) -> Config:
    """Read and validate the host config.  ``known_features(name)`` says whether a section is a feature's.

    Feature keys are validated later by :meth:`Config.feature_settings` (the feature declares them).

    ``errors`` (for the operations that must tear down whatever the config says): every problem is
    appended there instead of raised, and the rest of the file still counts -- each bad line falls back
    to its built-in default, the good ``[uplinks]`` lines still map.  Then ``Config.lenient`` is true.
    """
    path = path or os.environ.get("VDP_HOOKS_CONFIG") or CONFIG_PATH

    def fail(exc: ConfigError) -> None:
        if errors is None:
            raise exc
        errors.append(exc)

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        if os.environ.get("VDP_HOOKS_CONFIG") == path:
            fail(ConfigError(f"{path}: VDP_HOOKS_CONFIG names a file that does not exist"))
        return Config(path=None, lenient=errors is not None)
    except (OSError, UnicodeDecodeError) as exc:
        fail(ConfigError(f"{path}: cannot read: {exc}"))
        return Config(path=path, lenient=True)
    sections = _read_ini(path, text, errors)
    values: dict[str, Any] = {}
    for key, (text_value, line) in sections.pop("hooks", {}).items():
        option = HOOKS_OPTIONS.get(key)
        if option is None:
            fail(ConfigError(f"{path}:{line}: [hooks] has no key '{key}' (known: {', '.join(sorted(HOOKS_OPTIONS))})"))
            continue
        try:
            values[key] = option.parse(text_value)
        except ValueError as exc:
            fail(ConfigError(f"{path}:{line}: [hooks] {key}: {exc}"))
    uplinks: dict[str, str] = {}
    uplink_lines: dict[str, int] = {}
    for key, (text_value, line) in sections.pop("uplinks", {}).items():
        uplink_lines[key] = line
        if not text_value or len(text_value) > 15 or "/" in text_value or " " in text_value:
            fail(ConfigError(f"{path}:{line}: [uplinks] {key} = '{text_value}' is not an interface name"))
            continue
        uplinks[key] = text_value
    feature_required: dict[str, bool] = {}
    for name, keys in list(sections.items()):
        if known_features is not None and name not in COMPONENT_SECTIONS and not known_features(name):
            first = min((line for _, line in keys.values()), default=0)
            fail(ConfigError(f"{path}:{first}: section [{name}] is not [hooks], [uplinks] or a known feature"))
            del sections[name]
            continue
        raw_required = keys.get("required")
        if raw_required:
            # Parsed here, once, for the policy (Config.feature_required) and the feature's settings alike.
            try:
                feature_required[name] = FEATURE_COMMON["required"].parse(raw_required[0])
            except ValueError as exc:
                fail(ConfigError(f"{path}:{raw_required[1]}: [{name}] required: {exc}"))
                del keys["required"]
    exchange = values.get("exchange_timeout", HOOKS_OPTIONS["exchange_timeout"].default)
    invocation = values.get("invocation_timeout", HOOKS_OPTIONS["invocation_timeout"].default)
    if invocation <= exchange:
        fail(
            ConfigError(
                f"{path}: invocation_timeout ({invocation:g} s) must exceed exchange_timeout "
                f"({exchange:g} s): rollback needs time after a failed exchange"
            )
        )
        values.pop("exchange_timeout", None)
        values.pop("invocation_timeout", None)
    return Config(
        path=path,
        uplinks=MappingProxyType(uplinks),
        uplink_lines=MappingProxyType(uplink_lines),
        raw_sections=MappingProxyType({k: MappingProxyType(v) for k, v in sections.items()}),
        feature_required_keys=MappingProxyType(feature_required),
        lenient=errors is not None,
        **values,
    )
