"""``vdp-hooks status``: the journals next to what the peers say now -> one model -> text or JSON.

The model is the JSON document (``vdp-hooks status --json`` prints it as it is, so scripts and the text
view read the same facts): the state directory, the emergency override, the agent, and per guest the
journal records, each with the feature's live view of it and whether the two disagree (drift).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from hooks.agentfile import status_lines
from hooks.errors import HookError
from hooks.feature import Feature
from hooks.journal import Journal, Record
from hooks.policy import read_emergency

TYPE_CHECKING = False  # typing costs milliseconds on every hook run; annotations are strings anyway
# Any: the journal data and the agent file are JSON.
if TYPE_CHECKING:
    from typing import Any, TypedDict

    # The model's shape, for the type checker only (at run time these are the plain dicts json prints).
    class RecordView(TypedDict):
        feature: str
        port: str
        kind: str
        state: str
        data: dict[str, Any]  # the feature's own journal data, as it wrote it
        error: str
        live: str
        drift: bool

    class GuestView(TypedDict, total=False):
        guest: str
        uuid: str
        incoming: bool
        records: list[RecordView]
        error: str  # instead of the three above when the journal cannot be read

    class EmergencyView(TypedDict):
        until: float
        reason: str

    class StatusView(TypedDict):
        state_dir: str
        emergency: EmergencyView | None
        guests: list[GuestView]
        drift: bool
        agent: dict[str, Any]  # hooks.agentfile's record of the agent, with "state"

__all__ = ["collect", "to_json", "to_text"]


def _live(feature: Callable[[str], Feature], name: str, records: list[Record]) -> dict[str, str]:
    try:
        return feature(name).live_state(records)
    except HookError as exc:
        return {r.key: f"unknown ({exc.one_line()})" for r in records}


def _records(journal_records: list[Record], feature: Callable[[str], Feature]) -> list[RecordView]:
    by_feature: dict[str, list[Record]] = {}
    for record in journal_records:
        by_feature.setdefault(record.feature, []).append(record)
    rows: list[RecordView] = []
    for name, recs in by_feature.items():
        live = _live(feature, name, recs)
        for record in recs:
            now = live.get(record.key, "")
            rows.append(
                {
                    "feature": record.feature,
                    "port": record.key,
                    "kind": record.kind,
                    "state": record.state,
                    "data": record.data,
                    "error": record.error,
                    "live": now,
                    # "ok ..." and "unknown (...)" are the live views that do not contradict the journal.
                    "drift": bool(now) and not str(now).startswith(("ok", "unknown")),
                }
            )
    return rows


def collect(store: Journal, feature: Callable[[str], Feature], agent: dict[str, Any]) -> StatusView:
    """The model: every guest's journal with the live state of its records (``feature(name)`` builds the
    configured feature that owns a record); ``agent`` as the agent file describes it."""
    guests: list[GuestView] = []
    for guest_uuid in store.guests():
        try:
            journal = store.peek(guest_uuid)
        except HookError as exc:
            guests.append({"uuid": str(guest_uuid), "error": exc.one_line()})
            continue
        if journal is None:
            continue
        guests.append(
            {
                "guest": journal.guest,
                "uuid": str(guest_uuid),
                "incoming": journal.incoming,
                "records": _records(list(journal.records), feature),
            }
        )
    emergency = read_emergency(store.state_dir)
    return {
        "state_dir": store.state_dir,
        "emergency": {"until": emergency.until, "reason": emergency.reason} if emergency else None,
        "guests": guests,
        "drift": any(r["drift"] for g in guests for r in g.get("records", [])),
        "agent": agent,
    }


def to_json(doc: StatusView) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)


def to_text(doc: StatusView) -> str:
    lines = [f"agent: {doc['agent']['state']}", *status_lines(doc["agent"])]
    emergency = doc["emergency"]
    if emergency:
        lines.append(f"EMERGENCY override until {time.ctime(emergency['until'])}: {emergency['reason']}")
    if not doc["guests"]:
        lines.append(f"no guest has anything set up by the hooks ({doc['state_dir']})")
    for g in doc["guests"]:
        lines.append(f"{g.get('guest', '?')} {g['uuid']}{' (incoming migration)' if g.get('incoming') else ''}")
        if "error" in g:
            lines.append(f"  ERROR {g['error']}")
        for r in g.get("records", []):
            summary = ", ".join(f"{k}={v}" for k, v in sorted(r["data"].items()) if k in ("uplink", "vlan", "request"))
            flag = "  DRIFT" if r["drift"] else ""
            live_text = f" live: {r['live']}" if r["live"] else ""
            err = f" error: {r['error']}" if r["error"] else ""
            head = f"  {r['feature']:<6} {r['port']:<18} {r['kind']:<14} {r['state']:<8}"
            lines.append(f"{head} {summary}{live_text}{err}{flag}")
    return "\n".join(lines)
