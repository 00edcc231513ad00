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
from typing import Any

from .vdplab import VdpLab

__all__ = ["ENTRY", "HookHost", "HookResult"]

ENTRY = str(Path(__file__).resolve().parents[3] / "etc-libvirt-hooks" / "qemu")


@dataclass(frozen=True)
class HookResult:
    rc: int
    stdout: bytes
    stderr: str
    seconds: float


class HookHost:
    """One lab host as seen by the hook: its config file, state directory and log file."""

    def __init__(self, lab: VdpLab, host: str, workdir: Path, *, uplinks: dict[str, str], extra: str = "") -> None:
        self.lab = lab
        self.host = host
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
        }

    def hook(self, xml: str, op: str, subop: str, extra: str = "-", *, name: str = "vm") -> HookResult:
        start = time.monotonic()
        proc = self.lab.run_in_host(
            self.host, [sys.executable, ENTRY, name, op, subop, extra], input=xml.encode(), env=self.env(), timeout=120
        )
        return HookResult(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"), time.monotonic() - start)

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        root = str(Path(ENTRY).parents[1])
        return self.lab.run_in_host(
            self.host, [sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r}); from hooks.cli import main; sys.exit(main())", *args],
            env=self.env(),
        )

    def journal(self, guest_uuid: str) -> dict[str, Any] | None:
        path = self.state_dir / f"{guest_uuid}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def state_files(self) -> list[str]:
        return sorted(p.name for p in self.state_dir.iterdir()) if self.state_dir.exists() else []
