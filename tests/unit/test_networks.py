"""Network-backed port profiles: libvirt network definitions read from disk, virtualports merged the way
libvirt merges them, and the preflight of what results, exec'ing the entry as libvirt does.

The network XML is shaped like libvirt's own corpus (tests/networkxml2xmlin: vepa-net, 8021Qbh-net,
host-bridge-net, openvswitch-net) and its status files (``<networkstatus>`` around the ``<network>``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from hooks.event import parse_event
from tests.unit.conftest import ENTRY, MAC_A, HookEnv, domain_xml
from vdp import networks
from vdp.networks import VirtualPort, merge3

QBG_NET = "<virtualport type='802.1Qbg'><parameters managerid='11' typeid='1193047' typeidversion='2'/></virtualport>"
OVS_NET = "<virtualport type='openvswitch'/>"


def _entry() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("vdp_hooks_entry_nets", str(ENTRY))
    spec = importlib.util.spec_from_loader("vdp_hooks_entry_nets", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def network_xml(
    name: str,
    *,
    forward: str = "<forward mode='vepa'><interface dev='eth1'/><interface dev='eth2'/></forward>",
    virtualport: str = QBG_NET,
    portgroups: str = "",
) -> str:
    return textwrap.dedent(
        f"""\
        <network>
          <name>{name}</name>
          <uuid>81ff0d90-c91e-6742-64da-4a736edb9a8b</uuid>
          {forward}
          {virtualport}
          {portgroups}
        </network>
        """
    )


def status_xml(network: str) -> str:
    """What libvirt writes to /run/libvirt/network/NAME.xml for an active network."""
    return f"<networkstatus>\n  <class_id bitmap='0-2'/>\n  <floor sum='0'/>\n{network}</networkstatus>\n"


def net_interface(mac: str, network: str, *, portgroup: str | None = None, virtualport: str = "") -> str:
    group = f" portgroup='{portgroup}'" if portgroup else ""
    return f"""
    <interface type='network'>
      <mac address='{mac}'/>
      <source network='{network}'{group}/>
      {virtualport}
      <model type='virtio'/>
    </interface>"""


class Dirs:
    """A host's network directories: status (active) and persistent definitions."""

    def __init__(self, root: Path) -> None:
        self.run = root / "run-network"
        self.etc = root / "etc-networks"
        self.run.mkdir()
        self.etc.mkdir()

    @property
    def dirs(self) -> tuple[str, ...]:
        return (str(self.run), str(self.etc))

    @property
    def env(self) -> str:
        return ":".join(self.dirs)

    def active(self, name: str, xml: str) -> None:
        (self.run / f"{name}.xml").write_text(status_xml(xml))

    def persistent(self, name: str, xml: str) -> None:
        (self.etc / f"{name}.xml").write_text(xml)


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return Dirs(tmp_path)


def _iface(xml: str):  # type: ignore[no-untyped-def]
    return parse_event(["g", "migrate", "begin", "-"], domain_xml(interfaces=[xml])).interfaces[0]


# ------------------------------------------------------------------------------------------ merge (libvirt's rules)
def _vp(vtype: str = "", **params: str) -> VirtualPort:
    return VirtualPort(vtype, params)


def test_merge_takes_each_attribute_where_it_is_first_set() -> None:
    merged = merge3(
        _vp(instanceid="09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"),  # the interface: no type, its own VSI
        _vp("802.1Qbg", managerid="11", typeid="1193047"),
        _vp("802.1Qbg", typeidversion="2"),
    )
    assert merged is not None and merged.type == "802.1Qbg"
    assert dict(merged.params) == {
        "instanceid": "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f",
        "managerid": "11",
        "typeid": "1193047",
        "typeidversion": "2",
    }


def test_merge_compares_numbers_and_uuids_as_libvirt_parses_them() -> None:
    merged = merge3(_vp("802.1Qbg", managerid="11"), _vp("802.1Qbg", managerid="0xb"), None)
    assert merged is not None and merged.params["managerid"] == "11"
    same = merge3(
        _vp(instanceid="09B11C53-8B5C-4EEB-8F00-D84EAA0AAA4F"),
        _vp("802.1Qbg", instanceid="09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"),
        None,
    )
    assert same is not None


@pytest.mark.parametrize(
    ("interface", "network", "portgroup", "needle"),
    [
        # libvirt's vepa-net.xml: the network says managerid 11, its default portgroup 'bob' says 12.
        (
            None,
            _vp("802.1Qbg", managerid="11"),
            _vp("802.1Qbg", managerid="12"),
            "managerid='11' (network) and '12' (portgroup)",
        ),
        (_vp("802.1Qbh"), _vp("802.1Qbg"), None, "type '802.1Qbh' (interface) and '802.1Qbg' (network) disagree"),
        (None, _vp("802.1Qbh", profileid="a"), _vp(profileid="b"), "profileid='a' (network) and 'b' (portgroup)"),
    ],
)
def test_merge_disagreement_is_an_error(
    interface: VirtualPort | None, network: VirtualPort | None, portgroup: VirtualPort | None, needle: str
) -> None:
    with pytest.raises(ValueError, match="disagree") as info:
        merge3(interface, network, portgroup)
    assert needle in str(info.value)


def test_merge_drops_what_does_not_belong_to_the_type_and_ignores_typeless_profiles() -> None:
    merged = merge3(_vp(profileid="finance"), _vp("802.1Qbg", managerid="1", typeid="2", typeidversion="3"), None)
    assert merged is not None and "profileid" not in merged.params
    assert merge3(_vp(instanceid="09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"), None, None) is None
    assert merge3(None, None, None) is None


# ------------------------------------------------------------------------------------------ resolving a network
def test_active_status_file_wins_over_the_persistent_definition(dirs: Dirs) -> None:
    dirs.persistent("fabric", network_xml("fabric", virtualport=OVS_NET))  # edited, not restarted yet
    dirs.active("fabric", network_xml("fabric"))
    port = networks.resolve(_iface(net_interface(MAC_A, "fabric")), dirs.dirs)
    assert port is not None
    assert (port.network, port.proto, port.mode, port.uplinks) == ("fabric", "qbg", "vepa", ("eth1", "eth2"))
    assert port.path == str(dirs.run / "fabric.xml")


def test_persistent_definition_when_the_network_is_not_active(dirs: Dirs) -> None:
    dirs.persistent("fabric", network_xml("fabric", forward="<forward mode='vepa' dev='eth7'/>"))
    port = networks.resolve(_iface(net_interface(MAC_A, "fabric")), dirs.dirs)
    assert port is not None and port.uplinks == ("eth7",) and port.path == str(dirs.etc / "fabric.xml")


def test_portgroup_named_by_the_interface_else_the_default_one(dirs: Dirs) -> None:
    groups = (
        "<portgroup name='engineering' default='yes'><virtualport type='802.1Qbh'>"
        "<parameters profileid='eng-10'/></virtualport></portgroup>"
        "<portgroup name='finance'><virtualport type='802.1Qbh'><parameters profileid='fin-20'/></virtualport>"
        "</portgroup>"
    )
    forward = "<forward mode='private' dev='eth1'><interface dev='eth1'/><interface dev='eth2'/></forward>"
    dirs.active("qbh-net", network_xml("qbh-net", forward=forward, virtualport="", portgroups=groups))
    named = networks.resolve(_iface(net_interface(MAC_A, "qbh-net", portgroup="finance")), dirs.dirs)
    default = networks.resolve(_iface(net_interface(MAC_A, "qbh-net")), dirs.dirs)
    assert named is not None and default is not None
    assert (named.portgroup, named.proto, named.virtualport.params["profileid"]) == ("finance", "qbh", "fin-20")
    assert (default.portgroup, default.virtualport.params["profileid"]) == ("engineering", "eng-10")
    assert named.describe() == "network 'qbh-net' portgroup 'finance'"


def test_interface_virtualport_merges_with_the_network(dirs: Dirs) -> None:
    dirs.active("fabric", network_xml("fabric"))
    mine = "<virtualport><parameters instanceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/></virtualport>"
    port = networks.resolve(_iface(net_interface(MAC_A, "fabric", virtualport=mine)), dirs.dirs)
    assert port is not None and port.virtualport.params["instanceid"] == "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"


@pytest.mark.parametrize(
    ("forward", "virtualport"),
    [
        ("<forward mode='bridge'/><bridge name='br0'/>", ""),  # libvirt's host-bridge-net: no profile
        ("<forward mode='bridge'/><bridge name='ovsbr0'/>", OVS_NET),  # openvswitch-net
        ("<forward mode='nat'/>", ""),
        ("<forward mode='vepa'><interface dev='eth1'/></forward>", "<virtualport type='midonet'/>"),
    ],
)
def test_networks_without_our_port_profiles_are_not_ours(dirs: Dirs, forward: str, virtualport: str) -> None:
    dirs.active("other", network_xml("other", forward=forward, virtualport=virtualport))
    assert networks.resolve(_iface(net_interface(MAC_A, "other")), dirs.dirs) is None


def test_unusable_definitions_are_errors(dirs: Dirs) -> None:
    assert networks.resolve(_iface(net_interface(MAC_A, "nowhere")), dirs.dirs) is None  # libvirt says so
    (dirs.run / "broken.xml").write_text("<networkstatus><network>")
    with pytest.raises(networks.PeerUnavailable, match=r"network definition .*broken\.xml is not well-formed"):
        networks.resolve(_iface(net_interface(MAC_A, "broken")), dirs.dirs)
    incomplete = "<virtualport type='802.1Qbg'><parameters managerid='11'/></virtualport>"
    dirs.active("half", network_xml("half", virtualport=incomplete))
    with pytest.raises(ValueError, match="lacks typeid, typeidversion"):
        networks.resolve(_iface(net_interface(MAC_A, "half")), dirs.dirs)


# ------------------------------------------------------------------------------------------ the cheap test
def test_cheap_test_reads_only_the_guests_networks_and_agrees_with_the_entry(dirs: Dirs) -> None:
    entry = _entry()
    dirs.active("fabric", network_xml("fabric"))
    dirs.active("plain", network_xml("plain", forward="<forward mode='nat'/>", virtualport=""))
    dirs.persistent("qbh-off", network_xml("qbh-off", virtualport="<virtualport type='802.1Qbh'/>"))
    env = {"VDP_HOOKS_NETWORK_DIRS": dirs.env}
    cases = {
        domain_xml(interfaces=[net_interface(MAC_A, "fabric")]): True,
        domain_xml(interfaces=[net_interface(MAC_A, "plain")]): False,
        domain_xml(interfaces=[net_interface(MAC_A, "qbh-off")]): True,  # defined, not active
        domain_xml(interfaces=[net_interface(MAC_A, "undefined")]): False,
        domain_xml(interfaces=[net_interface(MAC_A, "plain"), net_interface(MAC_A, "fabric")]): True,
        domain_xml(interfaces=[net_interface(MAC_A, "../fabric")]): False,
        domain_xml(): False,
        domain_xml(interfaces=[net_interface(MAC_A, "fabric").replace("'", '"')]): True,
    }
    for raw, expected in cases.items():
        assert networks.has_port_profile_network(raw, dirs.dirs) is expected, raw
        assert entry._network_has_port_profile(raw, env) is expected, raw
    assert networks.network_dirs({}) == (networks.STATUS_DIR, networks.CONFIG_DIR) == entry._NETWORK_DIRS
    assert networks.network_dirs(env) == dirs.dirs


# ------------------------------------------------------------------------------------------ through the entry
def _vdp_env(hookenv: HookEnv, dirs: Dirs) -> dict[str, str]:
    hookenv.write_config(features="vdp", vdp_required=None)
    return hookenv.env(VDP_HOOKS_NETWORK_DIRS=dirs.env)


def test_migrate_begin_vetoes_a_network_port_naming_network_portgroup_and_uplink(hookenv: HookEnv, dirs: Dirs) -> None:
    groups = "<portgroup name='finance'><virtualport><parameters typeidversion='2'/></virtualport></portgroup>"
    vport = "<virtualport type='802.1Qbg'><parameters managerid='11' typeid='1193047'/></virtualport>"
    forward = "<forward mode='vepa'><interface dev='vhnosuch7'/></forward>"
    dirs.active("vdpnet", network_xml("vdpnet", forward=forward, virtualport=vport, portgroups=groups))
    xml = domain_xml(interfaces=[net_interface(MAC_A, "vdpnet", portgroup="finance")])
    result = hookenv.run("migrate", "begin", xml, env=_vdp_env(hookenv, dirs))
    assert result.returncode == 1
    line = result.err.strip()
    for part in (
        f"port {MAC_A}: feature vdp:",
        "<interface type='network'> on network 'vdpnet' portgroup 'finance' (qbg, forward mode vepa), "
        "uplink vhnosuch7:",
        "interface vhnosuch7 does not exist on this host",
    ):
        assert part in line, (part, line)
    # The same guest on a host whose network carries no port profile: nothing for us, the fast path.
    dirs.active("vdpnet", network_xml("vdpnet", forward=forward, virtualport="", portgroups=""))
    logged = hookenv.hook_log()
    assert hookenv.run("migrate", "begin", xml, env=_vdp_env(hookenv, dirs)).returncode == 0
    assert hookenv.hook_log() == logged, "the fast path logs nothing"


def test_every_forward_device_is_checked(hookenv: HookEnv, dirs: Dirs) -> None:
    """libvirt picks the least-used device, whatever its link state: any of them may carry the port."""
    forward = "<forward mode='vepa'><interface dev='lo'/><interface dev='vhnosuch8'/></forward>"
    dirs.active(
        "pool",
        network_xml(
            "pool",
            forward=forward,
            virtualport="<virtualport type='802.1Qbh'><parameters profileid='p1'/></virtualport>",
        ),
    )
    result = hookenv.run(
        "restore", "begin", domain_xml(interfaces=[net_interface(MAC_A, "pool")]), env=_vdp_env(hookenv, dirs)
    )
    assert result.returncode == 1
    # lo exists and is up, but its driver cannot do port profiles (the kernel answers EOPNOTSUPP).
    assert "network 'pool' (no portgroup) (qbh, forward mode vepa), uplink lo: lo cannot do 802.1Qbh" in result.err


def test_a_network_that_libvirt_would_refuse_is_named(hookenv: HookEnv, dirs: Dirs) -> None:
    groups = (
        "<portgroup name='bob' default='yes'><virtualport type='802.1Qbg'>"
        "<parameters managerid='12'/></virtualport></portgroup>"
    )
    dirs.active("vepa-net", network_xml("vepa-net", portgroups=groups))
    result = hookenv.run(
        "migrate", "begin", domain_xml(interfaces=[net_interface(MAC_A, "vepa-net")]), env=_vdp_env(hookenv, dirs)
    )
    assert result.returncode == 1
    assert "on network 'vepa-net': virtualport managerid='11' (network) and '12' (portgroup) disagree" in result.err


def test_prepare_begin_leaves_network_ports_to_libvirt(hookenv: HookEnv, dirs: Dirs) -> None:
    dirs.active("vdpnet", network_xml("vdpnet", forward="<forward mode='vepa'><interface dev='vhnosuch7'/></forward>"))
    result = hookenv.run(
        "prepare", "begin", domain_xml(interfaces=[net_interface(MAC_A, "vdpnet")]), env=_vdp_env(hookenv, dirs)
    )
    assert result.returncode == 0  # preflight only: libvirt associates these ports itself


def test_a_hostdev_network_checks_each_vf_of_its_pool(hookenv: HookEnv, dirs: Dirs) -> None:
    """libvirt's hostdev.xml shape: VFs by PCI address, 802.1Qbh on the network (Cisco VM-FEX)."""
    forward = (
        "<forward mode='hostdev' managed='yes'><driver name='vfio'/>"
        "<address type='pci' domain='0x00fe' bus='0x03' slot='0x10' function='0x1'/></forward>"
    )
    vport = "<virtualport type='802.1Qbh'><parameters profileid='pp-vlan-25'/></virtualport>"
    dirs.active("vmfex", network_xml("vmfex", forward=forward, virtualport=vport))
    port = networks.resolve(_iface(net_interface(MAC_A, "vmfex")), dirs.dirs)
    assert port is not None and (port.mode, port.uplinks, port.pci) == ("hostdev", (), ("00fe:03:10.1",))
    xml = domain_xml(interfaces=[net_interface(MAC_A, "vmfex")])
    result = hookenv.run("migrate", "begin", xml, env=_vdp_env(hookenv, dirs))
    assert result.returncode == 1
    assert (
        "<interface type='network'> on network 'vmfex' (no portgroup) (qbh, forward mode hostdev), VF 00fe:03:10.1: "
        "PCI device 00fe:03:10.1 does not exist on this host" in result.err
    ), result.err
