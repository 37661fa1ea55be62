"""The index of recorded segments.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "recording_segments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=False),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("codec", sa.String(length=64), nullable=False),
        sa.Column("audio", sa.String(length=32), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("recovered", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path", name="uq_recording_segments_path"),
    )
    op.create_index(
        "ix_recording_segments_camera_start", "recording_segments", ["camera_id", "stream", "start_ms"]
    )
    op.create_index(op.f("ix_recording_segments_end_ms"), "recording_segments", ["end_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_recording_segments_end_ms"), table_name="recording_segments")
    op.drop_index("ix_recording_segments_camera_start", table_name="recording_segments")
    op.drop_table("recording_segments")
