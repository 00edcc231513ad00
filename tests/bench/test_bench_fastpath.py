"""Benchmark: the common case (a guest with nothing for us) against a bare interpreter start.

Side by side in one run, interleaved, on the same real interpreter binary (symlinks and venv shims resolved):
  entry     the hook entry for ``prepare begin`` of a realistic ~4.7 KiB domain XML (tests/data/plain.xml: no
            metadata of ours, no ``<virtualport>``), exec'd as libvirt does: the file itself through its
            shebang (``/usr/bin/python3 -S``) when that is this interpreter, else ``REAL_PYTHON -S ENTRY``
  baseline  ``REAL_PYTHON -c pass`` with the same stdin and environment
Median wall time per exec; the entry must cost at most 1.5x the baseline.

Run: ``python3 -m pytest -m bench -s tests/bench/test_bench_fastpath.py``
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "etc-libvirt-hooks" / "qemu"
XML = (REPO / "tests" / "data" / "plain.xml").read_bytes()
ROUNDS = 40
LIMIT = 1.5


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=XML, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b""), (argv, proc)
    return elapsed


@pytest.mark.bench
def test_fast_path_costs_at_most_1_5x_a_bare_interpreter(tmp_path: Path) -> None:
    real_python = os.path.realpath(sys.executable)
    shebang_python = os.path.realpath("/usr/bin/python3") if os.path.exists("/usr/bin/python3") else None
    if shebang_python == real_python and os.access(ENTRY, os.X_OK):
        entry_argv = [str(ENTRY), "web-frontend-03", "prepare", "begin", "-"]
        how = f"{ENTRY} (shebang /usr/bin/python3 -S -> {real_python})"
    else:
        entry_argv = [real_python, "-S", str(ENTRY), "web-frontend-03", "prepare", "begin", "-"]
        how = f"{real_python} -S {ENTRY}"
    baseline_argv = [real_python, "-c", "pass"]
    env = {
        "LC_ALL": "C",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "VDP_HOOKS_CONFIG": str(tmp_path / "absent.conf"),
        "VDP_HOOKS_STATE_DIR": str(tmp_path / "state"),
    }
    for argv in (entry_argv, baseline_argv):  # warm the page cache; not counted
        _time(argv, env)
    entry_times: list[float] = []
    baseline_times: list[float] = []
    for i in range(ROUNDS):
        # Interleaved, alternating which goes first, so drift and caches hit both alike.
        pair = ((entry_argv, entry_times), (baseline_argv, baseline_times))
        for argv, sink in pair if i % 2 == 0 else reversed(pair):
            sink.append(_time(argv, env))
    entry_ms = statistics.median(entry_times) * 1000
    baseline_ms = statistics.median(baseline_times) * 1000
    ratio = entry_ms / baseline_ms
    print(
        f"\nfast path, {ROUNDS} interleaved rounds, median wall time per exec:\n"
        f"  entry     {entry_ms:7.2f} ms  {how} web-frontend-03 prepare begin - < tests/data/plain.xml "
        f"({len(XML)} bytes)\n"
        f"  baseline  {baseline_ms:7.2f} ms  {real_python} -c pass\n"
        f"  ratio     {ratio:7.3f} (limit {LIMIT})\n"
        f"  entry min/max {min(entry_times) * 1000:.2f}/{max(entry_times) * 1000:.2f} ms, "
        f"baseline min/max {min(baseline_times) * 1000:.2f}/{max(baseline_times) * 1000:.2f} ms"
    )
    assert ratio <= LIMIT, f"the fast path costs {ratio:.2f}x a bare interpreter start (limit {LIMIT}x)"
