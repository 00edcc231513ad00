"""Run ``vdp-hooks agent`` inside a lab host (its network and mount namespaces, so it sees that host's
lldpad and pid file) with the hook's environment (HookHost, or an e2e host: E2EHost); started and stopped
by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["AgentProcess"]

ROOT = Path(__file__).resolve().parents[3]


class Namespaces(Protocol):
    """Where the agent runs (a LabHost, or a libvirtd's Daemon: the same host's namespaces)."""

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]: ...


class HookEnv(Protocol):
    """What the hook runs with there (HookHost, E2EHost): its environment and state directory."""

    @property
    def state_dir(self) -> Path: ...

    def env(self) -> dict[str, str]: ...


class AgentProcess:
    """The agent as its own process; the constructor returns once it has published its port id."""

    def __init__(self, lab_host: Namespaces, host: HookEnv, log: Path, *, timeout: float = 20.0) -> None:
        code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from hooks.cli import main; sys.exit(main(['agent']))"
        self.host = host
        self._log = open(log, "ab")  # noqa: SIM115 - the process's lifetime
        self.proc = subprocess.Popen(
            lab_host.nsenter_argv([sys.executable, "-c", code]),
            env=host.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid  # nsenter execs (no pid namespace): this is the agent's pid
        end = time.monotonic() + timeout
        while not self.published():
            if time.monotonic() > end:
                self.stop()
                raise TimeoutError(f"agent did not publish its port id within {timeout} s (see {log})")
            time.sleep(0.05)

    def published(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {self.proc.returncode}")
        path = self.host.state_dir / "agent.json"
        try:
            return bool(json.loads(path.read_text()).get("pid") == self.pid)
        except (OSError, ValueError):
            return False

    def cpu_seconds(self) -> float:
        """User + system CPU time the agent used so far."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self, key: str = "VmRSS") -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def stop(self) -> int:
        """SIGTERM by pid (SIGKILL after 15 s); the exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
