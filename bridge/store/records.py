"""Call records: what one call was, as frozen, self-checking data.

Sans-I/O: no asyncio, no database, no clock. Owns the record types (``CallRecord`` with
its ``Turn``s, ``BargeInRecord``s, ``ToolCallRecord``s, ``ResponseLatency``s,
``DtmfPress``es, ``ModelReconnect``s and ``TokenUsage``) and
``truncate_text``, the agent's words cut to what the caller heard. Times are wall-clock
UTC and must be timezone-aware; phone numbers are stored masked.

It must not build records from a Call (``bridge.store.recorder``), touch the database
(``bridge.store.db``, ``bridge.store.schema``) or the writer task (``bridge.store.writer``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

Role = Literal["user", "assistant"]
Direction = Literal["inbound", "outbound"]
ROLES: tuple[Role, ...] = get_args(Role)
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)


def check_aware(name: str, value: datetime | None) -> None:
    """Refuse a naive datetime: a record's times are UTC-aware."""
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got {value!r}")


@dataclass(frozen=True, slots=True)
class Turn:
    """One utterance. ``truncated``: a barge-in cut the agent off; ``text`` is then what
    the caller heard (when the item's length was known) and ``heard_ms`` how much."""

    role: Role
    text: str
    started_at: datetime
    truncated: bool = False
    heard_ms: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"turn role must be one of {ROLES}, got {self.role!r}")
        check_aware("started_at", self.started_at)
        if self.truncated and self.role != "assistant":
            raise ValueError("only an assistant turn can be truncated")


@dataclass(frozen=True, slots=True)
class BargeInRecord:
    """The caller (or the client) interrupted the agent."""

    at: datetime
    trigger: str  # "model", "local" or "client"
    audio_end_ms: int | None  # what the caller had heard of the item; None: nothing playing

    def __post_init__(self) -> None:
        check_aware("at", self.at)


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    name: str
    latency_ms: float
    outcome: str  # "ok", "error", "timeout", ...
    at: datetime | None = None

    def __post_init__(self) -> None:
        check_aware("at", self.at)
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")


@dataclass(frozen=True, slots=True)
class ResponseLatency:
    """One answer: the caller stopped speaking, and ``ms`` later, at ``at``, the first
    agent audio of the answer was handed to the caller."""

    at: datetime
    ms: float

    def __post_init__(self) -> None:
        check_aware("at", self.at)
        if self.ms < 0:
            raise ValueError("ms must not be negative")


@dataclass(frozen=True, slots=True)
class DtmfPress:
    """A keypad digit the caller pressed, at ``at``."""

    at: datetime
    digit: str

    def __post_init__(self) -> None:
        check_aware("at", self.at)


@dataclass(frozen=True, slots=True)
class ModelReconnect:
    """The model session was lost at ``lost_at`` (for ``reason``) and replaced at ``at``
    by session number ``session`` (1 is the first), which was given ``replayed``
    conversation items and ``held_ms`` of caller audio held meanwhile. ``at`` is None
    (and the counts 0) when no new session came before the call ended."""

    lost_at: datetime
    reason: str
    at: datetime | None = None
    session: int | None = None
    replayed: int = 0
    held_ms: int = 0

    def __post_init__(self) -> None:
        check_aware("lost_at", self.lost_at)
        check_aware("at", self.at)
        if self.replayed < 0 or self.held_ms < 0:
            raise ValueError("replayed and held_ms must not be negative")


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens summed over the call's ``response.done`` events."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def __post_init__(self) -> None:
        if min(self.input_tokens, self.output_tokens, self.total_tokens) < 0:
            raise ValueError("token counts must not be negative")

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
        )

    @classmethod
    def from_realtime(cls, usage: Mapping[str, Any]) -> TokenUsage:
        """From a Realtime ``response.done`` ``usage`` object; junk counts as zero."""
        return cls(*(_count(usage.get(key)) for key in _USAGE_KEYS))


_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call, any leg. Times are wall-clock UTC; ``from_``/``to`` are masked."""

    id: str
    leg: str  # "phone", "softphone", ...
    direction: Direction
    agent: str
    from_: str
    to: str
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    turns: tuple[Turn, ...] = ()
    barge_ins: tuple[BargeInRecord, ...] = ()
    tool_calls: tuple[ToolCallRecord, ...] = ()
    dtmf: str = ""
    usage: TokenUsage = field(default_factory=TokenUsage)
    reconnects: int = 0
    latencies: tuple[ResponseLatency, ...] = ()  # per-turn response latency, in order
    dtmf_presses: tuple[DtmfPress, ...] = ()  # ``dtmf`` with times; empty in old rows
    model_sessions: tuple[ModelReconnect, ...] = ()  # each model session lost, in order

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a call record needs an id")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        for name in ("started_at", "answered_at", "ended_at"):
            check_aware(name, getattr(self, name))
        if self.reconnects < 0:
            raise ValueError("reconnects must not be negative")

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


_WORD = re.compile(r"\S+")


def truncate_text(text: str, heard_ms: int, total_ms: float) -> str:
    """The part of ``text`` the caller heard, if ``heard_ms`` of ``total_ms`` played.

    Speech time is taken as proportional to characters; a word counts as heard when the
    caller heard at least half of it, so the cut always falls between words.
    """
    if total_ms <= 0 or heard_ms >= total_ms:
        return text
    target = len(text) * max(heard_ms, 0) / total_ms
    end = 0
    for word in _WORD.finditer(text):
        if (word.start() + word.end()) / 2 > target:
            break
        end = word.end()
    return text[:end]
