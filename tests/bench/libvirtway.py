"""libvirt's way with a switch-initiated de-association, emulated for the side-by-side benchmark.

libvirtd makes a VSI with its own netlink listener's port in ``nlmsg_pid``; when lldpad's notice that the
VSI ended arrives, it sends the ASSOCIATE once more and ignores the result (no retry, no backoff).  This
process does the same with the project's netlink codec: ``python libvirtway.py JSON`` (the VSI's fields)
makes the VSI, prints ``ready``, waits for the notice, re-sends one ASSOCIATE and prints one JSON line
(``notice``/``resent`` times, ``ok``), then exits.  Run inside the lab host's network namespace."""

from __future__ import annotations

import json
import select
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vdp.qbg.netlink import LldpadClient, VsiRequest
from vdp.qbg.session import QbgSession, find_lldpad_pid
from vdp.rtsocket import RouteSocket
from vdp.wire import netlink as nlmsg


def _client(session: QbgSession, port_id: int) -> LldpadClient:
    return LldpadClient(lldpad_pid=find_lldpad_pid(), port_id=port_id, clif=session.peek)


def main() -> int:
    spec = json.loads(sys.argv[1])
    wait = float(spec.get("wait", 30.0))
    req = VsiRequest(
        ifname=spec["ifname"],
        mac=spec["mac"],
        vlan=int(spec["vlan"]),
        vsi_type=nlmsg.VsiType(11, 1193047, 2),
        instance=uuid.UUID(spec["instance"]),
        request=nlmsg.ASSOCIATE,
    )
    with RouteSocket() as listener, QbgSession(exchange_timeout=10.0) as session:
        with _client(session, listener.own_port_id) as client:
            assert client.submit([req])[0].ok, "the first ASSOCIATE"
        print("ready", flush=True)
        end = time.monotonic() + wait
        notice = None
        while notice is None and time.monotonic() < end:
            ready, _, _ = select.select([listener._sock], [], [], end - time.monotonic())
            if not ready:
                break
            data = listener._sock.recv(65536)
            for hdr, msg in nlmsg.split_messages(data):
                if hdr.type != nlmsg.RTM_SETLINK:
                    continue
                for port in nlmsg.decode_ports(msg):
                    if port.instance == req.instance and port.request == nlmsg.DISASSOCIATE:
                        notice = time.time()
        if notice is None:
            print(json.dumps({"notice": None}), flush=True)
            return 1
        with _client(session, listener.own_port_id) as client:  # one blind re-send
            result = client.submit([req])[0]
        print(json.dumps({"notice": notice, "resent": time.time(), "ok": result.ok}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
