"""Add call_records.dtmf_presses and model_sessions: each keypad press with its time, and
each model session lost and replaced (JSON, NULL before).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("call_records", sa.Column("dtmf_presses", sa.JSON(), nullable=True))
    op.add_column("call_records", sa.Column("model_sessions", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("call_records", "model_sessions")
    op.drop_column("call_records", "dtmf_presses")
