"""Create call_records and call_turns.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "call_records",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("leg", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("from_masked", sa.String(256), nullable=False),
        sa.Column("to_masked", sa.String(256), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(500), nullable=True),
        sa.Column("dtmf", sa.String(256), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reconnects", sa.Integer(), nullable=False),
        sa.Column("barge_ins", sa.JSON(), nullable=False),
        sa.Column("tool_calls", sa.JSON(), nullable=False),
    )
    op.create_index("ix_call_records_started_at", "call_records", ["started_at"])
    op.create_index("ix_call_records_agent_started_at", "call_records", ["agent", "started_at"])
    op.create_table(
        "call_turns",
        sa.Column(
            "call_id",
            sa.String(128),
            sa.ForeignKey("call_records.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("heard_ms", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("call_turns")
    op.drop_index("ix_call_records_agent_started_at", "call_records")
    op.drop_index("ix_call_records_started_at", "call_records")
    op.drop_table("call_records")
