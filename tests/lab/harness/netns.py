"""Network namespaces, veth pairs and daemons confined to a private mount namespace.

Daemons get their own tmpfs on /run and /dev/shm (lldpad keeps state in POSIX shm and writes
/run/lldpad.pid; libvirtd owns /run/libvirt), so nothing of the host's leaks in or out.  Processes are
tracked and stopped by pid only.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["Daemon", "Netns", "unique_suffix", "veth_pair"]


def unique_suffix() -> str:
    """A short suffix so concurrent labs on one machine never collide (names stay <= 15 chars)."""
    return secrets.token_hex(2)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Netns:
    """A network namespace made by this lab; deleted on close (with every interface still inside it).

    ``setup`` (optional) finishes it (links, addresses); when that or bringing ``lo`` up fails, the
    namespace is deleted before the error propagates: a lab whose set-up fails leaves no namespace."""

    def __init__(self, name: str, setup: Callable[[Netns], object] | None = None) -> None:
        self.name = name
        _ip("netns", "add", name)
        try:
            self.run(["ip", "link", "set", "lo", "up"])
            if setup is not None:
                setup(self)
        except BaseException:
            self.close()
            raise

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.argv(argv), check=check, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def veth_pair(a: Netns, a_name: str, b: Netns, b_name: str, *, up: bool = True) -> None:
    """A veth pair with one end in each namespace."""
    _ip("link", "add", a_name, "netns", a.name, "type", "veth", "peer", "name", b_name, "netns", b.name)
    if up:
        a.run(["ip", "link", "set", a_name, "up"])
        b.run(["ip", "link", "set", b_name, "up"])


# The private-mount wrapper: tmpfs on /run and /dev/shm, then the extra shell lines, then exec the daemon.
_PRIVATE_MOUNTS = "mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/lock && mount -t tmpfs tmpfs /dev/shm"


class Daemon:
    """A process in ``netns`` and in a private mount namespace, tracked and stopped by pid.

    ``setup`` is extra shell run inside the new mount namespace before exec (bind mounts and the like).
    ``foreground`` daemons must not fork; the pid we keep is the process itself (``exec`` keeps it).
    """

    def __init__(
        self,
        netns: Netns,
        argv: Sequence[str],
        *,
        log: Path,
        setup: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.netns = netns
        script = _PRIVATE_MOUNTS + (f" && {setup}" if setup else "") + ' && exec "$@"'
        self._log = open(log, "ab")  # noqa: SIM115 - kept open for the daemon's lifetime
        self.proc = subprocess.Popen(
            netns.argv(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "daemon", *argv]),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        # `ip netns exec` and `unshare` exec in turn, so this pid ends up being the daemon itself.
        self.pid = self.proc.pid

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run in this daemon's network and mount namespaces (sees its /run)."""
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", f"--mount=/proc/{self.pid}/ns/mnt", "--", *argv]

    def run(self, argv: Sequence[str], *, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.nsenter_argv(argv), check=check, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; only this pid."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def wait_for(self, predicate: object, timeout: float, what: str) -> None:
        """Poll ``predicate()`` until true; raise naming ``what`` on timeout or if the daemon died."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"{what}: daemon {self.pid} exited with {self.proc.returncode}")
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise TimeoutError(f"{what}: not within {timeout} s")
