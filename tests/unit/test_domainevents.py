"""hooks.domainevents without libvirtd: the agent runs without libvirt events and says so (no python3-libvirt,
or ``[agent] libvirt_uri`` empty); the wake socket hands queued notes to the agent's loop.  With a real
libvirtd: tests/lab/test_agent_libvirt.py."""

from __future__ import annotations

import select
import sys
import uuid
from pathlib import Path

import pytest

from hooks.agent import agent_settings
from hooks.config import load_config
from hooks.domainevents import CONNECTED, LIFECYCLE, Listener, NotConnected, Note, open_listener
from hooks.feature import is_known_feature
from hooks.log import EventLog, Sink


def _log(tmp_path: Path) -> tuple[EventLog, Path]:
    path = tmp_path / "agent.log"
    return EventLog(Sink(log_file=str(path)), op="agent"), path


def _settings(tmp_path: Path, text: str) -> dict[str, object]:
    conf = tmp_path / "vdp-hooks.conf"
    conf.write_text(text)
    return agent_settings(load_config(str(conf), known_features=is_known_feature))


def test_default_uri_is_the_system_daemon_and_empty_turns_events_off(tmp_path: Path) -> None:
    assert _settings(tmp_path, "")["libvirt_uri"] == "qemu:///system"
    settings = _settings(tmp_path, "[agent]\nlibvirt_uri =\n")
    log, path = _log(tmp_path)
    assert open_listener(settings, log) is None
    assert "libvirt events off ([agent] libvirt_uri is empty)" in path.read_text()


def test_without_python3_libvirt_the_agent_says_events_are_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)  # what `import libvirt` meets on a host without it
    log, path = _log(tmp_path)
    assert open_listener({"libvirt_uri": "qemu:///system"}, log) is None
    text = path.read_text()
    assert "WARNING" in text and "libvirt events off: python3-libvirt is not installed" in text


def test_queued_notes_wake_the_loop_and_drain_in_order(tmp_path: Path) -> None:
    log, _ = _log(tmp_path)
    listener = Listener(object(), "test:///", log)  # never started: no libvirt needed for the queue
    try:
        assert select.select([listener], [], [], 0)[0] == []
        guest = uuid.uuid4()
        listener._post(Note(CONNECTED))
        listener._post(Note(LIFECYCLE, guest, "g1", 4, 1, "resumed (1)"))
        assert select.select([listener], [], [], 1)[0] == [listener]
        assert [(n.kind, n.uuid) for n in listener.drain()] == [(CONNECTED, None), (LIFECYCLE, guest)]
        assert select.select([listener], [], [], 0)[0] == [] and listener.drain() == []
        assert not listener.connected
        with pytest.raises(NotConnected):
            listener.running()
    finally:
        listener._wake_r.close()
        listener._wake_w.close()
