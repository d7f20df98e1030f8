"""What a call leaves behind as it goes: its timeline events and its barge-ins.

Plain records, sans-I/O: the Call (``bridge.call``) appends them; observers (the demo's
timeline, the softphone's transcript, call records, metrics) read them. Nothing here
decides anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CallEvent:
    """One line of the call's timeline (for observers, tests and the simulator's report)."""

    t: float  # seconds since the call started
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class BargeIn:
    """One interruption."""

    t: float
    trigger: str  # "model", "local" or "client"
    item_id: str | None
    audio_end_ms: int | None
    confirmed: bool
