"""A record's keypad presses and model reconnects as admin-API data (pure, no I/O).

Owns the JSON shape of the ``dtmf`` and ``reconnect`` timeline entries of
``GET /calls/{id}`` (the console's call page shows them as they are) and of its
``model_sessions`` list. It must not read the database or a live call: ``bridge.admin``
gives it the record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.store.records import CallRecord


def keypad_and_reconnect_entries(record: CallRecord) -> list[dict[str, Any]]:
    """Timeline entries (``t`` in seconds since the call started, like the others)."""
    origin = record.started_at

    def at(when: datetime) -> float:
        return round((when - origin).total_seconds(), 3)

    entries: list[dict[str, Any]] = [
        {
            "t": at(press.at),
            "kind": "dtmf",
            "text": None,
            "truncated": False,
            "latency_ms": None,
            "detail": {"digit": press.digit},
        }
        for press in record.dtmf_presses
    ]
    for lost in record.model_sessions:
        detail: dict[str, Any] = {"reason": lost.reason}
        if lost.at is None:
            detail["replaced"] = "no: the call ended first"
        else:
            detail |= {
                "session": lost.session,
                "replayed_items": lost.replayed,
                "held_audio_ms": lost.held_ms,
                "gap_ms": round((lost.at - lost.lost_at).total_seconds() * 1000),
            }
        entries.append(
            {
                "t": at(lost.lost_at),
                "kind": "reconnect",
                "text": None,
                "truncated": False,
                "latency_ms": None,
                "detail": detail,
            }
        )
    return entries


def model_sessions(record: CallRecord) -> list[dict[str, Any]]:
    """Each model session lost during the call and its replacement, in order."""
    return [
        {
            "lost_at": lost.lost_at.isoformat(),
            "reason": lost.reason,
            "reconnected_at": None if lost.at is None else lost.at.isoformat(),
            "session": lost.session,
            "replayed_items": lost.replayed,
            "held_audio_ms": lost.held_ms,
        }
        for lost in record.model_sessions
    ]
