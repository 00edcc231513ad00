"""Record what lldptool/vdptool and lldpad exchange on lldpad's client interface (the golden samples of
``tests/golden/clif/lldpad11.json``, read by ``tests/unit/test_wire_clif.py``).

Run as root from the repository: ``.venv/bin/python -m tests.lab.harness.clifcapture tests/golden/clif/lldpad11.json``
(an interpreter with pyroute2: the lab harness imports the netlink codec).
It builds a one-host VdpLab (station lldpad on ``up0``, lldpad in the bridge role as the switch, EVB
negotiated), runs each tool command of :data:`COMMANDS` under ``strace -e trace=sendto,recvfrom -xx``
in the host's namespaces and keeps every datagram the tool sent to / received from lldpad, as text
(the client interface is ASCII).  Nothing here is used by the product.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.lab.harness.vdplab import VdpLab

INSTANCE = "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"
_VSI = ["-c", "mgrid2=0b", "-c", "typeid=1193047", "-c", f"uuid={INSTANCE}", "-c", "typeidver=2"]

#: (name, argv): what the product's codec builds and parses, in the order the product uses it.
COMMANDS: list[tuple[str, list[str]]] = [
    ("ping", ["lldptool", "-p"]),
    ("evb_local", ["lldptool", "-t", "-i", "up0", "-g", "ncb", "-V", "evb"]),
    ("evb_neighbour", ["lldptool", "-n", "-t", "-i", "up0", "-g", "ncb", "-V", "evb"]),
    ("evb_enabletx", ["lldptool", "-t", "-i", "up0", "-g", "ncb", "-V", "evb", "-c", "enableTx"]),
    ("evb_mode", ["lldptool", "-t", "-i", "up0", "-g", "ncb", "-V", "evb", "-c", "evbmode"]),
    ("table_empty", ["vdptool", "-i", "up0", "-t", "-V", "assoc"]),
    ("table_nosuch", ["vdptool", "-i", "nosuch", "-t", "-V", "assoc"]),
    ("assoc", ["vdptool", "-i", "up0", "-T", "-W", "-V", "assoc", "-c", "mode=assoc", *_VSI,
               "-c", "hints=to", "-c", "filter=0-52:54:00:aa:00:02"]),
    ("table_one", ["vdptool", "-i", "up0", "-t", "-V", "assoc"]),
    ("query_uuid", ["vdptool", "-i", "up0", "-t", "-V", "assoc", "-c", f"uuid={INSTANCE}"]),
    ("deassoc", ["vdptool", "-i", "up0", "-T", "-W", "-V", "deassoc", "-c", "mode=deassoc", *_VSI,
                 "-c", "hints=from", "-c", "filter=0-52:54:00:aa:00:02"]),
]

# sendto(3, "M0000...", 37, 0, NULL, 0) = 37   /   recvfrom(3, "R00...", 4096, 0, NULL, NULL) = 12
_CALL = re.compile(r'^(?:\[pid +\d+\] )?(sendto|recvfrom)\(\d+, "((?:\\x[0-9a-f]{2})*)"')


def _datagrams(trace: str) -> list[list[str]]:
    """``[direction, text]`` for every datagram in an strace log, in order (direction: sent / received)."""
    out = []
    for line in trace.splitlines():
        m = _CALL.match(line)
        if m:
            raw = bytes.fromhex(m.group(2).replace("\\x", ""))
            out.append(["sent" if m.group(1) == "sendto" else "received", raw.decode("ascii")])
    return out


def capture(workdir: Path) -> dict[str, Any]:
    with VdpLab(workdir, uplinks=1) as lab:
        exchanges = []
        for name, argv in COMMANDS:
            res = lab.run_in_host(None, ["strace", "-f", "-qq", "-xx", "-s", "8192", "-e", "trace=sendto,recvfrom",
                                         *argv], timeout=60)
            exchanges.append({"name": name, "argv": " ".join(argv), "rc": res.returncode,
                              "messages": _datagrams(res.stderr.decode("ascii", "replace"))})
    versions = {pkg: _package_version(pkg) for pkg in ("lldpad", "strace")}
    versions["kernel"] = platform.release()
    return {"format": "vdph-clif-1", "versions": versions,
            "how": "python3 -m tests.lab.harness.clifcapture (strace -e trace=sendto,recvfrom -xx around each tool)",
            "exchanges": exchanges}


def _package_version(pkg: str) -> str:
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True, check=False)
    return res.stdout.strip() or "unknown"


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="clifcapture-") as tmp:
        doc = capture(Path(tmp))
    # One exchange per line block, one datagram per line: reviewable in a diff.
    lines = [json.dumps({k: v for k, v in doc.items() if k != "exchanges"})[:-1] + ', "exchanges": [']
    for i, ex in enumerate(doc["exchanges"]):
        msgs = ",\n    ".join(json.dumps(m) for m in ex["messages"])
        head = json.dumps({k: v for k, v in ex.items() if k != "messages"})[:-1]
        lines.append(f' {head}, "messages": [\n    {msgs}]}}' + ("," if i < len(doc["exchanges"]) - 1 else ""))
    lines.append("]}")
    Path(argv[1]).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
