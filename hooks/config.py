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


def parse_seconds(text: str) -> float:
    """``10``, ``2.5``, ``500ms``, ``1m``, ``1h`` -> seconds (> 0)."""
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
    if not value > 0:
        raise ValueError(f"'{text}' must be more than zero")
    if value == float("inf"):  # "inf", "1e999": a hook without a deadline hangs libvirtd's job
        raise ValueError(f"'{text}' is not a finite duration")
    return value


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
    "exchange_timeout": Option(parse_seconds, 10.0, "seconds per request/answer exchange"),
    "invocation_timeout": Option(parse_seconds, 30.0, "seconds per hook invocation, rollback included"),
    "marker_ttl": Option(parse_seconds, 10.0, "seconds an incoming-migration marker stays valid"),
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
    """The parsed host configuration; ``section(name)`` gives a feature's raw keys with line numbers."""

    path: str | None = None
    features: tuple[str, ...] = ("links", "vdp")
    required: bool = True
    exchange_timeout: float = 10.0
    invocation_timeout: float = 30.0
    marker_ttl: float = 10.0
    log_file: str = ""
    syslog: bool = True
    debug: bool = False
    uplinks: Mapping[str, str] = field(default_factory=dict)
    raw_sections: Mapping[str, Mapping[str, tuple[str, int]]] = field(default_factory=dict)

    def where(self, line: int) -> str:
        return f"{self.path or '<defaults>'}:{line}"

    def uplink(self, name: str) -> str:
        """A logical uplink name -> this host's interface; an interface name maps to itself."""
        return self.uplinks.get(name, name)

    def feature_settings(self, name: str, options: Mapping[str, Option]) -> dict[str, Any]:
        """Parse a feature's section against the options the feature declares (errors name file:line)."""
        allowed = {**FEATURE_COMMON, **options}
        values = {key: opt.default for key, opt in allowed.items()}
        for key, (text, line) in self.raw_sections.get(name, {}).items():
            if key not in allowed:
                raise ConfigError(
                    f"{self.where(line)}: [{name}] has no key '{key}' (known: {', '.join(sorted(allowed))})"
                )
            try:
                values[key] = allowed[key].parse(text)
            except ValueError as exc:
                raise ConfigError(f"{self.where(line)}: [{name}] {key}: {exc}") from None
        return values

    def feature_required(self, name: str) -> bool:
        raw = self.raw_sections.get(name, {}).get("required")
        return parse_bool(raw[0]) if raw else self.required


def _read_ini(path: str, text: str) -> dict[str, dict[str, tuple[str, int]]]:
    sections: dict[str, dict[str, tuple[str, int]]] = {}
    current: dict[str, tuple[str, int]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]") or len(stripped) < 3:
                raise ConfigError(f"{path}:{number}: malformed section header {stripped!r}")
            name = stripped[1:-1].strip()
            if name in sections:
                raise ConfigError(f"{path}:{number}: section [{name}] appears twice")
            current = sections[name] = {}
            continue
        if "=" not in stripped:
            raise ConfigError(f"{path}:{number}: expected 'key = value', got {stripped!r}")
        if current is None:
            raise ConfigError(f"{path}:{number}: 'key = value' before any [section]")
        key, _, value = stripped.partition("=")
        key = key.strip()
        if key in current:
            raise ConfigError(f"{path}:{number}: key '{key}' repeated (first on line {current[key][1]})")
        current[key] = (value.strip(), number)
    return sections


def load_config(path: str | None = None, *, known_features: Callable[[str], bool] | None = None) -> Config:
    """Read and validate the host config.  ``known_features(name)`` says whether a section is a feature's.

    Feature keys are validated later by :meth:`Config.feature_settings` (the feature declares them).
    """
    path = path or os.environ.get("VDP_HOOKS_CONFIG") or CONFIG_PATH
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        if os.environ.get("VDP_HOOKS_CONFIG") == path:
            raise ConfigError(f"{path}: VDP_HOOKS_CONFIG names a file that does not exist") from None
        return Config(path=None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    sections = _read_ini(path, text)
    values: dict[str, Any] = {}
    for key, (text_value, line) in sections.pop("hooks", {}).items():
        option = HOOKS_OPTIONS.get(key)
        if option is None:
            raise ConfigError(f"{path}:{line}: [hooks] has no key '{key}' (known: {', '.join(sorted(HOOKS_OPTIONS))})")
        try:
            values[key] = option.parse(text_value)
        except ValueError as exc:
            raise ConfigError(f"{path}:{line}: [hooks] {key}: {exc}") from None
    uplinks: dict[str, str] = {}
    for key, (text_value, line) in sections.pop("uplinks", {}).items():
        if not text_value or len(text_value) > 15 or "/" in text_value or " " in text_value:
            raise ConfigError(f"{path}:{line}: [uplinks] {key} = '{text_value}' is not an interface name")
        uplinks[key] = text_value
    for name, keys in sections.items():
        if known_features is not None and name not in COMPONENT_SECTIONS and not known_features(name):
            first = min((line for _, line in keys.values()), default=0)
            raise ConfigError(f"{path}:{first}: section [{name}] is not [hooks], [uplinks] or a known feature")
    config = Config(
        path=path,
        uplinks=MappingProxyType(uplinks),
        raw_sections=MappingProxyType({k: MappingProxyType(v) for k, v in sections.items()}),
        **values,
    )
    if config.invocation_timeout <= config.exchange_timeout:
        raise ConfigError(
            f"{path}: invocation_timeout ({config.invocation_timeout:g} s) must exceed exchange_timeout "
            f"({config.exchange_timeout:g} s): rollback needs time after a failed exchange"
        )
    for name in sections:
        raw_required = sections[name].get("required")
        if raw_required:
            try:
                parse_bool(raw_required[0])
            except ValueError as exc:
                raise ConfigError(f"{path}:{raw_required[1]}: [{name}] required: {exc}") from None
    return config
