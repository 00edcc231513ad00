"""Unit-test helpers: exec the real hook entry the way libvirt does, with a tmp config and state directory.

``hookenv`` (fixture) gives a :class:`HookEnv`: it writes a config enabling the test plugin features
``rec1``/``rec2`` (``tests/plugins``, found through their entry points), runs
``[sys.executable, ENTRY, NAME, OP, SUBOP, EXTRA]`` with the domain XML on stdin and a stripped environment
like libvirtd's, and checks the entry's output contract on every run: stdout empty, stderr exactly one line
on a veto and empty otherwise.  ``domain_xml`` / ``hooks_md`` / ``port`` build domain XML.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "etc-libvirt-hooks" / "qemu"
PLUGINS = REPO / "tests" / "plugins"
DATA = REPO / "tests" / "data"
NS = "http://libvirt-vdp-hooks.org/xmlns"

# In-process tests (runner.run, feature lookup) find the test plugin the way the exec'd entry does.
if str(PLUGINS) not in sys.path:
    sys.path.append(str(PLUGINS))

MAC_A = "52:54:00:aa:00:02"
MAC_B = "52:54:00:aa:00:03"
MAC_C = "52:54:00:aa:00:04"

#: Operations that may veto, and those that must never fail.
BEGIN_HOOKS = [
    ("migrate", "begin"),
    ("restore", "begin"),
    ("prepare", "begin"),
    ("start", "begin"),
    ("started", "begin"),
]
NEVER_FAIL_HOOKS = [("reconnect", "begin"), ("stopped", "end"), ("release", "end")]


def interface(mac: str, *, type: str = "bridge", source: str = "br0", virtualport: str = "") -> str:
    """One ``<interface>``; ``type='direct'`` uses ``source`` as the device."""
    src = f"<source dev='{source}' mode='vepa'/>" if type == "direct" else f"<source bridge='{source}'/>"
    return f"""
    <interface type='{type}'>
      <mac address='{mac}'/>
      {src}
      {virtualport}
      <model type='virtio'/>
    </interface>"""


def port(
    mac: str,
    *,
    uplink: str | None = "lo",
    required: str | None = None,
    vlan: str | None = None,
    body: str = "<vdp:qbg managerid='11' typeid='1193047' typeidversion='2'/>",
    prefix: str = "vdp",
    attrs: str = "",
) -> str:
    """One ``<vdp:port>`` (``prefix`` renames ``vdp:`` everywhere, "" = default namespace)."""
    parts = [f"mac='{mac}'"]
    if uplink is not None:
        parts.append(f"uplink='{uplink}'")
    if vlan is not None:
        parts.append(f"vlan='{vlan}'")
    if required is not None:
        parts.append(f"required='{required}'")
    if attrs:
        parts.append(attrs)
    text = f"<vdp:port {' '.join(parts)}>{body}</vdp:port>"
    return _reprefix(text, prefix)


def _reprefix(text: str, prefix: str) -> str:
    return text.replace("<vdp:", f"<{prefix}:" if prefix else "<").replace("</vdp:", f"</{prefix}:" if prefix else "</")


def hooks_md(
    *ports: str, features: Mapping[str, str] | None = None, prefix: str = "vdp", version: str | None = None
) -> str:
    """Our ``<vdp:hooks>`` element (goes inside ``<metadata>``)."""
    decl = f"xmlns:{prefix}='{NS}'" if prefix else f"xmlns='{NS}'"
    feats = "".join(f"<vdp:feature name='{n}' required='{r}'/>" for n, r in (features or {}).items())
    ver = f" version='{version}'" if version is not None else " version='1'"
    body = _reprefix(f"<vdp:hooks {decl}{ver}>{feats}{''.join(ports)}</vdp:hooks>", prefix)
    return body


def domain_xml(
    *,
    name: str = "guest1",
    guest_uuid: str | uuid.UUID = "8f2e1a52-7c1d-4a57-9d0b-1b2c3d4e5f60",
    interfaces: Sequence[str] | None = None,
    metadata: str = "",
) -> bytes:
    """A plausible libvirt domain XML with ``interfaces`` (default: MAC_A, MAC_B on br0) and ``metadata``."""
    ifaces = interfaces if interfaces is not None else [interface(MAC_A), interface(MAC_B)]
    md = f"<metadata>{metadata}</metadata>" if metadata else ""
    return textwrap.dedent(
        f"""\
        <domain type='kvm' id='7'>
          <name>{name}</name>
          <uuid>{guest_uuid}</uuid>
          {md}
          <memory unit='KiB'>1048576</memory>
          <vcpu placement='static'>1</vcpu>
          <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            {''.join(ifaces)}
          </devices>
        </domain>
        """
    ).encode()


@dataclass
class Result:
    """One exec of the entry."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


def check_contract(result: Result) -> None:
    """What libvirt relies on, every single time: nothing on stdout, one stderr line iff veto."""
    assert result.stdout == b"", f"stdout must stay empty, got {result.stdout[:300]!r}"
    if result.returncode == 0:
        assert result.stderr == b"", f"exit 0 must be silent, stderr was {result.err!r}"
    else:
        assert result.returncode == 1, f"a veto exits 1, got {result.returncode}: {result.err!r}"
        lines = result.err.splitlines()
        assert len(lines) == 1 and result.err.endswith("\n"), f"a veto is exactly one stderr line: {result.err!r}"
        assert "Traceback" not in result.err
        assert lines[0].startswith("libvirt-vdp-hooks"), lines[0]


class HookEnv:
    """A host for the hook: config file, state directory and logs under ``tmp_path``."""

    def __init__(self, root: Path, entry: Path = ENTRY) -> None:
        self.root = root
        self.entry = entry
        self.state = root / "state"  # not created: the hook creates it when missing
        self.config = root / "vdp-hooks.conf"
        self.reclog = root / "rec.jsonl"
        self.hooklog = root / "hook.log"
        self.write_config()

    # ---------------------------------------------------------------- config
    def write_config(
        self,
        *,
        features: str = "rec1, rec2",
        hooks: Mapping[str, str] | None = None,
        rec1: Mapping[str, str] | None = None,
        rec2: Mapping[str, str] | None = None,
        extra: str = "",
        vdp_required: str | None = "no",
    ) -> None:
        """Config enabling the recorders.  ``[vdp] required = no`` because every declared port belongs to
        the ``vdp`` feature, which these tests do not enable (the recorders act on the same ports)."""
        lines = ["[hooks]", f"features = {features}", "syslog = no", f"log_file = {self.hooklog}"]
        settings = {"exchange_timeout": "2", "invocation_timeout": "10", **(hooks or {})}
        lines += [f"{k} = {v}" for k, v in settings.items()]
        if vdp_required is not None:
            lines += ["", "[vdp]", f"required = {vdp_required}"]
        for name, values in (("rec1", rec1), ("rec2", rec2)):
            lines += ["", f"[{name}]", f"log = {self.reclog}"]
            lines += [f"{k} = {v}" for k, v in (values or {}).items()]
        self.config.write_text("\n".join(lines) + "\n" + extra)

    # ---------------------------------------------------------------- running
    def env(self, **extra: str) -> dict[str, str]:
        """libvirtd's stripped environment plus our two overrides and the plugin on PYTHONPATH."""
        env = {
            "LC_ALL": "C",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "VDP_HOOKS_CONFIG": str(self.config),
            "VDP_HOOKS_STATE_DIR": str(self.state),
            "PYTHONPATH": str(PLUGINS),
        }
        env.update(extra)
        return env

    def argv(self, name: str, op: str, subop: str, extra: str = "-") -> list[str]:
        return [sys.executable, str(self.entry), name, op, subop, extra]

    def run(
        self,
        op: str,
        subop: str,
        xml: bytes,
        *,
        name: str = "guest1",
        extra: str = "-",
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        contract: bool = True,
    ) -> Result:
        argv = [sys.executable, str(self.entry), *args] if args is not None else self.argv(name, op, subop, extra)
        start = time.monotonic()
        proc = subprocess.run(
            argv, input=xml, capture_output=True, env=dict(env or self.env()), timeout=timeout, check=False
        )
        result = Result(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        if contract:
            check_contract(result)
        return result

    def popen(self, op: str, subop: str, xml: bytes, *, name: str = "guest1") -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            self.argv(name, op, subop),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
        )
        assert proc.stdin is not None
        proc.stdin.write(xml)
        proc.stdin.close()
        proc.stdin = None  # written and closed, as libvirt does; communicate() must not flush it again
        return proc

    # ---------------------------------------------------------------- looking
    def events(self, call: str | None = None) -> list[dict[str, Any]]:
        """The recorders' log, optionally only one kind of call (setup, intent, confirm, teardown)."""
        if not self.reclog.exists():
            return []
        found = [json.loads(line) for line in self.reclog.read_text().splitlines() if line.strip()]
        return [e for e in found if call is None or e["call"] == call]

    def teardowns(self) -> list[tuple[str, str, str]]:
        return [(e["feature"], e["key"], e["kind"]) for e in self.events("teardown")]

    def journal(self, guest_uuid: str | uuid.UUID) -> dict[str, Any] | None:
        path = self.state / f"{guest_uuid}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def records(self, guest_uuid: str | uuid.UUID) -> list[dict[str, Any]]:
        doc = self.journal(guest_uuid)
        return doc["records"] if doc else []

    def hook_log(self) -> str:
        return self.hooklog.read_text() if self.hooklog.exists() else ""


@pytest.fixture
def hookenv(tmp_path: Path) -> HookEnv:
    return HookEnv(tmp_path)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Background hook processes a test starts; killed (by pid) if the test leaves any running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
