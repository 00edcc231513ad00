"""Domain XML -> Event: metadata validation with messages that name the element, namespace matching by URI,
and odd XML that must never produce a traceback, stdout, or an exit code libvirt would misread.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks.errors import XmlError
from hooks.event import MAX_XML_BYTES, parse_event
from hooks.runner import run
from tests.unit.conftest import (
    DATA,
    MAC_A,
    MAC_B,
    MAC_C,
    NS,
    PLUGINS,
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

ARGV = ["guest1", "prepare", "begin", "-"]
QBG = "<vdp:qbg managerid='11' typeid='1193047' typeidversion='2'/>"


def _event(metadata: str, **kw: object):  # type: ignore[no-untyped-def]
    return parse_event(ARGV, domain_xml(metadata=metadata, **kw))  # type: ignore[arg-type]


def _one_port_error(metadata: str, **kw: object) -> str:
    event = _event(metadata, **kw)
    assert len(event.ports) == 1
    assert event.ports[0].error, "the port should be rejected"
    return event.ports[0].error


# ------------------------------------------------------------------------------------------ what is parsed
def test_full_example_parses() -> None:
    event = parse_event(ARGV, (DATA / "guest-ports.xml").read_bytes())
    assert event.guest == "finance-db"
    assert event.uuid == uuid.UUID("09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f")
    assert event.feature_policy == {"rec1": True}
    qbg, qbh = event.ports
    assert (qbg.kind, qbg.uplink, qbg.vlan, qbg.required, qbg.error) == ("qbg", "fabric-a", 100, True, None)
    assert qbg.instance == uuid.UUID("09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f")
    assert (qbh.kind, qbh.uplink, qbh.vlan, qbh.required, qbh.error) == ("qbh", "fabric-b", 0, False, None)
    assert qbh.instance == event.uuid  # Qbh's instance is the domain UUID, like libvirt
    assert event.warnings == ()


def test_plain_guest_has_no_metadata() -> None:
    event = parse_event(["web", "prepare", "begin", "-"], (DATA / "plain.xml").read_bytes())
    assert not event.has_metadata and event.ports == ()
    assert [i.mac for i in event.interfaces] == ["52:54:00:3c:91:0a", "52:54:00:3c:91:0b"]
    assert event.interfaces[1].source_dev == "eno2"


def test_qbg_instance_defaults_to_a_stable_uuid_per_guest_and_mac() -> None:
    one = _event(hooks_md(port(MAC_A), port(MAC_B)))
    two = _event(hooks_md(port(MAC_A), port(MAC_B)))
    other = _event(hooks_md(port(MAC_A)), guest_uuid=uuid.uuid4())
    assert one.ports[0].instance == two.ports[0].instance
    assert one.ports[0].instance != one.ports[1].instance
    assert one.ports[0].instance != other.ports[0].instance


def test_direct_interface_uplink_defaults_to_its_source_device() -> None:
    event = _event(hooks_md(port(MAC_A, uplink=None)), interfaces=[interface(MAC_A, type="direct", source="eno7")])
    assert event.ports[0].uplink == "eno7" and event.ports[0].error is None
    error = _one_port_error(hooks_md(port(MAC_A, uplink=None)))  # bridge interface: no default
    assert "uplink= is missing" in error


def test_mac_is_matched_case_insensitively() -> None:
    event = _event(hooks_md(port(MAC_A.upper())))
    assert event.ports[0].error is None and event.ports[0].key == MAC_A


# ------------------------------------------------------------------------------------------ namespace by URI
@pytest.mark.parametrize("prefix", ["vdp", "hk", "x1", ""])
def test_namespace_is_matched_by_uri_not_prefix(prefix: str) -> None:
    event = _event(hooks_md(port(MAC_A, prefix=prefix), features={"rec1": "no"}, prefix=prefix))
    assert event.has_metadata and event.ports[0].error is None
    assert event.feature_policy == {"rec1": False}


def test_virsh_metadata_reprefixed_document() -> None:
    event = parse_event(ARGV, (DATA / "virsh-metadata.xml").read_bytes())
    assert event.has_metadata and len(event.ports) == 1 and event.ports[0].error is None


def test_our_prefix_on_a_foreign_namespace_is_not_ours() -> None:
    foreign = hooks_md(port(MAC_A)).replace(NS, "http://example.org/other")
    event = _event(foreign)
    assert not event.has_metadata and event.ports == ()


# ------------------------------------------------------------------------------------------ rules, per element
@pytest.mark.parametrize(
    ("metadata", "interfaces", "needle"),
    [
        (hooks_md(port(MAC_C)), None, "the guest has no <interface> with this MAC"),
        (
            hooks_md(port(MAC_A)),
            [interface(MAC_A, type="direct", source="eno1", virtualport="<virtualport type='802.1Qbg'/>")],
            "<virtualport type='802.1Qbg'> that libvirt manages itself",
        ),
        (
            hooks_md(port(MAC_A)),
            [interface(MAC_A, virtualport="<virtualport type='802.1Qbh'/>")],
            "<virtualport type='802.1Qbh'> that libvirt manages itself",
        ),
        (hooks_md(port("52:54:00:zz:00:02")), None, "mac must look like"),
        (hooks_md(port(MAC_A, vlan="4095")), None, "vlan=4095 is outside 0..4094"),
        (hooks_md(port(MAC_A, vlan="-1")), None, "vlan=-1 is outside"),
        (hooks_md(port(MAC_A, vlan="ten")), None, "vlan='ten' is not a decimal number"),
        (hooks_md(port(MAC_A, required="maybe")), None, "required='maybe' must be 'yes' or 'no'"),
        (hooks_md(port(MAC_A, body="<vdp:qbx profileid='a'/>")), None, "unknown element(s)"),
        (hooks_md(port(MAC_A, body="")), None, "needs exactly one <vdp:qbg> or <vdp:qbh>"),
        (hooks_md(port(MAC_A, body=QBG + QBG)), None, "needs exactly one"),
        (
            hooks_md(port(MAC_A, body=QBG.replace("/>", " instanceid='not-a-uuid'/>"))),
            None,
            "instanceid='not-a-uuid' is not a UUID",
        ),
        (hooks_md(port(MAC_A, body="<vdp:qbg managerid='11' typeid='1'/>")), None, "typeidversion= is required"),
        (hooks_md(port(MAC_A, body=QBG.replace("'11'", "'256'"))), None, "managerid=256 is outside 0..255"),
        (hooks_md(port(MAC_A, body="<vdp:qbh profileid=''/>")), None, "profileid= must be 1..39 bytes"),
        (hooks_md(port(MAC_A, body=f"<vdp:qbh profileid='{'p' * 40}'/>")), None, "profileid= must be 1..39 bytes"),
    ],
)
def test_port_rules_name_the_element(metadata: str, interfaces: list[str] | None, needle: str) -> None:
    error = _one_port_error(metadata, interfaces=interfaces)
    assert needle in error, error
    assert error.startswith("<vdp:port mac="), "the message names the element"


@pytest.mark.parametrize("vlan", [None, "0", "1", "100", "4094"])
def test_vlan_in_range_or_switch_assigned(vlan: str | None) -> None:
    event = _event(hooks_md(port(MAC_A, vlan=vlan)))
    assert event.ports[0].error is None
    assert event.ports[0].vlan == int(vlan or 0)


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        (hooks_md(port(MAC_A), port(MAC_A)), "<vdp:port mac='52:54:00:aa:00:02'> is declared twice"),
        (hooks_md(port(MAC_A), port(MAC_A.upper())), "is declared twice"),
        (hooks_md(features={"rec1": "perhaps"}), "<vdp:feature name='rec1'>: required='perhaps'"),
        (hooks_md(version="zero"), "version must be a positive integer"),
        (hooks_md() + hooks_md(), "more than one <vdp:hooks>"),
        ("<vdp:hooks xmlns:vdp='" + NS + "'><vdp:feature required='yes'/></vdp:hooks>", "name= is missing"),
    ],
)
def test_declaration_errors(metadata: str, needle: str) -> None:
    with pytest.raises(XmlError) as info:
        _event(metadata)
    assert needle in info.value.one_line()


@pytest.mark.parametrize("text", ["not-a-uuid", "", "8f2e1a52-7c1d-4a57-9d0b-1b2c3d4e5f6g"])
def test_bad_guest_uuid(text: str) -> None:
    with pytest.raises(XmlError, match=r"<uuid>.*</uuid> is not a UUID"):
        parse_event(ARGV, domain_xml(guest_uuid=text))


def test_unknown_attributes_warn() -> None:
    event = _event(hooks_md(port(MAC_A, attrs="colour='blue'", body=QBG.replace("/>", " shiny='yes'/>"))))
    assert event.ports[0].error is None
    assert any("unknown attribute 'colour'" in w for w in event.warnings)
    assert any("<vdp:qbg> unknown attribute 'shiny'" in w for w in event.warnings)


def test_newer_version_and_unknown_top_elements_warn() -> None:
    md = hooks_md(port(MAC_A), version="2").replace("</vdp:hooks>", "<vdp:future/></vdp:hooks>")
    event = _event(md)
    assert event.ports[0].error is None
    assert any("newer than this host understands" in w for w in event.warnings)
    assert any("unknown element" in w for w in event.warnings)


def test_unsafe_xml_is_refused() -> None:
    entity = b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
    event = parse_event(ARGV, entity + domain_xml(name="&x;").split(b"?>", 1)[-1])
    assert "root:" not in event.guest  # entities are never resolved
    with pytest.raises(XmlError, match="more than"):
        parse_event(ARGV, b" " * (MAX_XML_BYTES + 1))
    with pytest.raises(XmlError, match="not well-formed"):
        parse_event(ARGV, b"<domain><name>x</domain>")
    with pytest.raises(XmlError, match="does not hold a <domain>"):
        parse_event(ARGV, b"<network/>")


# ------------------------------------------------------------------------------------------ through the entry
def test_invalid_required_port_vetoes_with_one_line_naming_everything(hookenv: HookEnv) -> None:
    result = hookenv.run("prepare", "begin", domain_xml(metadata=hooks_md(port(MAC_C, required="yes"))))
    assert result.returncode == 1
    line = result.err.strip()
    for part in ("guest guest1", f"port {MAC_C}", "feature vdp", "no <interface> with this MAC", "required by port"):
        assert part in line, (part, line)
    assert hookenv.events() == [], "nothing is set up for a guest whose declaration is refused"


def test_invalid_port_that_is_not_required_is_skipped_with_a_warning(hookenv: HookEnv) -> None:
    md = hooks_md(port(MAC_A), port(MAC_C, required="no"))
    result = hookenv.run("prepare", "begin", domain_xml(metadata=md))
    assert result.returncode == 0
    assert hookenv.events("setup")[0]["keys"] == [MAC_A]
    assert "no <interface> with this MAC; port ignored" in hookenv.hook_log()


def test_duplicate_ports_veto_begin_and_never_fail_release(hookenv: HookEnv) -> None:
    xml = domain_xml(metadata=hooks_md(port(MAC_A), port(MAC_A)))
    result = hookenv.run("prepare", "begin", xml)
    assert result.returncode == 1 and "declared twice" in result.err
    assert hookenv.run("release", "end", xml).returncode == 0
    assert hookenv.run("reconnect", "begin", xml).returncode == 0


def test_unknown_attributes_are_logged_not_fatal(hookenv: HookEnv) -> None:
    result = hookenv.run("prepare", "begin", domain_xml(metadata=hooks_md(port(MAC_A, attrs="colour='blue'"))))
    assert result.returncode == 0
    assert "unknown attribute 'colour' ignored" in hookenv.hook_log()


@pytest.mark.parametrize(
    "metadata",
    [
        hooks_md(port("52:54:00:aa:00:02&#10;second line", required="yes")),
        hooks_md(port(MAC_A), features={"rec&#10;9": "yes"}),
        hooks_md(port(MAC_A, required="yes", vlan="1&#13;&#10;2")),
    ],
)
def test_a_veto_stays_on_one_line_whatever_the_xml_holds(hookenv: HookEnv, metadata: str) -> None:
    result = hookenv.run("prepare", "begin", domain_xml(metadata=metadata))  # the contract check: one line
    assert result.returncode == 1


def test_virsh_metadata_document_through_the_entry(hookenv: HookEnv) -> None:
    result = hookenv.run("prepare", "begin", (DATA / "virsh-metadata.xml").read_bytes(), name="moved-by-virsh")
    assert result.returncode == 0
    assert hookenv.events("setup")[0]["keys"] == [MAC_A]


# ------------------------------------------------------------------------------------------ odd XML (hypothesis)
_tag = st.sampled_from(["domain", "name", "uuid", "metadata", "devices", "interface", "mac", "x"])
_attr_value = st.text(st.characters(blacklist_categories=_NO_SURROGATES), max_size=12)


def _fragment(depth: int) -> st.SearchStrategy[str]:
    leaf = st.one_of(
        st.just(hooks_md(port(MAC_A))),
        st.builds(lambda v: port(MAC_A, vlan=v), _attr_value.map(lambda s: s.replace("'", ""))),
        st.builds(port, _attr_value.map(lambda s: s.replace("'", ""))),
        st.sampled_from(["<vdp:port/>", f"<v:port xmlns:v='{NS}' mac='{MAC_A}'/>", "&amp;", "<![CDATA[x]]>", ""]),
        # Character references survive attribute normalisation: newlines inside names and causes.
        st.sampled_from(["&#10;", "&#13;", "&#9;", "x&#10;y"]).map(
            lambda ref: port(f"52:54:00:aa:00:02{ref}", required="yes")
            + f"<vdp:feature name='f{ref}' required='yes'/>"
        ),
        st.text(max_size=20),
    )
    if depth == 0:
        return leaf
    return st.one_of(
        leaf,
        st.builds(lambda t, inner: f"<{t}>{inner}</{t}>", _tag, _fragment(depth - 1)),
        st.lists(_fragment(depth - 1), max_size=3).map("".join),
    )


_odd_xml = st.one_of(
    st.binary(max_size=200).map(lambda b: b + NS.encode()),
    st.builds(
        lambda md, uid, junk: domain_xml(metadata=f"<vdp:hooks xmlns:vdp='{NS}'>{md}</vdp:hooks>", guest_uuid=uid)
        + junk,
        _fragment(2),
        st.one_of(st.uuids().map(str), st.text(max_size=8).map(lambda s: s.replace("<", ""))),
        st.sampled_from([b"", b"<", b"garbage", b"\x00", b"<!-- -->"]),
    ),
    st.builds(lambda md: domain_xml(metadata=md), _fragment(2)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=_odd_xml, hook=st.sampled_from([("prepare", "begin"), ("migrate", "begin"), ("release", "end")]))
def test_odd_xml_in_process(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raw: bytes,
    hook: tuple[str, str],
) -> None:
    """The runner itself, fast: one stderr line on a veto, never a traceback; teardown never fails."""
    env = HookEnv(tmp_path_factory.mktemp("oddxml"))
    for key, value in env.env().items():
        monkeypatch.setenv(key, value)
    err = io.StringIO()
    code = run(["guest1", *hook, "-"], raw, stderr=err)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    if hook == ("release", "end"):
        assert code == 0 and err.getvalue() == ""
    else:
        assert code in (0, 1)
        lines = err.getvalue().splitlines()
        assert len(lines) == (1 if code else 0), err.getvalue()
        assert "Traceback" not in err.getvalue()
        assert "internal error" not in err.getvalue(), err.getvalue()


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=_odd_xml, hook=st.sampled_from([("prepare", "begin"), ("started", "begin"), ("reconnect", "begin")]))
def test_odd_xml_through_the_entry(tmp_path_factory: pytest.TempPathFactory, raw: bytes, hook: tuple[str, str]) -> None:
    env = HookEnv(tmp_path_factory.mktemp("oddxml"))
    result = env.run(*hook, raw, contract=False)
    check_contract(result)
    if hook == ("reconnect", "begin"):
        assert result.returncode == 0
    assert "internal error" not in result.err


@pytest.mark.parametrize(("required", "code"), [("yes", 1), ("no", 0)])
def test_unknown_element_in_a_port_is_an_error_only_when_required(hookenv: HookEnv, required: str, code: int) -> None:
    body = QBG + "<vdp:lag members='2'/>"
    xml = domain_xml(metadata=hooks_md(port(MAC_A, required=required, body=body), port(MAC_B)))
    result = hookenv.run("prepare", "begin", xml)
    assert result.returncode == code
    if code:
        assert f"<vdp:port mac='{MAC_A}'>: unknown element(s) <vdp:lag> (a newer" in result.err
    else:
        assert [e["keys"] for e in hookenv.events("setup")] == [[MAC_B], [MAC_B]]
        assert "unknown element(s)" in hookenv.hook_log()


# ------------------------------------------------------------------------------------------ interfaces libvirt manages
def test_network_interface_keeps_network_portgroup_and_a_typeless_virtualport() -> None:
    xml = """
    <interface type='network'>
      <mac address='52:54:00:aa:00:02'/>
      <source network='vepa-net' portgroup='alice'/>
      <virtualport>
        <parameters instanceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/>
      </virtualport>
      <model type='virtio'/>
    </interface>"""
    iface = _event("", interfaces=[xml]).interfaces[0]
    assert (iface.type, iface.network, iface.portgroup, iface.virtualport_type) == ("network", "vepa-net", "alice", "")
    assert not iface.libvirt_managed_profile  # the type comes from the network, looked up by the feature


_NATIVE = interface(MAC_A, type="direct", source="eno1", virtualport="<virtualport type='802.1Qbg'/>")


@pytest.mark.parametrize("order", ["plain first", "native first"])
def test_a_mac_shared_with_a_libvirt_managed_interface_is_refused_in_any_order(order: str) -> None:
    plain = interface(MAC_A)
    ifaces = [plain, _NATIVE] if order == "plain first" else [_NATIVE, plain]
    error = _one_port_error(hooks_md(port(MAC_A)), interfaces=ifaces)
    assert "<virtualport type='802.1Qbg'> that libvirt manages itself" in error


# ------------------------------------------------------------------------------------------ near-miss namespaces
@pytest.mark.parametrize(
    "uri",
    [NS + "/", NS.replace("http://", "https://"), "http://Libvirt-VDP-Hooks.org/xmlns", "HTTPS://LIBVIRT-VDP-HOOKS.ORG/XMLNS/"],
)
def test_a_near_miss_namespace_is_warned_about(uri: str) -> None:
    event = _event(hooks_md(port(MAC_A)).replace(NS, uri))
    assert not event.has_metadata and event.ports == ()
    (warning,) = event.warnings
    assert f"namespace '{uri}', which is not libvirt-vdp-hooks' '{NS}'" in warning
    assert f"virsh metadata guest1 {NS} --key vdp --config --edit" in warning


def test_a_foreign_namespace_is_no_near_miss() -> None:
    assert _event(hooks_md(port(MAC_A)).replace(NS, "http://example.org/libvirt-vdp-hooks")).warnings == ()


@pytest.mark.parametrize("hook", [("migrate", "begin"), ("prepare", "begin"), ("started", "begin"), ("release", "end")])
def test_a_near_miss_namespace_is_logged_on_every_event(hookenv: HookEnv, hook: tuple[str, str]) -> None:
    xml = domain_xml(metadata=hooks_md(port(MAC_A, required="yes")).replace(NS, NS + "/"))
    assert hookenv.run(*hook, xml).returncode == 0  # nothing of ours: the port is not ours to require
    assert f"namespace '{NS}/', which is not libvirt-vdp-hooks'" in hookenv.hook_log()


def test_a_near_miss_namespace_is_shown_by_replay_dry_run(hookenv: HookEnv, tmp_path: Path) -> None:
    saved = tmp_path / "guest.xml"
    saved.write_bytes(domain_xml(metadata=hooks_md(port(MAC_A)).replace(NS, NS.replace("http:", "https:"))))
    env = hookenv.env(PYTHONPATH=f"{REPO}{os.pathsep}{PLUGINS}")
    argv = [sys.executable, "-m", "hooks.cli", "replay", str(saved), "prepare", "begin", "--dry-run"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "warning: <metadata> holds <hooks> in namespace 'https://libvirt-vdp-hooks.org/xmlns'" in result.stdout


# ------------------------------------------------------------------------------------------ messages
def test_xml_errors_say_what_is_wrong_once_and_never_blame_the_metadata() -> None:
    cases = {
        b" " * (MAX_XML_BYTES + 1): "more than the 4194304 this hook reads",
        b"<domain><name>x</domain>": "Opening and ending tag mismatch: name line 1 and domain, line 1, column 25",
        b"<domain><name>\xff</name></domain>": "not valid UTF-8 (line 1, column 15)",
        # (the column of the depth error differs between libxml2 versions)
        b"<a>" * 300 + b"</a>" * 300: "elements nested more than 256 deep (line 1, column ",
    }
    for raw, needle in cases.items():
        with pytest.raises(XmlError) as info:
            parse_event(ARGV, raw)
        line = info.value.one_line()
        assert needle in line, line
        assert "<metadata>" not in line and "(<string>, line" not in line, line


def test_declaration_errors_say_how_to_fix_them() -> None:
    with pytest.raises(XmlError) as info:
        _event(hooks_md(port(MAC_A), port(MAC_A)))
    assert info.value.one_line().endswith(
        f"-- fix it with 'virsh metadata guest1 {NS} --key vdp --config --edit' or 'virsh edit guest1'"
    )


def test_unknown_elements_are_named_with_our_prefix() -> None:
    md = hooks_md(port(MAC_A, body=QBG + "<vdp:qbz/>"), port(MAC_B), prefix="hk").replace(
        "</hk:hooks>", "<hk:future/><x:other xmlns:x='http://example.org/x'/></hk:hooks>"
    )
    event = _event(md)
    assert "unknown element(s) <vdp:qbz> (a newer" in (event.ports[0].error or "")
    assert "<vdp:hooks>: unknown element <vdp:future> ignored" in event.warnings
    assert "<vdp:hooks>: unknown element <other xmlns='http://example.org/x'> ignored" in event.warnings


# ------------------------------------------------------------------------------------------ not ours: never vetoed
@pytest.mark.parametrize("vport", ["<virtualport type='openvswitch'/>", "<virtualport type='midonet'/>"])
def test_a_huge_guest_that_is_not_ours_is_never_vetoed(hookenv: HookEnv, vport: str) -> None:
    """5 MiB of <description>, over the size cap: an openvswitch/midonet guest never reaches our code, and one
    that does (a near-miss namespace sends it to the slow path, to be warned about) is not vetoed either."""
    big = domain_xml(interfaces=[interface(MAC_A, virtualport=vport)]).replace(
        b"<memory", b"<description>" + b"x" * (5 << 20) + b"</description><memory", 1
    )
    for hook in [("migrate", "begin"), ("prepare", "begin"), ("release", "end")]:
        assert hookenv.run(*hook, big).returncode == 0
    assert hookenv.hook_log() == "", "the fast path: nothing ran"
    # The near-miss metadata ahead of the description: the entry reads only the size cap + 1 byte.
    near = big.replace(b"<description>", f"<metadata><v:hooks xmlns:v='{NS}/'/></metadata><description>".encode(), 1)
    assert hookenv.run("prepare", "begin", near).returncode == 0
    assert "more than the 4194304 this hook reads" in hookenv.hook_log()
    assert "ignored: nothing in this guest is for libvirt-vdp-hooks" in hookenv.hook_log()


def test_replay_dry_run_shows_libvirt_managed_ports_and_ignores_xml_errors_of_guests_not_ours(
    hookenv: HookEnv, tmp_path: Path
) -> None:
    hookenv.write_config(features="vdp", vdp_required=None)
    env = hookenv.env(PYTHONPATH=f"{REPO}{os.pathsep}{PLUGINS}")

    def dry_run(xml: bytes, op: str = "migrate") -> subprocess.CompletedProcess[str]:
        saved = tmp_path / "guest.xml"
        saved.write_bytes(xml)
        argv = [sys.executable, "-m", "hooks.cli", "replay", str(saved), op, "begin", "--dry-run"]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)

    native = dry_run(domain_xml(interfaces=[_NATIVE]))
    assert native.returncode == 0 and f"port {MAC_A}: managed by libvirt; vdp preflights it" in native.stdout
    big = b"<description>" + b"x" * (5 << 20) + b"</description><memory"
    ovs = domain_xml(interfaces=[interface(MAC_A, virtualport="<virtualport type='openvswitch'/>")])
    result = dry_run(ovs.replace(b"<memory", big, 1))
    assert result.returncode == 0 and "would proceed:" in result.stdout, result.stdout
    result = dry_run(domain_xml(interfaces=[_NATIVE]).replace(b"<memory", big, 1))
    assert result.returncode == 1 and "would veto:" in result.stdout
