"""A bridge-side IEEE 802.1Qbg-2012 peer ("switch peer") that can say no, for the lab.

Debian's lldpad in the bridge role answers every VDP22 request with success.  This peer stands in for
the switch: it runs on the switch ends of veth pairs (inside the lab's switch network namespace) and
speaks the real protocols, over AF_PACKET raw sockets, to a real lldpad station on the other end:

* LLDP (nearest-customer-bridge address) with the EVB TLV in the bridge role, so the station's
  ``lldptool -n -t -i IF -g ncb -V evb`` shows ``mode:bridge``.  It advertises reflective-relay
  capability and grants it (rrctr) when the station requests it.
* ECP22: acknowledges every station request (the ack repeats the sequence number; a repeated sequence
  number is a retransmission: acknowledged again, not processed twice) and sends its own VDP frames one
  at a time, resending until acknowledged (``--ecp-retries`` resends, then it gives up and logs it).
* VDP22: manager-id + VSI TLVs (pre-associate, pre-associate with RR, associate, de-associate; all four
  filter formats), the M/S migration hints, VLAN 0 (answered with a VLAN of the switch's choosing).

Run it as ``python3 -m tests.lab.harness.switchpeer --iface vbr0 --iface vbr1 --state DIR
[--model per-port|one-port] [--migration-timeout S] [--lldp-interval S] [--rte N] [--rwd N] [--rka N]
[--retries N] [--ecp-retries N]``, normally through :class:`SwitchPeer`, which starts it with
:class:`~tests.lab.harness.netns.Daemon`.  SIGTERM stops it.

Control interface: the JSON file ``DIR/control.json`` (or ``--control FILE``), written by the test
(atomically: write a temporary file, then rename; :meth:`SwitchPeer.control` does that).  A missing file
means "answer success".  The peer re-reads it for every VSI TLV it answers, so changes apply to the
next request; a file that does not parse is logged (event ``control-error``) and the last good one is
used.  Layout, every key optional::

    {
      "default":   RULE,                      # for everything not matched below
      "ifaces":    {"vbr1": RULE},            # per switch port
      "instances": {"<uuid>": RULE},          # per VSI instance id (lower case, with dashes)
      "vlan":      100,                       # VLAN given for VLAN 0 (default 100)
      "commands":  [{"id": "k1", "deassoc": "<uuid>", "iface": "vbr0", "hard": false},
                    {"id": "r1", "release": "<uuid>", "status": "success"}]
    }

    RULE = {"status": "success" | "invalid-format" | "insufficient-resources" |
                      "no-vsi-manager" | "other" | "invalid-address" | "keep" | "silence" | "hold",
            "code": 3,           # keep only: status code sent with the keep bit (default 3)
            "hard": false,       # error/keep: also set the hard-error bit
            "delay_ms": 0,       # answer this much later (the table changes at once)
            "vlan": 100,         # VLAN for VLAN 0 requests matched by this rule
            "modes": ["assoc"]}  # rule applies only to these request modes (preassoc, preassoc-rr,
                                 # assoc, deassoc); otherwise the next, less specific rule is tried

Lookup order: ``instances`` then ``ifaces`` then ``default`` then success.  Answers, as lldpad's
station understands them (openlldp qbg/vdp22sm.c):

* ``success``: the request's mode with the acknowledgement bit (0x40); VLAN 0 replaced by the chosen
  VLAN.  The station then reports status 0.
* ``invalid-format`` (1), ``insufficient-resources`` (2), ``no-vsi-manager`` (3), ``other`` (4),
  ``invalid-address`` (5): like lldpad's own bridge, a de-associate TLV with 0x40 | code (| 0x10 with
  ``hard``); the VSI leaves the switch's table.  lldpad reports the status byte without 0x40 (1..5, or
  0x10 | code when hard).
* ``keep``: the request's mode with 0x40 | 0x20 (keep) | code; the table keeps its previous state.  The
  station reports 0x20 | code (lldpad ignores a keep bit whose code is 0, hence the non-zero default).
* ``silence``: the ECP frame is acknowledged, no VDP answer ever comes (also none to keep-alives).
  lldpad's own wait (10 us * (7 * 2^rte + 2^rwd) * 1.5, ~15.7 s with its defaults) ends without any
  status: over netlink the VSI stays "in progress" (no IFLA_PORT_RESPONSE) for good.

lldpad's station reports a final status once: the GETLINK that shows it makes lldpad forget a finished
(refused, de-associated) VSI.  A refused change of an existing VSI (e.g. ASSOCIATE after a successful
PREASSOCIATE_RR) that a GETLINK saw pending is dropped and its status goes only to the requester's
netlink port as an unsolicited message.
* ``hold``: like ``silence`` until the test says otherwise: the request is kept unanswered until a
  ``release`` command for its instance answers it as that command's ``status`` says (default success;
  any status but silence/hold).  A late or slow switch without timing: the test decides when it answers.
* ``commands``: each entry with an ``id`` not seen before is run once when the file changes (the peer
  polls its mtime every 0.1 s): ``deassoc`` sends a switch-initiated de-associate (no 0x40 bit) for that
  instance to the station on ``iface`` (default: every port holding it) and drops it from the table;
  ``release`` answers the held requests of that instance (event ``released``, then the table changes
  and the answer goes out as for a request answered at once); ``reset_ecp`` forgets the last sequence
  number received on every port (as a switch does when the link goes down), so that a restarted
  station's first frame, numbered 1 again, is not taken for a retransmission of the old one's.

Switch models (``--model``): ``per-port`` keeps each port's VSIs independently.  ``one-port`` lets a
VSI instance live at one port at a time: a successful associate at port B of an instance held at port A
sends a switch-initiated de-associate to A's station, unless the associate carried the M hint
(migration target; lldpad ``VDP22_MIGTO`` 0x10, vdptool ``hints=to``): then A keeps it until A's station
de-associates (with or without the S hint, ``VDP22_MIGFROM`` 0x20, ``hints=from``) or
``--migration-timeout`` seconds pass, after which A gets the switch-initiated de-associate.
Pre-associations never move a VSI.  Measured lldpad 1.1 behaviour that matters here: lldpad takes hints
only through its client interface (vdptool), never over netlink, and it repeats the hints of a VSI's
*first* request in every later request for that VSI (keep-alives, de-associate): an association made
with ``hints=to`` keeps the M bit, and ``vdptool ... deassoc ... hints=from`` for a VSI associated
without hints sends no S bit.  A netlink ASSOCIATE (libvirt, the hooks) therefore never carries M, and
in the one-port model it always de-associates the VSI at its previous port at once.

State directory outputs:

* ``peer.json``: ``{"pid", "model", "ifaces": {name: mac}}``, written once the sockets are open.
* ``events.jsonl``: one JSON object per line, appended and flushed as things happen.  Every VSI TLV
  received gives ``{"event": "request", "time", "iface", "mode", "instance", "mgrid", "typeid",
  "typeidver", "mac", "vlan", "filters": [{"mac", "vlan", "qos", "group"}], "hints": {"M", "S"},
  "keepalive", "answer", "status_byte", "reply_mode", "assigned_vlan", "delay_ms"}`` (``answer`` is
  the rule's status name, ``status_byte`` what was sent, null for silence; ``mac``/``vlan`` are the
  first filter entry's).  Other events: ``switch-deassoc`` (iface, instance, reason ``moved`` |
  ``migration-timeout`` | ``command``), ``migration-hold``, ``ecp-duplicate``, ``ecp-giveup``,
  ``malformed``, ``control-error``, ``evb`` (station's EVB TLV changed).
* ``table.json``: ``{iface: {instance: {"mode", "mgrid", "typeid", "typeidver", "filters",
  "migrating"}}}``, rewritten (atomically) on every change.

The table starts empty: after a peer restart, stations' keep-alives (every 10 us * 2^rka, ~10 s with
lldpad's default rka 20) re-enter their VSIs as new requests (``keepalive`` false).  The peer keeps no
keep-alive timer of its own (VSIs never expire on the switch side unless de-associated).

Tap (``--tap``): for a switch side that is lldpad's own bridge role, whose table cannot be asked (its
client interface refuses VSI queries; its GETLINK lists every VSI it ever granted, for good).  The tap
sends nothing; it reads the VDP frames the bridge sends on each port (PACKET_OUTGOING) and keeps
``table.json`` from them in the same layout: a granted (pre-)association enters the table, a
de-associate (an answer to the station's, a refusal, or the bridge's own) drops it, a keep answer
changes nothing.  :class:`SwitchTap` starts it; :class:`~tests.lab.harness.vdplab.VdpLab` runs one on
its lldpad bridge's ports.

Pacing: lldpad's station hands received VDP data to a 2 ms timer through a single per-port buffer, so
two frames in quick succession lose the first.  The peer therefore waits 20 ms after an ack before
sending the next VDP frame to the same port.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from tests.lab.harness import vdp22wire as w
from tests.lab.harness.netns import Daemon, Netns

__all__ = ["ERROR_CODES", "STATUSES", "SwitchPeer", "SwitchTap", "main"]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33  # asm-generic/socket.h (root may exceed rmem_max)
SEND_SPACING = 0.020  # see "Pacing" in the module docstring
DEFAULT_VLAN = 100
DEFAULT_KEEP_CODE = 3

ERROR_CODES = {"invalid-format": 1, "insufficient-resources": 2, "no-vsi-manager": 3, "other": 4,
               "invalid-address": 5}
STATUSES = ("success", "keep", "silence", "hold", *ERROR_CODES)
_MODE_BY_NAME = {name: mode for mode, name in w.MODE_NAMES.items()}


@dataclass
class Rule:
    """The answer chosen for one request (see RULE in the module docstring)."""

    status: str = "success"
    code: int = DEFAULT_KEEP_CODE
    hard: bool = False
    delay_ms: int = 0
    vlan: int = DEFAULT_VLAN

    @classmethod
    def parse(cls, raw: dict[str, Any], vlan: int) -> Rule:
        status = str(raw.get("status", "success"))
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        return cls(status=status, code=int(raw.get("code", DEFAULT_KEEP_CODE)), hard=bool(raw.get("hard", False)),
                   delay_ms=int(raw.get("delay_ms", 0)), vlan=int(raw.get("vlan", vlan)))


def choose_rule(control: dict[str, Any], iface: str, instance: str, mode: str) -> Rule:
    """The most specific rule of ``control`` that applies to this request."""
    vlan = int(control.get("vlan", DEFAULT_VLAN))
    candidates = (
        control.get("instances", {}).get(instance.lower()),
        control.get("ifaces", {}).get(iface),
        control.get("default"),
    )
    for raw in candidates:
        if raw and ("modes" not in raw or mode in raw["modes"]):
            return Rule.parse(raw, vlan)
    return Rule(vlan=vlan)


@dataclass
class Entry:
    """A VSI in a port's table, as last answered (filters carry the VLAN the switch gave)."""

    vsi: w.VsiTlv
    mgrid: bytes
    migrating_until: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"mode": w.MODE_NAMES[self.vsi.mode], "mgrid": w.mgrid_str(self.mgrid),
                "typeid": self.vsi.type_id, "typeidver": self.vsi.type_version,
                "filters": [_filter_json(f) for f in self.vsi.filters],
                "migrating": self.migrating_until is not None}


def _filter_json(f: w.FilterEntry) -> dict[str, Any]:
    return {"mac": w.mac_str(f.mac) if f.mac is not None else None, "vlan": f.vid, "qos": f.qos,
            "group": f.group}


@dataclass
class Port:
    """One switch port: its socket, ECP state in both directions and its VSI table."""

    name: str
    sock: socket.socket
    mac: bytes
    station_evb: w.EvbTlv | None = None
    rx_last_seq: int | None = None
    tx_seq: int = 0
    tx_queue: deque[bytes] = field(default_factory=deque)
    inflight: tuple[int, bytes] | None = None
    inflight_sent: int = 0
    inflight_due: float = 0.0
    not_before: float = 0.0
    next_lldp: float = 0.0
    vsis: dict[str, Entry] = field(default_factory=dict)


class Peer:
    """The peer's event loop; one instance per process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state = Path(args.state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.control_path = Path(args.control) if args.control else self.state / "control.json"
        self.control: dict[str, Any] = {}
        self.control_mtime: float | None = None
        self.commands_done: set[str] = set()
        self.held: dict[str, list[tuple[Port, bytes, w.VsiTlv, dict[str, Any]]]] = {}  # instance -> requests
        self.log = open(self.state / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - process lifetime
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.running = True
        self.ports: dict[str, Port] = {}
        for name in args.iface:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((name, ETH_P_ALL))
            # A random first sequence number: a restarted peer must not look like a retransmission of
            # the previous one's last frame to the station's duplicate check.
            self.ports[name] = Port(name=name, sock=sock, mac=sock.getsockname()[4][:6],
                                    tx_seq=secrets.randbelow(0xFFFF) + 1)
        self._write_json("peer.json", {"pid": os.getpid(), "model": args.model,
                                       "ifaces": {p.name: w.mac_str(p.mac) for p in self.ports.values()}})
        self._write_table()

    # --- output ------------------------------------------------------------------------------------

    def _write_json(self, name: str, obj: object) -> None:
        tmp = self.state / f".{name}.tmp"
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
        os.replace(tmp, self.state / name)

    def _write_table(self) -> None:
        self._write_json("table.json", {p.name: {i: e.as_json() for i, e in p.vsis.items()}
                                        for p in self.ports.values()})

    def event(self, kind: str, **fields: object) -> None:
        self.log.write(json.dumps({"event": kind, "time": time.time(), **fields}) + "\n")
        self.log.flush()

    # --- control file ------------------------------------------------------------------------------

    def read_control(self) -> dict[str, Any]:
        try:
            text = self.control_path.read_text()
        except FileNotFoundError:
            self.control = {}
            return self.control
        try:
            parsed = json.loads(text)
            if not isinstance(parsed, dict):
                raise ValueError("top level is not an object")
        except ValueError as exc:
            self.event("control-error", error=str(exc))
            return self.control
        self.control = parsed
        return parsed

    def poll_commands(self) -> None:
        try:
            mtime = self.control_path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self.control_mtime:
            return
        self.control_mtime = mtime
        for cmd in self.read_control().get("commands", []):
            cmd_id = str(cmd.get("id"))
            if cmd_id in self.commands_done or not {"deassoc", "release", "reset_ecp"} & set(cmd):
                continue
            self.commands_done.add(cmd_id)
            if cmd.get("reset_ecp"):
                for port in self.ports.values():
                    port.rx_last_seq = None
                self.event("reset-ecp")
                continue
            if "release" in cmd:
                self.release(cmd)
                continue
            instance = str(cmd["deassoc"]).lower()
            for port in self.ports.values():
                if cmd.get("iface") in (None, port.name) and instance in port.vsis:
                    self.switch_deassoc(port, instance, "command", hard=bool(cmd.get("hard", False)))

    # --- sending -----------------------------------------------------------------------------------

    def send_lldp(self, port: Port) -> None:
        own = w.EvbTlv(bridge_status=w.EVB_RRCAP, retries=self.args.retries, rte=self.args.rte,
                       mode=w.EVB_MODE_BRIDGE, rwd=self.args.rwd, rka=self.args.rka)
        peer = port.station_evb
        if peer is not None:
            # Like lldpad's bridge: grant reflective relay when asked, echo the station's status byte,
            # advertise the larger of both values (r/l set when the station's value won).
            own = replace(
                own,
                bridge_status=own.bridge_status | (w.EVB_RRCTR if peer.station_status & w.EVB_RRREQ else 0),
                station_status=peer.station_status,
                retries=max(own.retries, peer.retries), rte=max(own.rte, peer.rte),
                rwd=max(own.rwd, peer.rwd), rwd_remote=peer.rwd >= own.rwd,
                rka=max(own.rka, peer.rka), rka_remote=peer.rka >= own.rka,
            )
        ttl = max(int(self.args.lldp_interval * 4), 1)
        payload = w.encode_lldpdu(port.mac, port.mac, ttl, own)
        port.sock.send(w.encode_ethernet(w.NEAREST_CUSTOMER_BRIDGE, port.mac, w.ETH_P_LLDP, payload))
        port.next_lldp = time.monotonic() + self.args.lldp_interval

    def send_ecp(self, port: Port, ecp: w.EcpFrame) -> None:
        port.sock.send(w.encode_ethernet(w.NEAREST_CUSTOMER_BRIDGE, port.mac, w.ETH_P_ECP22, w.encode_ecp(ecp),
                                         pad=False))

    def queue_vdp(self, port: Port, payload: bytes) -> None:
        port.tx_queue.append(payload)
        self.pump(port)

    def pump(self, port: Port) -> None:
        """Send the next queued VDP frame if nothing is in flight and the pacing allows."""
        now = time.monotonic()
        if port.inflight is not None or not port.tx_queue or now < port.not_before:
            return
        port.tx_seq = port.tx_seq % 0xFFFF + 1  # 16 bits, 0 skipped like lldpad
        port.inflight = (port.tx_seq, port.tx_queue.popleft())
        port.inflight_sent = 0
        self.retransmit(port)

    def ack_timeout(self, port: Port) -> float:
        rte = max(self.args.rte, port.station_evb.rte if port.station_evb else 0)
        return max(10e-6 * (1 << rte), 0.010)

    def retransmit(self, port: Port) -> None:
        assert port.inflight is not None
        seq, payload = port.inflight
        if port.inflight_sent > self.args.ecp_retries:
            self.event("ecp-giveup", iface=port.name, seqno=seq, sent=port.inflight_sent)
            port.inflight = None
            self.pump(port)
            return
        self.send_ecp(port, w.EcpFrame(op=w.ECP22_REQUEST, seqno=seq, payload=payload))
        port.inflight_sent += 1
        port.inflight_due = time.monotonic() + self.ack_timeout(port)

    # --- receiving ---------------------------------------------------------------------------------

    def on_frame(self, port: Port, frame: bytes) -> None:
        try:
            _dst, _src, ethertype, payload = w.decode_ethernet(frame)
            if ethertype == w.ETH_P_LLDP:
                self.on_lldp(port, payload)
            elif ethertype == w.ETH_P_ECP22:
                self.on_ecp(port, payload)
        except w.WireError as exc:
            self.event("malformed", iface=port.name, error=str(exc), frame=frame.hex())

    def on_lldp(self, port: Port, payload: bytes) -> None:
        evb = w.find_evb(w.decode_lldpdu(payload))
        if evb is None or evb.mode != w.EVB_MODE_STATION or evb == port.station_evb:
            return
        port.station_evb = evb
        self.event("evb", iface=port.name, station_status=evb.station_status, rte=evb.rte, rwd=evb.rwd,
                   rka=evb.rka, retries=evb.retries)
        self.send_lldp(port)  # answer at once so the station sees rrctr without waiting a period

    def on_ecp(self, port: Port, payload: bytes) -> None:
        ecp = w.decode_ecp(payload)
        if ecp.version != w.ECP22_VERSION or ecp.subtype != w.ECP22_SUBTYPE_VDP:
            return
        if ecp.op == w.ECP22_ACK:
            if port.inflight is not None and port.inflight[0] == ecp.seqno:
                port.inflight = None
                port.not_before = time.monotonic() + SEND_SPACING
            return
        if ecp.op != w.ECP22_REQUEST:
            return
        self.send_ecp(port, w.EcpFrame(op=w.ECP22_ACK, seqno=ecp.seqno, subtype=ecp.subtype))
        if ecp.seqno == port.rx_last_seq:
            self.event("ecp-duplicate", iface=port.name, seqno=ecp.seqno)
            return
        port.rx_last_seq = ecp.seqno
        msg = w.decode_vdp(ecp.payload)
        for vsi in msg.vsis:
            self.on_vsi(port, msg.mgrid, vsi)

    # --- VDP decisions -----------------------------------------------------------------------------

    def on_vsi(self, port: Port, mgrid: bytes, vsi: w.VsiTlv) -> None:
        instance = vsi.instance
        mode = w.MODE_NAMES[vsi.mode]
        rule = choose_rule(self.read_control(), port.name, instance, mode)
        old = port.vsis.get(instance)
        first = vsi.filters[0] if vsi.filters else None
        record: dict[str, Any] = {
            "iface": port.name, "mode": mode, "instance": instance, "mgrid": w.mgrid_str(mgrid),
            "typeid": vsi.type_id, "typeidver": vsi.type_version,
            "mac": w.mac_str(first.mac) if first is not None and first.mac is not None else None,
            "vlan": first.vid if first is not None else None,
            "filters": [_filter_json(f) for f in vsi.filters],
            "hints": {"M": bool(vsi.status & w.HINT_M), "S": bool(vsi.status & w.HINT_S)},
            "keepalive": old is not None and old.vsi.mode == vsi.mode,
            "answer": rule.status, "delay_ms": rule.delay_ms, "status_byte": None, "reply_mode": None,
            "assigned_vlan": None,
        }
        if rule.status == "silence":
            self.event("request", **record)
            return
        if rule.status == "hold":
            self.held.setdefault(instance, []).append((port, mgrid, vsi, record))
            self.event("request", **record)
            return
        self.answer(port, mgrid, vsi, rule, record)

    def release(self, cmd: dict[str, Any]) -> None:
        """A ``release`` command: answer the held requests of its instance, oldest first."""
        instance = str(cmd["release"]).lower()
        raw = {"status": cmd.get("status", "success"), **{k: cmd[k] for k in ("code", "hard", "vlan") if k in cmd}}
        rule = Rule.parse(raw, int(self.control.get("vlan", DEFAULT_VLAN)))
        for port, mgrid, vsi, record in self.held.pop(instance, []):
            self.event("released", iface=port.name, instance=instance, status=rule.status)
            self.answer(port, mgrid, vsi, rule, dict(record, answer=rule.status, late=True))

    def answer(self, port: Port, mgrid: bytes, vsi: w.VsiTlv, rule: Rule, record: dict[str, Any]) -> None:
        """Answer one VSI TLV as ``rule`` says (table change, reply queued); log ``record`` as a request."""
        instance = vsi.instance
        hard = w.STATUS_HARD if rule.hard else 0
        reply: w.VsiTlv
        if rule.status in ERROR_CODES:
            reply = replace(vsi, mode=w.VDP22_DEASSOC, status=w.STATUS_ACK | hard | ERROR_CODES[rule.status])
            self.drop(port, instance)
        elif rule.status == "keep":
            status = w.STATUS_ACK | w.STATUS_KEEP | hard | (rule.code & w.STATUS_CODE_MASK)
            reply = replace(vsi, status=status)
        elif vsi.mode == w.VDP22_DEASSOC:
            reply = replace(vsi, status=w.STATUS_ACK)
            self.drop(port, instance)
        else:
            filters = tuple(f.with_vid(rule.vlan) if f.vid == 0 else f for f in vsi.filters)
            if any(f.vid == 0 for f in vsi.filters):
                record["assigned_vlan"] = rule.vlan
            reply = replace(vsi, status=w.STATUS_ACK, filters=filters)
            port.vsis[instance] = Entry(vsi=replace(reply, status=0), mgrid=mgrid)
            if vsi.mode == w.VDP22_ASSOC and self.args.model == "one-port":
                self.move(port, instance, migrating=bool(vsi.status & w.HINT_M))
            self._write_table()
        record["status_byte"] = reply.status
        record["reply_mode"] = w.MODE_NAMES[reply.mode]
        self.event("request", **record)
        data = w.encode_vdp(mgrid, [reply])
        if rule.delay_ms > 0:
            self.after(rule.delay_ms / 1000.0, lambda: self.queue_vdp(port, data))
        else:
            self.queue_vdp(port, data)

    def drop(self, port: Port, instance: str) -> None:
        if port.vsis.pop(instance, None) is not None:
            self._write_table()

    def move(self, target: Port, instance: str, *, migrating: bool) -> None:
        """One-port model: ``instance`` was associated at ``target``; deal with the other ports."""
        for port in self.ports.values():
            entry = port.vsis.get(instance)
            if port is target or entry is None:
                continue
            if migrating:
                if entry.migrating_until is None:
                    until = time.monotonic() + self.args.migration_timeout
                    entry.migrating_until = until
                    self.event("migration-hold", iface=port.name, instance=instance, to=target.name,
                               timeout=self.args.migration_timeout)
                    self.after(self.args.migration_timeout,
                               functools.partial(self.migration_expired, port, instance, until))
            else:
                self.switch_deassoc(port, instance, "moved")

    def migration_expired(self, port: Port, instance: str, until: float) -> None:
        entry = port.vsis.get(instance)
        if entry is not None and entry.migrating_until == until:
            self.switch_deassoc(port, instance, "migration-timeout")

    def switch_deassoc(self, port: Port, instance: str, reason: str, *, hard: bool = False) -> None:
        """Send a switch-initiated de-associate (no ack bit) and forget the VSI at ``port``."""
        entry = port.vsis.pop(instance)
        self._write_table()
        tlv = replace(entry.vsi, mode=w.VDP22_DEASSOC, status=w.STATUS_HARD if hard else 0)
        self.event("switch-deassoc", iface=port.name, instance=instance, reason=reason, status_byte=tlv.status)
        self.queue_vdp(port, w.encode_vdp(entry.mgrid, [tlv]))

    # --- loop --------------------------------------------------------------------------------------

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self.timers.append((time.monotonic() + delay, fn))

    def run(self) -> None:
        for port in self.ports.values():
            self.send_lldp(port)
        next_poll = 0.0
        while self.running:
            now = time.monotonic()
            if now >= next_poll:
                self.poll_commands()
                next_poll = now + 0.1
            deadlines = [next_poll] + [p.next_lldp for p in self.ports.values()]
            deadlines += [p.inflight_due for p in self.ports.values() if p.inflight is not None]
            deadlines += [p.not_before for p in self.ports.values() if p.inflight is None and p.tx_queue]
            deadlines += [due for due, _fn in self.timers]
            wait = max(0.0, min(deadlines) - time.monotonic())
            try:
                readable, _, _ = select.select([p.sock for p in self.ports.values()], [], [], wait)
            except InterruptedError:
                continue
            for port in self.ports.values():
                if port.sock in readable:
                    frame, addr = port.sock.recvfrom(65535)
                    if addr[2] != PACKET_OUTGOING:
                        self.on_frame(port, frame)
            now = time.monotonic()
            due = [t for t in self.timers if t[0] <= now]
            self.timers = [t for t in self.timers if t[0] > now]
            for _t, fn in due:
                fn()
            for port in self.ports.values():
                if port.inflight is not None and now >= port.inflight_due:
                    self.retransmit(port)
                self.pump(port)
                if now >= port.next_lldp:
                    self.send_lldp(port)
        self.log.close()


class Tap:
    """The ``--tap`` loop: the switch side's table from the VDP frames its own bridge sends (see above)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.state = Path(args.state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.running = True
        self.socks: dict[str, socket.socket] = {}
        self.tables: dict[str, dict[str, Entry]] = {}
        for name in args.iface:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            # It sees every frame both ways and must not miss one while the machine is busy (measured: 2
            # of 120 answers lost with the default buffer on a loaded machine).
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
            sock.bind((name, ETH_P_ALL))
            self.socks[name] = sock
            self.tables[name] = {}
        self._write_table()
        _write_json(self.state, "peer.json", {"pid": os.getpid(), "model": "tap", "ifaces": {}})

    def _write_table(self) -> None:
        _write_json(self.state, "table.json",
                    {p: {i: e.as_json() for i, e in t.items()} for p, t in self.tables.items()})

    def on_sent(self, port: str, frame: bytes) -> None:
        """One frame the bridge sent on ``port``: its VDP answers change the table."""
        try:
            _dst, _src, ethertype, payload = w.decode_ethernet(frame)
            if ethertype != w.ETH_P_ECP22:
                return
            ecp = w.decode_ecp(payload)
            if ecp.op != w.ECP22_REQUEST or ecp.subtype != w.ECP22_SUBTYPE_VDP:
                return
            msg = w.decode_vdp(ecp.payload)
        except w.WireError:
            return
        table = self.tables[port]
        changed = False
        for vsi in msg.vsis:
            if vsi.mode == w.VDP22_DEASSOC:
                changed |= table.pop(vsi.instance, None) is not None
            elif not vsi.status & (w.STATUS_KEEP | w.STATUS_CODE_MASK) and vsi.mode in w.MODE_NAMES:
                table[vsi.instance] = Entry(vsi=replace(vsi, status=0), mgrid=msg.mgrid)  # a repeat re-enters
                changed = True
        if changed:
            self._write_table()

    def run(self) -> None:
        by_fd = {sock.fileno(): name for name, sock in self.socks.items()}
        while self.running:
            try:
                readable, _, _ = select.select(list(self.socks.values()), [], [], 0.5)
            except InterruptedError:
                continue
            for sock in readable:
                frame, addr = sock.recvfrom(65535)
                if addr[2] == PACKET_OUTGOING:
                    self.on_sent(by_fd[sock.fileno()], frame)


def _write_json(state: Path, name: str, obj: object) -> None:
    tmp = state / f".{name}.tmp"
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, state / name)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 -m tests.lab.harness.switchpeer", description=__doc__.split("\n")[0])
    ap.add_argument("--iface", action="append", required=True, help="switch-side interface (repeatable)")
    ap.add_argument("--state", required=True, help="state directory (events.jsonl, table.json, control.json)")
    ap.add_argument("--control", help="control file (default STATE/control.json)")
    ap.add_argument("--model", choices=("per-port", "one-port"), default="per-port")
    ap.add_argument("--migration-timeout", type=float, default=30.0)
    ap.add_argument("--lldp-interval", type=float, default=1.0)
    ap.add_argument("--rte", type=int, default=10, help="ECP ack-wait exponent advertised (10 us * 2^N)")
    ap.add_argument("--rwd", type=int, default=14, help="VDP resource-wait exponent advertised")
    ap.add_argument("--rka", type=int, default=14, help="VDP keep-alive exponent advertised")
    ap.add_argument("--retries", type=int, default=3, help="ECP retries advertised")
    ap.add_argument("--ecp-retries", type=int, default=10, help="resends of our own VDP frames before giving up")
    ap.add_argument("--tap", action="store_true", help="send nothing: keep the table of the bridge on these ports")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the peer process."""
    args = _parse_args(argv)
    peer: Peer | Tap = Tap(args) if args.tap else Peer(args)

    def stop(_signum: int, _frame: object) -> None:
        peer.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    peer.run()
    return 0


# --- harness side ----------------------------------------------------------------------------------

_REPO = Path(__file__).resolve().parents[3]


class SwitchPeer:
    """Starts the peer in ``netns`` (a :class:`Daemon`) and reads/writes its state directory."""

    def __init__(self, netns: Netns, ifaces: Sequence[str], state_dir: Path, *, model: str = "per-port",
                 migration_timeout: float = 30.0, extra_args: Sequence[str] = ()) -> None:
        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "tests.lab.harness.switchpeer", "--state", str(self.state),
                "--model", model, "--migration-timeout", str(migration_timeout), *extra_args]
        for name in ifaces:
            argv += ["--iface", name]
        (self.state / "peer.json").unlink(missing_ok=True)  # written afresh once the sockets are open
        env = dict(os.environ, PYTHONPATH=str(_REPO))
        self.daemon = Daemon(netns, argv, log=self.state / "peer.log", env=env)
        try:
            self.daemon.wait_for((self.state / "peer.json").exists, 10.0, "switch peer start")
        except BaseException:
            self.daemon.stop()  # see peer.log for why it did not come up
            raise

    def control(self, config: dict[str, Any]) -> None:
        """Replace the control file (atomically); applies to the next request."""
        tmp = self.state / ".control.json.tmp"
        tmp.write_text(json.dumps(config))
        os.replace(tmp, self.state / "control.json")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All logged events (of ``kind`` when given), oldest first."""
        try:
            lines = (self.state / "events.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = [json.loads(line) for line in lines if line.strip()]
        return [e for e in out if kind is None or e["event"] == kind]

    def requests(self, instance: str | None = None) -> list[dict[str, Any]]:
        """Logged VSI requests (for ``instance`` when given)."""
        return [e for e in self.events("request") if instance is None or e["instance"] == instance]

    def table(self) -> dict[str, dict[str, Any]]:
        """The current per-port VSI table."""
        return json.loads((self.state / "table.json").read_text())

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float,
                   what: str) -> dict[str, Any]:
        """The first logged event matching ``predicate``, waiting up to ``timeout`` seconds."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [e for e in self.events() if predicate(e)]
            return bool(found)

        self.daemon.wait_for(check, timeout, what)
        return found[0]

    def stop(self) -> None:
        self.daemon.stop()


class SwitchTap(SwitchPeer):
    """A ``--tap`` process on ``ifaces`` (see the module docstring): :meth:`table` shows what the bridge
    on those ports holds.  Start it before the bridge answers anything."""

    def __init__(self, netns: Netns, ifaces: Sequence[str], state_dir: Path) -> None:
        super().__init__(netns, ifaces, state_dir, extra_args=["--tap"])


if __name__ == "__main__":
    sys.exit(main())
