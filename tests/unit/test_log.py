"""Log lines: one fact per line whatever a guest's name or an error text holds (escaped, for syslog and the
file target alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hooks.log import EventLog, Sink, escape


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web-01", "web-01"),
        ("vm\nINFO forged", "vm\\nINFO forged"),
        ("a\r\tb", "a\\r\\tb"),
        ("\x1b[2K\x00\x7f", "\\x1b[2K\\x00\\x7f"),
        ("x\u2028y\x85z", "x\\u2028y\\x85z"),
        ("grüße ✓", "grüße ✓"),  # printable non-ASCII stays readable
    ],
)
def test_escape(text: str, expected: str) -> None:
    assert escape(text) == expected


def test_file_target_gets_one_line_per_fact(tmp_path: Path) -> None:
    path = tmp_path / "hook.log"
    log = EventLog(Sink(log_file=str(path)), guest="vm\n2026-01-01 00:00:00,000 [1] INFO guest=forged", op="x")
    log.error("cause: %s", "line one\nline two")
    (line,) = path.read_text().splitlines()
    assert "guest=vm\\n2026-01-01" in line and line.endswith("cause: line one\\nline two")
