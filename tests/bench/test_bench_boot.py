"""Benchmark: what hooks/boot.py's start-up tricks buy, and the code before this layout next to it.

Side by side in one run, rounds interleaved, medians of a 4-port ``prepare begin`` (start) through real
lldpad, exec'd through the entry's shebang as libvirt does (the set-up of tests/bench/test_bench_prepare.py):

- ``tricks``     the entry as libvirt runs it,
- ``no tricks``  the same with ``VDP_HOOKS_NO_TRICKS=1`` (site.main(), plain imports, ordinary exit),
- ``before``     only with ``VDP_HOOKS_BENCH_BEFORE=<commit>``: that commit's tree (``git archive``), its
                 own entry and code, on the same lab host.

Asserted: the tricks make the hook at least 1.25x faster than without them (measured 1.40-1.50x on a
loaded 2-core machine while the netlink codec still skipped pyroute2's __init__ on its own, before that
moved to hooks/boot.py, which the off switch turns off), and (with ``before``) the entry costs at most
1.15x what the commit's did.

Run: ``python3 -m pytest -m bench -s tests/bench/test_bench_boot.py``
     (``VDP_HOOKS_BENCH_BEFORE=f114f98`` in front for the before/after comparison)
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from tests.bench.test_bench_prepare import ROUNDS, _bench_host, _four_ports, _median_ms
from tests.lab.harness.hookrun import ENTRY, HookHost
from tests.lab.harness.vdplab import VdpLab

pytestmark = [pytest.mark.bench, pytest.mark.lab]

REPO = Path(ENTRY).parents[1]


def _tree_of(commit: str, into: Path) -> Path:
    """The entry of ``commit``'s tree, extracted under ``into`` (readable from the lab host: the same /)."""
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into)
    return into / "etc-libvirt-hooks" / "qemu"


def _timed(host: HookHost, entry: str, xml: str, extra: dict[str, str]) -> float:
    start = time.monotonic()
    proc = host.runner([entry, "vm", "prepare", "begin", "-"], input=xml.encode(), env={**host.env(), **extra},
                       timeout=60)
    seconds = time.monotonic() - start
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr
    return seconds


def test_prepare_begin_with_and_without_the_start_up_tricks(tmp_path: Path) -> None:
    variants: dict[str, tuple[str, dict[str, str]]] = {
        "tricks": (str(ENTRY), {}),
        "no tricks": (str(ENTRY), {"VDP_HOOKS_NO_TRICKS": "1"}),
    }
    before = os.environ.get("VDP_HOOKS_BENCH_BEFORE")
    if before:
        variants["before"] = (str(_tree_of(before, tmp_path / "before")), {})
    samples: dict[str, list[float]] = {name: [] for name in variants}
    with VdpLab(tmp_path / "lab", uplinks=2) as lab:
        host = _bench_host(lab, tmp_path / "host")
        for i in range(ROUNDS):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:
                entry, extra = variants[name]
                xml = _four_ports(str(uuid.uuid4()))
                samples[name].append(_timed(host, entry, xml, extra))
                assert host.hook(xml, "release", "end").rc == 0
    ms = {name: _median_ms(s) for name, s in samples.items()}
    lines = [f"  {name:<9} {value:6.1f} ms" for name, value in ms.items()]
    print(f"\nprepare begin (start), 4 ports, {ROUNDS} interleaved rounds, median exec to exit:\n" + "\n".join(lines)
          + f"\n  no tricks / tricks {ms['no tricks'] / ms['tricks']:.2f}x"
          + (f", tricks / before {ms['tricks'] / ms['before']:.3f}x ({before})" if before else ""))
    assert ms["no tricks"] / ms["tricks"] >= 1.25, "the start-up tricks no longer pay for themselves"
    if before:
        assert ms["tricks"] / ms["before"] <= 1.15, f"slower than {before}"
