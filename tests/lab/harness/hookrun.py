"""Run the product's hook entry inside a lab host exactly as libvirt does: argv, XML on stdin, a stripped
environment (libvirt passes LC_ALL=C, PATH, HOME; the two VDP_HOOKS_* variables point into the lab)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .vdplab import VdpLab

#: runs argv with stdin bytes and an environment, somewhere in the lab; returns the finished process.
Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


def netns_runner(netns: str) -> Runner:
    """A runner for a plain network namespace (no private mount namespace needed)."""

    def run(
        argv: list[str], *, input: bytes, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ip", "netns", "exec", netns, *argv],
            input=input,
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    return run


__all__ = ["ENTRY", "HookHost", "HookResult", "netns_runner"]

ENTRY = str(Path(__file__).resolve().parents[3] / "etc-libvirt-hooks" / "qemu")


@dataclass(frozen=True)
class HookResult:
    rc: int
    stdout: bytes
    stderr: str
    seconds: float


class HookHost:
    """One lab host as seen by the hook: its config file, state directory and log file."""

    def __init__(
        self,
        lab: VdpLab | None,
        host: str,
        workdir: Path,
        *,
        uplinks: dict[str, str],
        extra: str = "",
        runner: Runner | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.lab = lab
        self.host = host
        if runner is None:
            assert lab is not None, "a HookHost needs a VdpLab or a runner"
            runner = lambda argv, **kw: lab.run_in_host(host, argv, **kw)  # noqa: E731
        self.runner = runner
        self.extra_env = dict(extra_env or {})
        self.state_dir = workdir / f"state-{host}"
        self.log_file = workdir / f"hook-{host}.log"
        self.config = workdir / f"vdp-hooks-{host}.conf"
        self.write_config(uplinks=uplinks, extra=extra)

    def write_config(self, *, uplinks: dict[str, str], extra: str = "") -> None:
        mapping = "\n".join(f"{k} = {v}" for k, v in uplinks.items())
        text = f"""
            [hooks]
            syslog = no
            log_file = {self.log_file}
            debug = yes
            exchange_timeout = 5
            invocation_timeout = 15
            [uplinks]
            {mapping}
            """
        self.config.write_text(textwrap.dedent(text).replace("\n" + " " * 12, "\n") + textwrap.dedent(extra))

    def env(self) -> dict[str, str]:
        return {
            "LC_ALL": "C",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "VDP_HOOKS_CONFIG": str(self.config),
            "VDP_HOOKS_STATE_DIR": str(self.state_dir),
            **self.extra_env,
        }

    def hook(self, xml: str, op: str, subop: str, extra: str = "-", *, name: str = "vm") -> HookResult:
        start = time.monotonic()
        proc = self.runner(
            [sys.executable, ENTRY, name, op, subop, extra], input=xml.encode(), env=self.env(), timeout=120
        )
        return HookResult(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"), time.monotonic() - start)

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        root = str(Path(ENTRY).parents[1])
        code = f"import sys; sys.path.insert(0, {root!r}); from hooks.cli import main; sys.exit(main())"
        return self.runner([sys.executable, "-c", code, *args], input=b"", env=self.env(), timeout=120)

    def journal(self, guest_uuid: str) -> dict[str, Any] | None:
        path = self.state_dir / f"{guest_uuid}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def state_files(self) -> list[str]:
        """Files about guests in the state directory (the per-uplink lock files are shared and stay)."""
        if not self.state_dir.exists():
            return []
        return sorted(p.name for p in self.state_dir.iterdir() if not p.name.startswith("uplink-"))
