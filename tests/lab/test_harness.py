"""The lab harness itself: real lldpad station and bridge negotiate EVB, a VSI goes through, nothing is left.

Checked with independent tools (lldptool, vdptool, ``ip netns list``, /proc), not with the harness's own
bookkeeping alone.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.lab.harness.lldpad import Lldpad, lldpad_config, parse_vsi_table
from tests.lab.harness.netns import Netns, unique_suffix
from tests.lab.harness.vdplab import VdpLab

pytestmark = pytest.mark.lab


def _netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children() -> set[int]:
    """Pids whose parent is this test process (every lab process is started as our child)."""
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        kids.add(int(entry))
            except OSError:
                continue
    return kids


def test_evb_negotiates(vdp_lab: VdpLab) -> None:
    lldpad = vdp_lab.lldpad()
    # The fixture already waited; check again with lldptool, both sides of the TLV.
    assert "mode:station" in lldpad.evb("up0")
    assert "mode:bridge" in lldpad.evb("up0", neighbour=True)


def test_vdptool_assoc_through_real_bridge(vdp_lab: VdpLab) -> None:
    lldpad = vdp_lab.lldpad()
    vsi = str(uuid.uuid4())
    res = lldpad.vdp_assoc("up0", uuid=vsi, mac="52:54:00:12:34:56", vlan=0)
    assert res.returncode == 0, res.stderr
    assert "Response from VDP" in res.stdout
    table = lldpad.vsi_table("up0")
    assert [v["uuid"] for v in table] == [vsi]
    assert table[0]["mode"] == "assoc"
    assert table[0]["filter"].endswith("52:54:00:12:34:56")
    res = lldpad.vdp_assoc("up0", mode="deassoc", uuid=vsi, mac="52:54:00:12:34:56", vlan=0)
    assert "Response from VDP" in res.stdout
    lldpad.wait_for(lambda: lldpad.vsi_table("up0") == [], 5, "VSI removed")


def test_run_in_host_sees_host_lldpad_only(vdp_lab: VdpLab) -> None:
    lldpad = vdp_lab.lldpad()
    res = vdp_lab.run_in_host(None, ["cat", "/run/lldpad.pid"], check=True)
    assert int(res.stdout.split()[0]) == lldpad.pid
    res = vdp_lab.run_in_host(None, ["/usr/bin/python3", "-c", "import sys; sys.stdout.write(sys.stdin.read())"],
                              input=b"xyz", env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    assert res.stdout == b"xyz"
    # The host's own /run (if it runs an lldpad) is not what the lab host sees.
    host_pidfile = Path("/run/lldpad.pid")
    if host_pidfile.exists():
        assert host_pidfile.read_text().split()[0] != str(lldpad.pid)


def test_stop_and_start_lldpad(vdp_lab: VdpLab) -> None:
    old = vdp_lab.lldpad().pid
    vdp_lab.stop_lldpad()
    assert old is not None and not _running(old)
    res = vdp_lab.run_in_host(None, ["/usr/sbin/lldptool", "-p"])
    assert res.returncode != 0
    vdp_lab.start_lldpad(wait_evb=True)
    assert vdp_lab.lldpad().pid != old
    assert vdp_lab.lldpad().evb_negotiated("up0")
    # Once EVB settled again, a new VSI sticks (it would be dropped at once during negotiation).
    vsi = str(uuid.uuid4())
    assert "Response from VDP" in vdp_lab.lldpad().vdp_assoc("up0", uuid=vsi).stdout
    assert [v["uuid"] for v in vdp_lab.lldpad().vsi_table("up0")] == [vsi]


def test_link_down_up(vdp_lab: VdpLab) -> None:
    vdp_lab.set_link(None, "up0", False)
    out = vdp_lab.host().netns.run(["ip", "-o", "link", "show", "up0"]).stdout
    assert "state DOWN" in out or "DOWN" in out.split(">")[0] or ",UP" not in out
    vdp_lab.set_link(None, "up0", True)
    vdp_lab.lldpad().wait_evb("up0")


def test_two_hosts_one_switch_and_teardown(lab_workdir: Path) -> None:
    before = _netns_list()
    with VdpLab(lab_workdir, hosts={"a": ["up0", "up1"], "b": ["eth7"]}) as lab:
        names = lab.netns_names()
        pids = lab.all_pids()
        assert set(names) <= _netns_list()
        assert all(_running(p) for p in pids)
        assert lab.switch_ifnames() == {("a", "up0"): "s0p0", ("a", "up1"): "s0p1", ("b", "eth7"): "s1p0"}
        for host, uplink in lab.switch_ifnames():
            assert lab.lldpad(host).evb_negotiated(uplink)
        res = lab.lldpad("b").vdp_assoc("eth7", uuid=str(uuid.uuid4()))
        assert "Response from VDP" in res.stdout
        assert lab.lldpad("a").pid != lab.lldpad("b").pid
    assert not (set(names) & _netns_list())
    assert _netns_list() - before <= _netns_list()  # others' labs may come and go meanwhile
    assert not [p for p in pids if _running(p)]


def test_teardown_after_failure(lab_workdir: Path) -> None:
    labs: list[VdpLab] = []
    with pytest.raises(RuntimeError, match="boom"), VdpLab(lab_workdir) as lab:
        labs.append(lab)
        names, pids = lab.netns_names(), lab.all_pids()
        raise RuntimeError("boom")
    assert labs and names and pids
    assert not (set(names) & _netns_list())
    assert not [p for p in pids if _running(p)]


def test_failed_setup_cleans_up(lab_workdir: Path) -> None:
    children_before = _children()
    suffix = unique_suffix()
    ours = {f"vs{suffix}", f"vh{suffix}0", f"vh{suffix}1"}
    # An interface name longer than 15 characters makes `ip link add` fail half-way through set-up,
    # after the first host's namespace, holder and lldpad exist.
    with pytest.raises(subprocess.CalledProcessError):
        VdpLab(lab_workdir, hosts={"a": ["up0"], "b": ["much-too-long-ifname"]}, suffix=suffix)
    assert not (ours & _netns_list())
    assert _children() == children_before
    holder_log = lab_workdir / "host-a" / "holder.log"
    assert holder_log.exists()  # the first host really was built before the failure


def test_switch_none_leaves_ports_to_a_peer(lab_workdir: Path) -> None:
    with VdpLab(lab_workdir, switch="none", wait_evb=False) as lab:
        assert lab.switch_lldpad is None
        port = lab.switch_ifname(None, "up0")
        assert lab.switch is not None
        assert lab.switch.run(["ip", "link", "show", port]).returncode == 0
        # No bridge answers: EVB never negotiates, VDP is configured but stays unanswered.
        assert not lab.lldpad().evb_negotiated("up0")
        res = lab.lldpad().vdp_assoc("up0", uuid=str(uuid.uuid4()), wait=False)
        assert "Response from VDP" not in res.stdout


def test_evb_off_interface(lab_workdir: Path) -> None:
    with VdpLab(lab_workdir, station_role="evb-off", wait_evb=False) as lab:
        assert "enableTx=no" in lab.lldpad().lldptool("-t", "-i", "up0", "-g", "ncb", "-V", "evb", "-c").stdout
        assert not lab.lldpad().evb_negotiated("up0")


def test_draft_role_config(lab_workdir: Path) -> None:
    with Netns(f"vx{unique_suffix()}") as ns:
        ns.run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        ns.run(["ip", "link", "set", "v0", "up"])
        ns.run(["ip", "link", "set", "v1", "up"])
        with Lldpad(ns, lab_workdir, {"v0": "draft"}) as lldpad:
            for tlv in ("vdp", "evbCfg"):
                res = lldpad.lldptool("-t", "-i", "v0", "-g", "ncb", "-V", tlv, "-c", "enableTx")
                assert "enableTx=yes" in res.stdout
            lldpad.wait_for(
                lambda: "draft 0.2" in lldpad.lldptool("-t", "-i", "v0", "-g", "ncb", "-V", "evbCfg").stdout,
                5,
                "draft EVB TLV built",
            )
            # Not a VDP22 interface.
            assert lldpad.vdptool("-i", "v0", "-t", "-V", "assoc").returncode != 0


def test_standalone_lldpad_without_pidfile(lab_workdir: Path) -> None:
    with Netns(f"vx{unique_suffix()}") as ns:
        ns.run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        with Lldpad(ns, lab_workdir, {"v0": "station"}, pidfile=False, debug=True) as lldpad:
            assert lldpad.ping()
            assert lldpad.run(["ls", "/run"]).stdout.split().count("lldpad.pid") == 0
            pid = lldpad.pid
        assert pid is not None and not _running(pid)


def test_config_and_table_parsers() -> None:
    conf = lldpad_config({"up0": "station", "s0p0": "bridge"})
    assert 'up0 : {' in conf and 'evbmode = "station"' in conf and 'evbmode = "bridge"' in conf
    with pytest.raises(ValueError):
        lldpad_config({"x": "router"})
    text = "VSI  0:\n\tmode = assoc\n\tuuid = u1\n\tfilter = 0-52:54:00:11:22:33\nVSI  1:\n\tmode = preassoc\n"
    assert parse_vsi_table(text) == [
        {"mode": "assoc", "uuid": "u1", "filter": "0-52:54:00:11:22:33"},
        {"mode": "preassoc"},
    ]
    assert os.path.basename(__file__) == "test_harness.py"
