"""The agent's published address: ``STATE_DIR/agent.json``, so hooks can name it as lldpad's listener.

The agent (``vdp-hooks agent``) writes ``{"pid", "port_id", "start", "netns"}`` atomically when its netlink
socket is bound and removes it when it stops.  A hook reads it for every 802.1Qbg request it sends and puts
``port_id`` into ``nlmsg_pid``, so lldpad's later notifications about that VSI (de-associated by the switch,
keep-alive lost) reach the agent instead of a hook process that has long exited.

A file left by a killed agent must never divert notifications into the void, so the file counts only if
its process still runs (same pid *and* the same start time: pids are reused) in the reader's network
namespace (netlink port ids are per namespace).  Anything else means "no agent": the hook then behaves
exactly as without one.  Cheap on purpose (one small read, one /proc read): it runs on the hook's request
path, never on the fast path.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

__all__ = [
    "AGENT_FILE",
    "UNIT",
    "agent_info",
    "agent_port",
    "manage_unit",
    "publish",
    "stalled",
    "status_lines",
    "withdraw",
]

AGENT_FILE = "agent.json"

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
# Any: the agent file is a JSON document.
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_MAX_READ = 65536  # far above what the agent writes (~5 KiB with 20 guests queued)


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): tells a reused pid from the original."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _netns() -> str:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return ""


def publish(state_dir: str, port_id: int, status: Mapping[str, Any] | None = None) -> str:
    """Write this process's file (atomically, mode 0600); returns its path.

    ``status``: the agent's view for ``vdp-hooks status`` (last reconcile, queued work), kept small (the
    agent lists at most 20 guests) since every hook request reads this file."""
    path = os.path.join(state_dir, AGENT_FILE)
    doc: dict[str, Any] = {"pid": os.getpid(), "port_id": port_id, "start": _start_time(os.getpid()), "netns": _netns()}
    if status:
        doc["status"] = dict(status)
        doc["updated"] = time.time()
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(doc).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return path


def withdraw(state_dir: str) -> None:
    """Remove the file if it is this process's (a newer agent's file stays)."""
    path = os.path.join(state_dir, AGENT_FILE)
    doc = _read(path)
    if doc is not None and doc.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(_MAX_READ))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def agent_info(state_dir: str) -> tuple[dict[str, Any] | None, str]:
    """(the live agent's record or None, why not) -- for ``vdp-hooks status`` and ``check``."""
    doc = _read(os.path.join(state_dir, AGENT_FILE))
    if doc is None:
        return None, "not running (no agent.json)"
    pid, port = doc.get("pid"), doc.get("port_id")
    if not isinstance(pid, int) or not isinstance(port, int) or pid <= 0 or not 0 < port < 2**32:
        return None, "not running (agent.json is malformed)"
    if _start_time(pid) is None or _start_time(pid) != doc.get("start"):
        return None, f"not running (agent.json names pid {pid}, which has exited)"
    if doc.get("netns") != _netns():
        return None, f"pid {pid} runs in another network namespace"
    return doc, f"running (pid {pid}, netlink port {port})"


def agent_port(state_dir: str) -> int | None:
    """The netlink port id for ``nlmsg_pid`` when an agent is alive here, else None (use your own)."""
    doc, _why = agent_info(state_dir)
    return int(doc["port_id"]) if doc is not None else None


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def status_lines(doc: Mapping[str, Any] | None, now: float | None = None) -> list[str]:
    """The agent's view for ``vdp-hooks status`` (indented lines under ``agent: ...``)."""
    status = (doc or {}).get("status")
    if not isinstance(status, dict):
        return []
    now = time.time() if now is None else now
    lines = []
    rec = status.get("reconcile")
    every = f"every {status.get('reconcile_interval', 0):g} s"
    if isinstance(rec, dict):
        ports = ", ".join(f"{n} {state}" for state, n in sorted(rec.get("ports", {}).items())) or "no ports"
        lines.append(f"  last reconcile: {_ago(now - float(rec.get('at', now)))} ({ports}); {every}")
        lines += [f"  drift: {line}" for line in rec.get("drift", [])]
        pending = {cause: n for cause, n in rec.get("pending", {}).items() if n}
        if pending:
            lines.append(
                "  pending records: " + ", ".join(f"{n} {c.replace('_', ' ')}" for c, n in sorted(pending.items()))
            )
    else:
        lines.append(f"  last reconcile: none yet; {every}")
    work = status.get("work", [])
    for job in work:
        failed = f", {job['failures']} failed attempt(s)" if job.get("failures") else ""
        why = "+".join(job.get("why", []))
        lines.append(
            f"  working on {job.get('guest') or '?'} {job.get('uuid')}: {why}{failed}, next in {job.get('next_in')} s"
        )
    if status.get("jobs", 0) > len(work):
        lines.append(f"  ... and {status['jobs'] - len(work)} more guest(s)")
    return lines


def stalled(doc: Mapping[str, Any], now: float | None = None) -> str | None:
    """Why a running agent looks stuck (no reconcile for 3 intervals and a minute), or None."""
    status = doc.get("status")
    if not isinstance(status, dict):
        return None
    rec = status.get("reconcile")
    interval = float(status.get("reconcile_interval") or 60)
    since = float(rec["at"]) if isinstance(rec, dict) else float(doc.get("updated") or 0)
    now = time.time() if now is None else now
    if since and now - since > 3 * interval + 60:
        return f"its last reconcile was {_ago(now - since)} (every {interval:g} s): see its log"
    return None


UNIT = "libvirt-vdp-hooks-agent.service"


def manage_unit(
    enable: bool, *, run_dir: str = "/run/systemd/system", systemctl: str = "systemctl"
) -> tuple[bool, str]:
    """``vdp-hooks enable``/``disable``: enable and start (or stop and disable) the agent's unit when systemd
    runs and the unit is installed.  (ok, what was done, for the user).  The packages never do this: the
    agent runs only where the admin enabled the product."""
    import subprocess

    if not os.path.isdir(run_dir):  # sd_booted(): how systemd tells that it is the init system
        what = "start 'vdp-hooks agent' under your service manager" if enable else "stop 'vdp-hooks agent' if it runs"
        return True, f"agent: systemd is not running here; {what}"
    try:
        shown = subprocess.run(
            [systemctl, "show", "--property=LoadState", "--value", UNIT],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"agent: cannot ask systemd about {UNIT}: {exc}"
    if shown.stdout.strip() in ("", "not-found"):
        return True, f"agent: {UNIT} is not installed; nothing to {'start' if enable else 'stop'}"
    argv = [systemctl, "enable" if enable else "disable", "--now", UNIT]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"agent: {' '.join(argv[1:])} failed: {exc}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return False, f"agent: systemctl {' '.join(argv[1:])} failed: {why[0]}"
    return True, f"agent: {UNIT} {'enabled and started' if enable else 'stopped and disabled'}"
