"""The host config: every error names file and line; a broken config vetoes ``begin`` only for guests that
have something for us; features are found by name (built in or through entry points).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks.config import CONFIG_PATH, HOOKS_OPTIONS, Config, load_config, parse_bool, parse_seconds
from hooks.errors import ConfigError
from hooks.feature import is_known_feature
from tests.unit.conftest import DATA, MAC_A, PLUGINS, HookEnv, domain_xml, hooks_md, port

_NO_SURROGATES: Any = ("Cs",)


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "vdp-hooks.conf"
    path.write_text(text)
    return load_config(str(path), known_features=is_known_feature)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return info.value.one_line()


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VDP_HOOKS_CONFIG", raising=False)
    config = load_config(str(tmp_path / "absent.conf"))
    assert config.path is None
    assert (config.exchange_timeout, config.invocation_timeout, config.required) == (10.0, 30.0, True)
    assert config.features == HOOKS_OPTIONS["features"].default
    # Declared once, in HOOKS_OPTIONS: Config's own field defaults are those.
    assert {key: getattr(Config(), key) for key in HOOKS_OPTIONS} == {k: o.default for k, o in HOOKS_OPTIONS.items()}
    assert CONFIG_PATH == "/etc/libvirt/vdp-hooks.conf"


def test_env_override_naming_a_missing_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VDP_HOOKS_CONFIG", str(tmp_path / "nope.conf"))
    with pytest.raises(ConfigError, match="VDP_HOOKS_CONFIG names a file that does not exist"):
        load_config()


def test_full_config(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "# comment\n[hooks]\nfeatures = rec1, links\nrequired = no\nexchange_timeout = 500ms\n"
        "invocation_timeout = 1m\nmarker_ttl = 2.5s\n\n; also a comment\n[uplinks]\nfabric-a = eth0\n"
        "[rec1]\nsleep_after = 1\nrequired = yes\n[links]\nrequire = lo\n",
    )
    assert config.features == ("rec1", "links")
    assert (config.required, config.exchange_timeout, config.invocation_timeout, config.marker_ttl) == (
        False,
        0.5,
        60.0,
        2.5,
    )
    assert config.uplink("fabric-a") == "eth0" and config.uplink("eno9") == "eno9"
    assert config.feature_required("rec1") is True and config.feature_required("links") is False
    # The feature's settings see the same parsed value (None: the section does not say).
    from hooks.feature import feature_class

    assert config.feature_settings("rec1", feature_class("rec1").options)["required"] is True
    assert config.feature_settings("links", feature_class("links").options)["required"] is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[hooks]\nfeatures = rec1\ncolour = blue\n", ":3: [hooks] has no key 'colour'"),
        ("[hooks]\n\nrequired = maybe\n", ":3: [hooks] required: 'maybe' is not yes/no"),
        ("[hooks]\nexchange_timeout = soon\n", ":2: [hooks] exchange_timeout: 'soon' is not a duration"),
        ("[hooks]\nmarker_ttl = 0\n", ":2: [hooks] marker_ttl: '0' must be more than zero"),
        ("[hooks]\nrequired = yes\nrequired = no\n", ":3: key 'required' repeated (first on line 2)"),
        ("[hooks]\n[hooks]\n", ":2: section [hooks] appears twice"),
        ("[hooks]\nfeatures = rec1\n\n[frobnicate]\nx = 1\n", ":5: section [frobnicate] is not [hooks], [uplinks]"),
        ("[hooks]\nthis line has no equals sign\n", ":2: expected 'key = value'"),
        ("[hooks\nrequired = yes\n", ":1: malformed section header '[hooks'"),
        ("[]\n", ":1: malformed section header"),
        ("required = yes\n", ":1: 'key = value' before any [section]"),
        ("[uplinks]\nfabric-a = eth0 eth1\n", ":2: [uplinks] fabric-a = 'eth0 eth1' is not an interface name"),
        ("[uplinks]\nfabric-a = an-interface-name-too-long\n", ":2: [uplinks] fabric-a"),
        ("[rec1]\nlog = x\nrequired = sometimes\n", ":3: [rec1] required: 'sometimes' is not yes/no"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    message = _error(tmp_path, text)
    assert f"{tmp_path / 'vdp-hooks.conf'}{needle}" in message, message
    assert "vdp-hooks check" in message, "the hint says what to do"


def test_timeouts_must_leave_room_for_rollback(tmp_path: Path) -> None:
    message = _error(tmp_path, "[hooks]\nexchange_timeout = 10\ninvocation_timeout = 10\n")
    assert "invocation_timeout (10 s) must exceed exchange_timeout (10 s)" in message


def test_feature_keys_are_checked_against_what_the_feature_declares(tmp_path: Path) -> None:
    from hooks.feature import feature_class

    config = _load(tmp_path, "[hooks]\nfeatures = rec1\n[rec1]\nlog = /dev/null\nbogus = 1\nsleep_after = x\n")
    cls = feature_class("rec1")
    with pytest.raises(ConfigError, match=r"vdp-hooks.conf:5: \[rec1\] has no key 'bogus'"):
        config.feature_settings("rec1", cls.options)
    config = _load(tmp_path, "[hooks]\nfeatures = rec1\n[rec1]\nsleep_after = x\n")
    with pytest.raises(ConfigError, match=r"vdp-hooks.conf:4: \[rec1\] sleep_after:"):
        config.feature_settings("rec1", cls.options)


@pytest.mark.parametrize(("text", "value"), [("10", 10.0), ("2.5", 2.5), ("500ms", 0.5), ("1m", 60.0), ("1h", 3600.0)])
def test_parse_seconds(text: str, value: float) -> None:
    assert parse_seconds(text) == value


@pytest.mark.parametrize(
    "text", ["", "-1", "0", "1d", "ms", "nan", "-nan", "inf", "-inf", "infinity", "1e999", "1e300", "1e9", "inf h"]
)
def test_parse_seconds_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_seconds(text)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("exchange_timeout", "1e9", "is more than the 10m allowed"),
        ("exchange_timeout", "1e300", "is more than the 10m allowed"),
        ("invocation_timeout", "1e9", "is more than the 1h allowed"),
        ("invocation_timeout", "inf", "is more than the 1h allowed"),
        ("invocation_timeout", "nan", "is not a number"),
        ("marker_ttl", "2h", "is more than the 1h allowed"),
    ],
)
def test_timeouts_have_sane_upper_bounds(tmp_path: Path, key: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=rf"vdp-hooks.conf:3: \[hooks\] {key}: '{value}' {needle}"):
        _load(tmp_path, f"[hooks]\n# a comment\n{key} = {value}\n")


def test_the_upper_bounds_themselves_are_allowed(tmp_path: Path) -> None:
    config = _load(tmp_path, "[hooks]\nexchange_timeout = 10m\ninvocation_timeout = 1h\nmarker_ttl = 3600\n")
    assert (config.exchange_timeout, config.invocation_timeout, config.marker_ttl) == (600.0, 3600.0, 3600.0)


def test_lenient_load_keeps_what_is_usable(tmp_path: Path) -> None:
    """For the operations that must tear down: each bad line costs its own default, nothing more."""
    path = tmp_path / "vdp-hooks.conf"
    path.write_text(
        "[hooks]\n"
        "exchange_timeout = 1e300\n"  # 2: bad value -> default
        "invocation_timeout = 20\n"
        "frobnicate = 1\n"  # 4: unknown key
        "garbage line\n"  # 5: no '='
        "log_file = /tmp/x.log\n"
        "[uplinks]\n"
        "fabric-a = up0\n"
        "fabric-b = not an ifname\n"  # 9: bad interface name
        "[nosuchsection]\n"  # unknown section (known_features says no)
        "k = v\n"
        "[rec1\n"  # 12: malformed header: its keys go nowhere
        "log = x\n"
    )
    errors: list[ConfigError] = []
    config = load_config(str(path), known_features=lambda name: name == "rec1", errors=errors)
    assert config.lenient
    assert config.exchange_timeout == HOOKS_OPTIONS["exchange_timeout"].default
    assert config.invocation_timeout == 20.0 and config.log_file == "/tmp/x.log"
    assert dict(config.uplinks) == {"fabric-a": "up0"}
    assert "nosuchsection" not in config.raw_sections and "rec1" not in config.raw_sections
    lines = sorted(int(str(e).split(":")[1]) for e in errors)
    assert lines == [2, 4, 5, 9, 11, 12]  # an unknown section is named at its first key
    with pytest.raises(ConfigError):  # the same file, strictly: the first error
        load_config(str(path), known_features=lambda name: name == "rec1")


def test_lenient_feature_settings_take_defaults_for_bad_keys(tmp_path: Path) -> None:
    from hooks.feature import feature_class

    cls = feature_class("rec1")
    config = _load(tmp_path, "[hooks]\nfeatures = rec1\n[rec1]\nsleep_after = x\nnokey = 1\nlog = /tmp/l\n")
    errors: list[ConfigError] = []
    settings = config.feature_settings("rec1", cls.options, errors=errors)
    assert settings["sleep_after"] == 0.0 and settings["log"] == "/tmp/l"
    assert [str(e).split(":")[1] for e in errors] == ["4", "5"]


def test_lenient_load_of_an_unreadable_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "vdp-hooks.conf"
    path.write_bytes(b"\xff\xfe")
    errors: list[ConfigError] = []
    config = load_config(str(path), errors=errors)
    assert config.features == Config().features and len(errors) == 1 and "cannot read" in str(errors[0])


def test_parse_bool() -> None:
    assert [parse_bool(t) for t in ("yes", "TRUE", " on ", "1")] == [True] * 4
    assert [parse_bool(t) for t in ("no", "False", "off", "0")] == [False] * 4
    with pytest.raises(ValueError):
        parse_bool("y")


# ------------------------------------------------------------------------------------------ through the entry
BROKEN = {
    "unknown key": ("[hooks]\nfeatures = rec1\nsyslog = no\nspeed = fast\n", ":4: [hooks] has no key 'speed'"),
    "bad value": ("[hooks]\nfeatures = rec1\nsyslog = no\nrequired = perhaps\n", ":4: [hooks] required:"),
    "duplicate key": ("[hooks]\nsyslog = no\nsyslog = no\n", ":3: key 'syslog' repeated"),
    "unknown section": ("[hooks]\nsyslog = no\n[vpd]\nrequired = no\n", ":4: section [vpd] is not"),
    "malformed line": ("[hooks]\nsyslog no\n", ":2: expected 'key = value'"),
    "feature key": (
        "[hooks]\nfeatures = rec1\nsyslog = no\n[vdp]\nrequired = no\n[rec1]\nfail = 52:54:00:aa:00:02=NoSuchError\n",
        ":7: [rec1] fail: 'NoSuchError' is not a class of hooks.errors",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_vetoes_begin_only_for_guests_with_something_for_us(hookenv: HookEnv, case: str) -> None:
    text, needle = BROKEN[case]
    hookenv.config.write_text(text)
    ours = domain_xml(metadata=hooks_md(port(MAC_A)))
    result = hookenv.run("prepare", "begin", ours)
    assert result.returncode == 1
    assert f"{hookenv.config}{needle}" in result.err, result.err
    assert result.err.startswith("libvirt-vdp-hooks: guest guest1: ")
    plain = (DATA / "plain.xml").read_bytes()
    for hook in (("prepare", "begin"), ("migrate", "begin"), ("started", "begin")):
        assert hookenv.run(*hook, plain, name="web-frontend-03").returncode == 0, "fast path: config never read"
    for hook in (("release", "end"), ("reconnect", "begin"), ("stopped", "end")):
        assert hookenv.run(*hook, ours).returncode == 0


@pytest.mark.parametrize(
    ("features", "needle"),
    [
        ("nosuchfeature", "feature 'nosuchfeature' is neither built in"),
        ("recbroken", "feature 'recbroken' cannot be loaded: AttributeError"),
        ("recnotafeature", "feature 'recnotafeature' does not subclass hooks.feature.Feature"),
    ],
)
def test_features_that_cannot_be_found_or_loaded(hookenv: HookEnv, features: str, needle: str) -> None:
    hookenv.config.write_text(f"[hooks]\nfeatures = {features}\nsyslog = no\n[vdp]\nrequired = no\n")
    result = hookenv.run("prepare", "begin", domain_xml(metadata=hooks_md(port(MAC_A))))
    assert result.returncode == 1 and needle in result.err, result.err
    assert hookenv.run("release", "end", domain_xml(metadata=hooks_md(port(MAC_A)))).returncode == 0


def test_plugin_features_are_found_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_known_feature("links") and is_known_feature("vdp")
    assert is_known_feature("rec1") and is_known_feature("rec2")  # tests/plugins is on sys.path (conftest)
    assert not is_known_feature("rec3")


def test_uplinks_map_logical_names_for_the_links_feature(hookenv: HookEnv) -> None:
    xml = domain_xml(metadata=hooks_md(port(MAC_A, uplink="fabric-a")))
    hookenv.write_config(features="links", extra="[uplinks]\nfabric-a = lo\n")
    assert hookenv.run("prepare", "begin", xml).returncode == 0
    hookenv.write_config(features="links", extra="[uplinks]\nfabric-a = vhnosuch0\n")
    result = hookenv.run("migrate", "begin", xml)
    assert result.returncode == 1
    # The message names the logical uplink and the [uplinks] line that maps it here.
    line = next(n for n, text in enumerate(hookenv.config.read_text().splitlines(), 1) if text.startswith("fabric-a"))
    assert (
        f"port {MAC_A}: feature links: uplink fabric-a ([uplinks] fabric-a = vhnosuch0 ({hookenv.config}:{line})): "
        "interface vhnosuch0 does not exist on this host" in result.err
    ), result.err


def test_someone_elses_broken_package_metadata_is_one_clean_line(hookenv: HookEnv, tmp_path: Path) -> None:
    """A half-installed unrelated package with a malformed entry_points.txt must not print a traceback."""
    dist = tmp_path / "site" / "halfinstalled-1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: halfinstalled\nVersion: 1\n")
    (dist / "entry_points.txt").write_text("[console_scripts]\nthis line has no equals sign\n")
    env = hookenv.env(PYTHONPATH=f"{PLUGINS}{os.pathsep}{dist.parent}")
    xml = domain_xml(metadata=hooks_md(port(MAC_A)))
    result = hookenv.run("prepare", "begin", xml, env=env)  # the contract check: one line, no traceback
    assert result.returncode == 1
    assert "cannot look up feature 'rec1': the installed entry points are unreadable" in result.err
    assert hookenv.run("release", "end", xml, env=env).returncode == 0


_line = st.one_of(
    st.sampled_from(
        [
            "[hooks]",
            "[uplinks]",
            "[rec1]",
            "[vdp]",
            "[links]",
            "[",
            "[]",
            "[ hooks ]",
            "features = rec1",
            "features =",
            "required = yes",
            "required = 2",
            "invocation_timeout = 1",
            "exchange_timeout = 1e309",
            "exchange_timeout = nan",
            "marker_ttl = -0",
            "log_file = /nonexistent/dir/x.log",
            "fabric-a = eth0",
            " = value",
            "=",
            "# comment",
            "; comment",
            "sleep_after = 1",
            "\ufeff[hooks]",
        ]
    ),
    st.text(st.characters(blacklist_categories=_NO_SURROGATES), max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(_line, max_size=8))
def test_odd_config_is_loaded_or_refused_with_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    """Whatever is in the file: a Config, or a ConfigError naming the file (never another exception)."""
    path = tmp_path_factory.mktemp("conf") / "vdp-hooks.conf"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        config = load_config(str(path), known_features=is_known_feature)
    except ConfigError as exc:
        assert exc.one_line().startswith(str(path)), exc.one_line()
        return
    for name in config.raw_sections:
        try:
            config.feature_settings(name, {})
        except ConfigError as exc:
            assert exc.one_line().startswith(f"{path}:"), exc.one_line()
