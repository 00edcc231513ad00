"""Network-backed 802.1Qbg ports, end to end: real libvirtd 9.0 on hosts A and B, each with a libvirt network
``vdpnet`` (forward mode vepa over the host's uplink) defined and started through ``virsh``, a guest whose
only NIC is ``<interface type='network'><source network='vdpnet' portgroup='finance'/>``, and this product as
the hook.  The domain XML never shows the port profile: the hook reads it from the network's status file
that libvirtd wrote under its /run/libvirt/network.

B's network carries the 802.1Qbg virtualport (managerid/typeid/typeidversion on the network, the instance on
the portgroup, merged as libvirt merges them).  A's network carries none, on purpose: libvirt's own 802.1Qbg
cannot run on this lab's veth uplinks (LAB.md: it follows IFLA_LINK into the switch's namespace, and needs
lldpad's pid file in its own /run), so on A the guest runs as a plain vepa macvtap.  What is proven here is
the destination's preflight at ``migrate begin``: it passes against B's real lldpad when the network's
uplink runs EVB, and it vetoes the migration, naming network, portgroup and uplink, when it does not; the
source guest keeps running and B keeps nothing.
"""

from __future__ import annotations

import os
import time
import uuid as uuidlib
from collections.abc import Iterator

import pytest

from tests.lab.harness.e2e import E2EHost, E2ELab, Guest
from tests.lab.harness.libvirt import LIBVIRTD, Nic, guest_xml

pytestmark = [
    pytest.mark.lab,
    pytest.mark.libvirt,
    pytest.mark.skipif(not os.access(LIBVIRTD, os.X_OK), reason="apt-get install libvirt-daemon-driver-qemu"),
]

NETWORK = "vdpnet"
PORTGROUP = "finance"
INSTANCE = "5d00e0ba-e15c-959c-fbb6-b595b0655735"
NO_EVB = "nevb0"  # an interface on B whose switch port runs no EVB (lldpad has no VDP there)


def network_xml(uplink: str, *, port_profile: bool) -> str:
    vport = group = ""
    if port_profile:
        vport = (
            "  <virtualport type='802.1Qbg'>\n"
            "    <parameters managerid='11' typeid='1193047' typeidversion='2'/>\n"
            "  </virtualport>\n"
        )
        group = f"<virtualport><parameters instanceid='{INSTANCE}'/></virtualport>"
    return (
        f"<network>\n  <name>{NETWORK}</name>\n"
        f"  <forward mode='vepa'>\n    <interface dev='{uplink}'/>\n  </forward>\n"
        f"{vport}  <portgroup name='{PORTGROUP}'>{group}</portgroup>\n</network>\n"
    )


def define_network(lab: E2ELab, host: E2EHost, xml: str) -> None:
    """(Re)define and start ``vdpnet`` on ``host`` through virsh, as an admin would."""
    host.virsh("net-destroy", NETWORK, check=False)
    host.virsh("net-undefine", NETWORK, check=False)
    path = lab.workdir / f"{NETWORK}-{host.key}.xml"
    path.write_text(xml)
    host.virsh("net-define", str(path))
    host.virsh("net-start", NETWORK)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ELab]:
    with E2ELab(tmp_path_factory.mktemp("e2e-net")) as the_lab:
        b = the_lab.vdp.host("b").netns
        b.run(["ip", "link", "add", NO_EVB, "type", "veth", "peer", "name", "nevb1"])
        the_lab.b.libvirt.extra_links.append(NO_EVB)  # deleted when B closes
        b.run(["ip", "link", "set", NO_EVB, "up"])
        b.run(["ip", "link", "set", "nevb1", "up"])
        define_network(the_lab, the_lab.a, network_xml(the_lab.a.uplink, port_profile=False))
        define_network(the_lab, the_lab.b, network_xml(the_lab.b.uplink, port_profile=True))
        yield the_lab


@pytest.fixture
def guest(lab: E2ELab) -> Iterator[Guest]:
    """A guest on A whose only NIC is on ``vdpnet`` / ``finance``, and no metadata of ours."""
    gid = str(uuidlib.uuid4())
    mac = f"52:54:00:{gid[:2]}:{gid[2:4]}:02"
    g = Guest(f"gnet{gid[:4]}", gid, [mac], [])
    xml = guest_xml(g.name, g.uuid, [Nic(mac, kind="network", network=NETWORK, portgroup=PORTGROUP)])
    mark = lab.a.log_mark()
    r, _ = lab.a.create(g, xml=xml)
    assert r.returncode == 0, r.stderr
    # A's network carries no port profile: the hook's fast path (one file read), not a line logged.
    assert [ln for ln in lab.a.hook_lines(mark) if ln.fields.get("uuid") == gid] == []
    yield g
    for host in lab.hosts.values():
        host.destroy(g.name)


def _migratable(lab: E2ELab, g: Guest) -> str:
    return lab.a.virsh("dumpxml", "--migratable", g.name).stdout


def test_b_preflights_the_network_port_and_passes(lab: E2ELab, guest: Guest) -> None:
    xml = _migratable(lab, guest)
    assert "virtualport" not in xml, "the domain XML does not show the network's port profile"
    mark = lab.b.log_mark()
    rc, err, seconds = lab.b.exec_hook(guest, "migrate", "begin", xml=xml)
    assert (rc, err) == (0, "")
    lines = [ln for ln in lab.b.hook_lines(mark) if ln.fields.get("uuid") == guest.uuid]
    passed = [ln.message for ln in lines if ln.fields.get("feature") == "vdp" and ln.fields.get("outcome") == "ok"]
    assert (
        f"preflight of <interface type='network'> on network '{NETWORK}' portgroup '{PORTGROUP}' "
        f"(qbg, forward mode vepa) on {lab.b.uplink} passed" in passed
    ), [ln.text for ln in lines]
    print(f"\nmigrate begin on B with a network-backed Qbg port: {seconds * 1000:.0f} ms exec to exit")


@pytest.mark.parametrize("how", ["no EVB on the uplink", "uplink down"])
def test_migration_to_b_is_vetoed_naming_network_portgroup_and_uplink(lab: E2ELab, guest: Guest, how: str) -> None:
    b = lab.vdp.host("b").netns
    define_network(lab, lab.b, network_xml(NO_EVB, port_profile=True))
    if how == "uplink down":
        b.run(["ip", "link", "set", NO_EVB, "down"])
    try:
        since = time.time()
        r, seconds = lab.migrate(lab.a, lab.b, guest.name)
        assert r.returncode != 0, "the migration must be refused"
        reason = r.stderr.strip()
        for part in (
            "libvirt-vdp-hooks: guest " + guest.name,
            f"feature vdp: <interface type='network'> on network '{NETWORK}' portgroup '{PORTGROUP}' "
            f"(qbg, forward mode vepa), uplink {NO_EVB}:",
            "administratively down" if how == "uplink down" else NO_EVB,
        ):
            assert part in reason, (part, reason)
        assert "migrate begin" in reason  # refused at the first hook, before anything was sent
        # The source guest never noticed; B kept nothing; the switch heard nothing.
        assert lab.a.domstate(guest.name).startswith("running")
        assert guest.name not in lab.b.domains()
        assert lab.switch_requests(since=since) == []
        print(f"\nmigration vetoed at B ({how}) in {seconds:.2f} s: {reason[reason.find('libvirt-vdp-hooks:') :]}")
    finally:
        b.run(["ip", "link", "set", NO_EVB, "up"])
        define_network(lab, lab.b, network_xml(lab.b.uplink, port_profile=True))
