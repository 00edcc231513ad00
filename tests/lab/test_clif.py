"""vdp.qbg.clif against real lldpad (station) and, where a switch is needed, lldpad's bridge role.

The client code runs inside the lab host's network and mount namespaces (``VdpLab.run_in_host``) with the
interpreter running the tests, so both Pythons exercise it.  Results are cross-checked with independent
tools: lldptool/vdptool output, frames captured on the switch side with tcpdump, /proc/self/fd.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness.lldpad import Lldpad
from tests.lab.harness.netns import Netns, unique_suffix
from tests.lab.harness.vdplab import VdpLab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "PYTHONPATH": str(ROOT)}

PRELUDE = """
import json, os, sys, time, uuid
from vdp.wire import clif
from vdp.qbg import clif as qclif
from hooks.errors import HookError
def out(**kw):
    sys.stdout.write("RESULT " + json.dumps(kw) + "\\n")
def err(exc):
    return {"type": type(exc).__name__, "text": str(exc)}
"""


def _run(argv_prefix: list[str], code: str, *, timeout: float = 60) -> tuple[dict[str, Any], bytes, bytes]:
    """Run ``code`` (after PRELUDE) with this test's interpreter; return its RESULT dict, stdout, stderr."""
    res = subprocess.run(
        [*argv_prefix, sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=ENV,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode()
    lines = [line for line in res.stdout.decode().splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, res.stdout.decode()
    return json.loads(lines[0][len("RESULT ") :]), res.stdout, res.stderr


def in_host(lab: VdpLab, code: str, host: str | None = None, timeout: float = 60) -> dict[str, Any]:
    return _run(lab.host(host).nsenter_argv([]), code, timeout=timeout)[0]


# -- ping, pid ----------------------------------------------------------------------------------------------


def test_ping_and_pid(vdp_lab: VdpLab) -> None:
    got = in_host(
        vdp_lab,
        """
        with qclif.Clif() as c:
            ping = c.ping()
            inside = qclif.lldpad_pid()   # reuses the open connection
        out(available=qclif.library_available(), ping=ping, inside=inside, pid=qclif.lldpad_pid())
        """,
    )
    pid = vdp_lab.lldpad().pid
    assert got == {"available": True, "ping": pid, "inside": pid, "pid": pid}
    # Independent: lldptool -p and the pid file in the host's /run.
    assert vdp_lab.lldpad().lldptool("-p").stdout.split()[0] == str(pid)
    assert vdp_lab.run_in_host(None, ["cat", "/run/lldpad.pid"]).stdout.split()[0] == str(pid).encode()


def test_one_connection_per_process(vdp_lab: VdpLab) -> None:
    got = in_host(
        vdp_lab,
        """
        with qclif.Clif() as c:
            try:
                qclif.Clif().open()
                second = None
            except HookError as exc:
                second = err(exc)
            ping = c.ping()
        with qclif.Clif() as c:   # closed cleanly: a new one opens
            again = c.ping()
        out(second=second, ping=ping, again=again)
        """,
    )
    assert got["second"]["type"] == "FeatureError"
    assert got["ping"] == got["again"] == vdp_lab.lldpad().pid


# -- EVB ----------------------------------------------------------------------------------------------------


EVB_CODE = """
def tlv(t):
    return None if t is None else {"mode": t.mode, "bridge_s": t.bridge_s, "station_s": t.station_s,
                                   "rwd": t.rwd, "rka": t.rka}
with qclif.Clif() as c:
    s = c.evb_status(IFNAME)
    out(enabled=s.enabled, role=s.role, negotiated=s.negotiated, settled=s.settled,
        local=tlv(s.local), neighbour=tlv(s.neighbour), vdp=c.vdp_mode(IFNAME))
"""


def test_evb_negotiated(vdp_lab: VdpLab) -> None:
    got = in_host(vdp_lab, "IFNAME = 'up0'\n" + EVB_CODE)
    assert got["enabled"] and got["role"] == "station"
    assert got["negotiated"] and got["settled"]
    assert got["local"]["mode"] == "station" and got["neighbour"]["mode"] == "bridge"
    assert got["vdp"] == "vdp22"
    # lldptool shows the same TLVs.
    lldptool = vdp_lab.lldpad().evb("up0", neighbour=True)
    assert f"({got['neighbour']['bridge_s']:#x})" in lldptool and f"rka:{got['neighbour']['rka']}" in lldptool
    assert "mode:bridge" in lldptool


def test_evb_not_negotiated_without_bridge(lab_workdir: Path) -> None:
    with VdpLab(lab_workdir, switch="none", wait_evb=False) as lab:
        time.sleep(1.5)  # longer than a negotiation takes when a bridge is there
        got = in_host(lab, "IFNAME = 'up0'\n" + EVB_CODE)
        assert got["enabled"] and got["role"] == "station"
        assert got["local"]["mode"] == "station" and got["neighbour"] is None
        assert not got["negotiated"] and not got["settled"]
        assert got["vdp"] == "vdp22"  # lldpad still routes VSI requests to VDP22 here
        assert lab.lldpad().evb("up0", neighbour=True) == ""


def test_evb_disabled_on_interface(lab_workdir: Path) -> None:
    with VdpLab(lab_workdir, station_role="evb-off", wait_evb=False) as lab:
        # The bridge's TLV reaches us (LLDP is on), yet we do not send EVB: not negotiated.
        lab.lldpad().wait_for(lambda: "mode:bridge" in lab.lldpad().evb("up0", neighbour=True), 10, "bridge TLV")
        got = in_host(lab, "IFNAME = 'up0'\n" + EVB_CODE)
        assert not got["enabled"] and got["local"] is None
        assert got["neighbour"]["mode"] == "bridge"
        assert not got["negotiated"]


def test_unknown_interface(vdp_lab: VdpLab) -> None:
    got = in_host(
        vdp_lab,
        """
        with qclif.Clif() as c:
            try:
                c.evb_status("nosuch0")
                evb = None
            except HookError as exc:
                evb = err(exc)
            out(evb=evb, vdp=c.vdp_mode("nosuch0"), lo=c.vdp_mode("lo"))
        """,
    )
    assert got["evb"]["type"] == "PeerUnavailable" and "nosuch0" in got["evb"]["text"]
    assert got["vdp"] is None and got["lo"] is None


def test_vdp_mode_bridge_role_is_none(vdp_lab: VdpLab) -> None:
    switch = vdp_lab.switch_lldpad
    assert switch is not None
    got = _run(switch.nsenter_argv([]), "with qclif.Clif() as c: out(vdp=c.vdp_mode('s0p0'))")[0]
    assert got == {"vdp": None}
    assert switch.vdptool("-i", "s0p0", "-t", "-V", "assoc").returncode != 0  # vdptool agrees


def test_vdp_mode_draft(lab_workdir: Path) -> None:
    with Netns(f"vx{unique_suffix()}") as ns:
        ns.run(["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        ns.run(["ip", "link", "set", "d0", "up"])
        ns.run(["ip", "link", "set", "d1", "up"])
        with Lldpad(ns, lab_workdir, {"d0": "draft", "d1": "station"}) as lldpad:
            lldpad.wait_ready()
            got = _run(lldpad.nsenter_argv([]), "with qclif.Clif() as c: out(d0=c.vdp_mode('d0'), d1=c.vdp_mode('d1'))")
            assert got[0] == {"d0": "draft", "d1": "vdp22"}


# -- VSI requests -------------------------------------------------------------------------------------------

VSI_CODE = """
def vsi(c, ifname, mode, hints, inst, vlan=0, wait=2.0):
    t = time.monotonic()
    try:
        r = c.vsi(ifname, mode=mode, manager_id=11, type_id=1193047, type_version=2, instance=uuid.UUID(inst),
                  mac="52:54:00:aa:00:02", vlan=vlan, hints=hints, wait=wait)
        return {"ok": r.ok, "mode": r.mode, "status": r.status, "bits": r.error_bits, "vlan": r.vlan,
                "message": r.message, "secs": time.monotonic() - t}
    except HookError as exc:
        d = err(exc)
        d["secs"] = time.monotonic() - t
        return d
"""


def _ecp_vsi_tlvs(pcap: bytes, src_mac: bytes) -> list[tuple[int, int, uuid.UUID]]:
    """(TLV type, status byte, VSI id) of each VDP22 VSI TLV that ``src_mac`` sent in ECP requests."""
    return [(t, status, vsi) for _, t, status, vsi in _ecp_vsi_requests(pcap, src_mac)]


def _ecp_vsi_requests(pcap: bytes, src_mac: bytes) -> list[tuple[float, int, int, uuid.UUID]]:
    """(capture time, TLV type, status byte, VSI id) of each VDP22 VSI TLV ``src_mac`` sent in ECP requests.

    pcap: 24-byte file header, then per frame a 16-byte record header (seconds, microseconds, caplen).
    Frame: dst(6) src(6) ethertype 0x8940, ECP header u16 (version 4 bits, op 2 bits: 0 request, subtype 10
    bits) + u16 seqno, then TLVs: u16 (type 7 bits, length 9 bits); VSI TLVs (types 1-4) start with the
    status byte, type id (3), version (1), id format (1), VSI id (16).
    """
    out = []
    pos = 24
    while pos + 16 <= len(pcap):
        sec, usec, caplen = struct.unpack_from("<III", pcap, pos)
        frame = pcap[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        if frame[6:12] != src_mac or frame[12:14] != b"\x89\x40":
            continue
        ecp = struct.unpack_from(">H", frame, 14)[0]
        if (ecp >> 10) & 3 != 0:  # ACK
            continue
        off = 18
        while off + 2 <= len(frame):
            hdr = struct.unpack_from(">H", frame, off)[0]
            tlv_type, length = hdr >> 9, hdr & 0x1FF
            if tlv_type == 0:
                break
            value = frame[off + 2 : off + 2 + length]
            if 1 <= tlv_type <= 4:
                out.append((sec + usec / 1e6, tlv_type, value[0], uuid.UUID(bytes=bytes(value[6:22]))))
            off += 2 + length
    return out


class _Capture:
    """tcpdump of ECP frames on a switch port, stopped by its pid."""

    def __init__(self, lab: VdpLab, port: str, path: Path) -> None:
        assert lab.switch is not None
        self.path = path
        self.proc = subprocess.Popen(
            lab.switch.argv(
                ["tcpdump", "--immediate-mode", "-i", port, "-U", "-w", str(path), "ether", "proto", "0x8940"]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on ..." once the capture runs
        assert b"listening" in line, line

    def stop(self) -> bytes:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return self.path.read_bytes()


def _mac(lab: VdpLab, ifname: str) -> bytes:
    out = lab.host().netns.run(["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()
    return bytes.fromhex(out.replace(":", ""))


def test_vsi_hints_on_the_wire(vdp_lab: VdpLab, lab_workdir: Path) -> None:
    """Hints reach the switch in the VSI TLV's status byte: M-bit 0x10 (to), S-bit 0x20 (from).

    Measured with lldpad 1.1+git20221028: every later request for a VSI lldpad already holds carries the
    hints of the request that created it (``qbg/vdp22.c`` copies them only when allocating the VSI).  A
    de-association with hints=from therefore carries the M-bit (assoc was hinted "to") or nothing (assoc
    without hints); preassoc(from) then assoc(to) sends the S-bit twice.
    """
    hinted, plain = str(uuid.uuid4()), str(uuid.uuid4())
    cap = _Capture(vdp_lab, "s0p0", lab_workdir / "ecp.pcap")
    try:
        got = in_host(
            vdp_lab,
            VSI_CODE
            + f"""
with qclif.Clif() as c:
    a = vsi(c, "up0", "assoc", "to", {hinted!r})
    table = [r for r in os.popen("vdptool -i up0 -t -V assoc").read().split() if len(r) == 36]
    d = vsi(c, "up0", "deassoc", "from", {hinted!r})
    p = vsi(c, "up0", "assoc", "none", {plain!r})
    q = vsi(c, "up0", "deassoc", "from", {plain!r})
out(a=a, d=d, p=p, q=q, table=table)
""",
        )
    finally:
        pcap = cap.stop()
    for key, mode in (("a", "assoc"), ("d", "deassoc"), ("p", "assoc"), ("q", "deassoc")):
        assert got[key]["ok"], got[key]
        assert got[key]["mode"] == mode and got[key]["status"] == 0 and got[key]["vlan"] == 0
        assert got[key]["secs"] < 0.5  # measured ~5 ms over veth
    assert got["table"] == [hinted]  # vdptool listed the association while it existed
    assert vdp_lab.lldpad().vsi_table("up0") == []

    tlvs = _ecp_vsi_tlvs(pcap, _mac(vdp_lab, "up0"))
    m_bit, s_bit = 0x10, 0x20  # VDP22_MIGTO, VDP22_MIGFROM (openlldp include/qbg_vdp22def.h)
    sent = {(t, str(vsi_id)): status & (m_bit | s_bit) for t, status, vsi_id in tlvs}
    assert sent[(3, hinted)] == m_bit  # ASSOCIATE with the M-bit
    assert sent[(3, plain)] == 0  # ASSOCIATE without hints
    assert sent[(4, hinted)] == m_bit  # DEASSOCIATE keeps the VSI's first hints (see docstring)
    assert sent[(4, plain)] == 0


def test_vsi_preassoc_rr_then_assoc(vdp_lab: VdpLab) -> None:
    inst = str(uuid.uuid4())
    got = in_host(
        vdp_lab,
        VSI_CODE
        + f"""
with qclif.Clif() as c:
    out(pre=vsi(c, "up0", "preassoc-rr", "to", {inst!r}), a=vsi(c, "up0", "assoc", "to", {inst!r}),
        d=vsi(c, "up0", "deassoc", "from", {inst!r}))
""",
    )
    assert got["pre"]["ok"] and got["pre"]["mode"] == "preassoc-rr"
    assert got["a"]["ok"] and got["d"]["ok"]


MANY_CODE = """
def many(c, specs, wait=2.0):
    cmds = [clif.VsiCommand(ifname=ifn, mode=mode, manager_id=11, type_id=1193047, type_version=2,
                            instance=uuid.UUID(inst), mac="52:54:00:aa:00:0%d" % i, vlan=0, hints="to")
            for i, (ifn, mode, inst) in enumerate(specs)]
    t = time.monotonic()
    res = c.vsi_many(cmds, wait=wait)
    return [err(r) if isinstance(r, HookError) else {"ok": r.ok, "mode": r.mode} for r in res], time.monotonic() - t
"""


def test_vsi_many_runs_uplinks_in_parallel(lab_workdir: Path) -> None:
    """Two VSIs on each of two uplinks: the first of each uplink go out together, the second of an uplink
    only after the first was answered (as the switch sees it)."""
    with VdpLab(lab_workdir, uplinks=2) as lab:
        ids = [str(uuid.uuid4()) for _ in range(4)]
        specs = [("up0", "assoc", ids[0]), ("up0", "assoc", ids[1]), ("up1", "assoc", ids[2]), ("up1", "assoc", ids[3])]
        caps = [_Capture(lab, port, lab_workdir / f"{port}.pcap") for port in ("s0p0", "s0p1")]
        try:
            got = in_host(lab, MANY_CODE + f"with qclif.Clif() as c: out(r=many(c, {specs!r}))")
        finally:
            pcaps = [cap.stop() for cap in caps]
        results, _ = got["r"]
        assert results == [{"ok": True, "mode": "assoc"}] * 4
        sent = _ecp_vsi_requests(pcaps[0], _mac(lab, "up0")) + _ecp_vsi_requests(pcaps[1], _mac(lab, "up1"))
        first = {str(v): t for t, _, _, v in reversed(sent)}  # each VSI's first request
        assert first[ids[0]] < first[ids[1]] and first[ids[2]] < first[ids[3]]  # one at a time per uplink
        assert first[ids[2]] < first[ids[1]] and first[ids[0]] < first[ids[3]]  # uplinks side by side
        deassoc = [(i, "deassoc", v) for i, _, v in specs]
        in_host(lab, MANY_CODE + f"with qclif.Clif() as c: out(r=many(c, {deassoc!r}))")


def test_vsi_many_silent_switch_costs_one_wait(lab_workdir: Path) -> None:
    """The switch went silent on both uplinks: one wait in all, the second VSI of each uplink not sent."""
    with VdpLab(lab_workdir, uplinks=2) as lab:
        assert lab.switch_lldpad is not None
        lab.switch_lldpad.stop()
        ids = [str(uuid.uuid4()) for _ in range(4)]
        specs = [("up0", "assoc", ids[0]), ("up0", "assoc", ids[1]), ("up1", "assoc", ids[2]), ("up1", "assoc", ids[3])]
        got = in_host(lab, MANY_CODE + f"with qclif.Clif() as c: out(r=many(c, {specs!r}, wait=0.5))")
        results, secs = got["r"]
        assert [r["type"] for r in results] == ["DeadlineExceeded", "NotSent"] * 2
        assert "no VDP answer" in results[0]["text"] and "no VDP answer" in results[2]["text"]
        assert "not sent" in results[1]["text"] and "not sent" in results[3]["text"]
        assert 0.45 < secs < 1.2
        pending = {r["uuid"] for u in ("up0", "up1") for r in lab.lldpad().vsi_table(u)}
        assert pending == {ids[0], ids[2]}  # lldpad holds only what was sent


def test_vsi_without_evb_refused(lab_workdir: Path) -> None:
    """No bridge ever negotiated EVB: lldpad's VDP22 refuses at once (it does not queue the VSI)."""
    with VdpLab(lab_workdir, switch="none", wait_evb=False) as lab:
        got = in_host(
            lab,
            VSI_CODE + f"with qclif.Clif() as c: out(r=vsi(c, 'up0', 'assoc', 'to', {str(uuid.uuid4())!r}, wait=0.5))",
        )
        assert got["r"]["type"] == "PeerUnavailable" and "VDP protocol not supported" in got["r"]["text"]
        assert got["r"]["secs"] < 0.2
        assert lab.lldpad().vsi_table("up0") == []


def test_vsi_bridge_gone_times_out(vdp_lab: VdpLab) -> None:
    """EVB was negotiated, then the bridge went away: lldpad queues the VSI and nothing answers."""
    assert vdp_lab.switch_lldpad is not None
    vdp_lab.switch_lldpad.stop()
    inst = str(uuid.uuid4())
    code = f"with qclif.Clif() as c: out(r=vsi(c, 'up0', 'assoc', 'to', {inst!r}, wait=0.5))"
    got = in_host(vdp_lab, VSI_CODE + code)
    assert got["r"]["type"] == "DeadlineExceeded" and "no VDP answer" in got["r"]["text"]
    assert 0.45 < got["r"]["secs"] < 1.5
    # lldpad keeps it pending: response 255 ("none yet") in its table.
    [pending] = vdp_lab.lldpad().vsi_table("up0")
    assert pending["uuid"] == inst and pending["hints"] == "255"


def test_vsi_link_down_reports_error_bits(vdp_lab: VdpLab) -> None:
    vdp_lab.set_switch_link(None, "up0", False)
    inst = str(uuid.uuid4())
    got = in_host(vdp_lab, VSI_CODE + f"with qclif.Clif() as c: out(r=vsi(c, 'up0', 'assoc', 'to', {inst!r}))")
    r = got["r"]
    assert not r["ok"] and r["mode"] == "deassoc"
    assert r["status"] == 255 and r["bits"] & 0x04  # no response, transmit error (measured)
    assert "transmit error" in r["message"]


def test_vsi_refused_by_lldpad(vdp_lab: VdpLab) -> None:
    got = in_host(
        vdp_lab,
        VSI_CODE
        + f"""
with qclif.Clif() as c:
    out(unknown=vsi(c, "up0", "deassoc", "from", {str(uuid.uuid4())!r}),
        nodev=vsi(c, "nosuch0", "assoc", "to", {str(uuid.uuid4())!r}))
""",
    )
    assert got["unknown"]["type"] == "PeerRefused" and "invalid parameters" in got["unknown"]["text"]
    assert got["nodev"]["type"] == "PeerUnavailable" and "nosuch0" in got["nodev"]["text"]


# -- lldpad missing or hung ---------------------------------------------------------------------------------


def test_no_lldpad(vdp_lab: VdpLab) -> None:
    vdp_lab.stop_lldpad()
    got, stdout, stderr = _run(
        vdp_lab.host().nsenter_argv([]),
        """
        fds = len(os.listdir("/proc/self/fd"))
        errors = set()
        for _ in range(200):
            try:
                with qclif.Clif() as c:
                    c.ping()
            except HookError as exc:
                errors.add((type(exc).__name__, exc.one_line()))
        out(errors=sorted(errors), pid=qclif.lldpad_pid(), available=qclif.library_available(),
            leaked=len(os.listdir("/proc/self/fd")) - fds)
        """,
    )
    assert got["available"] and got["pid"] is None and got["leaked"] == 0
    [(kind, line)] = got["errors"]
    assert kind == "PeerUnavailable"
    assert "lldpad is not running" in line and "start lldpad" in line and "install" in line
    assert stderr == b""  # no perror() noise from the library on the hook's stderr
    assert stdout.count(b"\n") == 1


def test_hung_lldpad_deadline_and_quiet_stdout(vdp_lab: VdpLab) -> None:
    pid = vdp_lab.lldpad().pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        got, stdout, stderr = _run(
            vdp_lab.host().nsenter_argv([]),
            """
            t = time.monotonic()
            try:
                with qclif.Clif(timeout=0.3) as c:
                    c.ping()
                e = None
            except HookError as exc:
                e = err(exc)
            out(e=e, secs=time.monotonic() - t)
            """,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert got["e"]["type"] == "DeadlineExceeded" and "did not answer" in got["e"]["text"]
    assert 0.25 < got["secs"] < 1.0
    assert stdout.count(b"\n") == 1 and stderr == b""
    assert vdp_lab.lldpad().ping()  # lldpad runs on


def test_library_request_prints_timeout_on_stdout(vdp_lab: VdpLab) -> None:
    """Why vdp.qbg.clif does not call clif_request()/clif_getpid(): on a hung lldpad they write to stdout."""
    pid = vdp_lab.lldpad().pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        res = vdp_lab.run_in_host(
            None,
            [sys.executable, "-c", "import ctypes; print('pid', ctypes.CDLL('liblldp_clif.so.1').clif_getpid())"],
            timeout=30,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert b"timeout" in res.stdout and b"pid 0" in res.stdout


# -- resources ----------------------------------------------------------------------------------------------


def test_no_fd_leak_over_200_connections(vdp_lab: VdpLab) -> None:
    got = in_host(
        vdp_lab,
        VSI_CODE
        + """
fds = len(os.listdir("/proc/self/fd"))
pids = set()
for i in range(200):
    with qclif.Clif() as c:
        pids.add(c.ping())
        s = c.evb_status("up0")
        assert s.negotiated, (i, s)
        assert c.vdp_mode("up0") == "vdp22", i
        if i % 20 == 0:
            inst = str(uuid.uuid4())
            a = vsi(c, "up0", "assoc", "to", inst)
            assert a.get("ok"), (i, a)
            d = vsi(c, "up0", "deassoc", "from", inst)
            assert d.get("ok"), (i, d)
    assert qclif.lldpad_pid() in pids, i
after = len(os.listdir("/proc/self/fd"))
out(before=fds, after=after, pids=sorted(pids))
""",
        timeout=120,
    )
    assert got["after"] == got["before"]
    assert got["pids"] == [vdp_lab.lldpad().pid]
