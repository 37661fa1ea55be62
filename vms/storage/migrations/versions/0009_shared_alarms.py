"""Alarms and their events, shared by every instance on PostgreSQL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", _ID, nullable=False),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("hall_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("texts", sa.Text(), nullable=False),
        sa.Column("informational", sa.Boolean(), nullable=False),
        sa.Column("resolves", sa.Text(), nullable=False),
        sa.Column("picture", sa.LargeBinary(), nullable=True),
        sa.Column("acked_by", sa.String(length=64), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alarms_camera_open", "alarms", ["camera_id", "kind", "cleared_at"])
    op.create_table(
        "alarm_events",
        sa.Column("seq", _ID, nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("hall_id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )


def downgrade() -> None:
    op.drop_table("alarm_events")
    op.drop_index("ix_alarms_camera_open", table_name="alarms")
    op.drop_table("alarms")
