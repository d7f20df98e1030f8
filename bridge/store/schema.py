"""The call-records schema as SQLAlchemy Core tables, and records to rows and back.

Owns the table definitions the queries use (``call_records``: one row per call, with its
barge-ins and tool calls as JSON; ``call_turns``: one row per utterance) and the mapping
between ``CallRecord`` and rows. The tables the database actually has are built by the
Alembic migrations (``bridge/store/migrations``), which must not import this module:
a migration is frozen once released. ``tests/store`` checks the two agree.

It must not open connections (``bridge.store.db``) nor build records from calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from bridge.store.records import (
    DIRECTIONS,
    ROLES,
    BargeInRecord,
    CallRecord,
    DtmfPress,
    ModelReconnect,
    ResponseLatency,
    TokenUsage,
    ToolCallRecord,
    Turn,
)

VERSION_TABLE = "call_records_version"
END_REASON_CHARS = 500


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases (SQLite keeps no offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a UTC-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

calls = sa.Table(
    "call_records",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("leg", sa.String(32), nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("agent", sa.String(128), nullable=False),
    sa.Column("from_masked", sa.String(256), nullable=False),
    sa.Column("to_masked", sa.String(256), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("answered_at", UTCDateTime(), nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("end_reason", sa.String(END_REASON_CHARS), nullable=True),
    sa.Column("dtmf", sa.String(256), nullable=False),
    sa.Column("input_tokens", sa.BigInteger(), nullable=False),
    sa.Column("output_tokens", sa.BigInteger(), nullable=False),
    sa.Column("total_tokens", sa.BigInteger(), nullable=False),
    sa.Column("reconnects", sa.Integer(), nullable=False),
    sa.Column("barge_ins", sa.JSON(), nullable=False),
    sa.Column("tool_calls", sa.JSON(), nullable=False),
    sa.Column("latencies", sa.JSON(), nullable=True),  # since 0002; NULL in older rows
    sa.Column("dtmf_presses", sa.JSON(), nullable=True),  # since 0003; NULL in older rows
    sa.Column("model_sessions", sa.JSON(), nullable=True),  # since 0003; NULL in older rows
    sa.Index("ix_call_records_started_at", "started_at"),
    sa.Index("ix_call_records_agent_started_at", "agent", "started_at"),
)

turns = sa.Table(
    "call_turns",
    metadata,
    sa.Column(
        "call_id",
        sa.String(128),
        sa.ForeignKey("call_records.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("truncated", sa.Boolean(), nullable=False),
    sa.Column("heard_ms", sa.Integer(), nullable=True),
)


def call_row(record: CallRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "leg": record.leg,
        "direction": record.direction,
        "agent": record.agent,
        "from_masked": record.from_,
        "to_masked": record.to,
        "started_at": record.started_at,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "end_reason": None if record.end_reason is None else record.end_reason[:END_REASON_CHARS],
        "dtmf": record.dtmf,
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "total_tokens": record.usage.total_tokens,
        "reconnects": record.reconnects,
        "barge_ins": [
            {"at": b.at.isoformat(), "trigger": b.trigger, "audio_end_ms": b.audio_end_ms}
            for b in record.barge_ins
        ],
        "tool_calls": [
            {
                "name": c.name,
                "latency_ms": c.latency_ms,
                "outcome": c.outcome,
                "at": None if c.at is None else c.at.isoformat(),
            }
            for c in record.tool_calls
        ],
        "latencies": [{"at": x.at.isoformat(), "ms": x.ms} for x in record.latencies],
        "dtmf_presses": [{"at": p.at.isoformat(), "digit": p.digit} for p in record.dtmf_presses],
        "model_sessions": [
            {
                "lost_at": m.lost_at.isoformat(),
                "reason": m.reason,
                "at": _iso(m.at),
                "session": m.session,
                "replayed": m.replayed,
                "held_ms": m.held_ms,
            }
            for m in record.model_sessions
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def turn_row(call_id: str, seq: int, turn: Turn) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "seq": seq,
        "role": turn.role,
        "text": turn.text,
        "started_at": turn.started_at,
        "truncated": turn.truncated,
        "heard_ms": turn.heard_ms,
    }


def record_from_row(row: RowMapping, call_turns: Sequence[Turn]) -> CallRecord:
    direction = row["direction"]
    if direction not in DIRECTIONS:
        raise ValueError(f"call {row['id']}: unknown direction {direction!r}")
    return CallRecord(
        id=row["id"],
        leg=row["leg"],
        direction=direction,
        agent=row["agent"],
        from_=row["from_masked"],
        to=row["to_masked"],
        started_at=row["started_at"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
        turns=tuple(call_turns),
        barge_ins=tuple(
            BargeInRecord(datetime.fromisoformat(b["at"]), b["trigger"], b["audio_end_ms"])
            for b in row["barge_ins"]
        ),
        tool_calls=tuple(
            ToolCallRecord(
                c["name"],
                float(c["latency_ms"]),
                c["outcome"],
                None if c["at"] is None else datetime.fromisoformat(c["at"]),
            )
            for c in row["tool_calls"]
        ),
        dtmf=row["dtmf"],
        usage=TokenUsage(row["input_tokens"], row["output_tokens"], row["total_tokens"]),
        reconnects=row["reconnects"],
        latencies=tuple(
            ResponseLatency(datetime.fromisoformat(x["at"]), float(x["ms"]))
            for x in row["latencies"] or ()
        ),
        dtmf_presses=tuple(
            DtmfPress(datetime.fromisoformat(p["at"]), p["digit"])
            for p in row["dtmf_presses"] or ()
        ),
        model_sessions=tuple(
            ModelReconnect(
                datetime.fromisoformat(m["lost_at"]),
                m["reason"],
                _when(m["at"]),
                m["session"],
                int(m["replayed"]),
                int(m["held_ms"]),
            )
            for m in row["model_sessions"] or ()
        ),
    )


def turn_from_row(row: RowMapping) -> Turn:
    role = row["role"]
    if role not in ROLES:
        raise ValueError(f"call {row['call_id']}: unknown turn role {role!r}")
    return Turn(role, row["text"], row["started_at"], bool(row["truncated"]), row["heard_ms"])
