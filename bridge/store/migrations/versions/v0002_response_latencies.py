"""Add call_records.latencies: each answer's response latency (JSON, NULL before).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("call_records", sa.Column("latencies", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("call_records", "latencies")
