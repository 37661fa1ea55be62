"""Cluster instances and camera leases.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_instances",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("http_url", sa.String(length=512), nullable=False),
        sa.Column("rtsp_url", sa.String(length=512), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("config_sections", sa.Text(), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "camera_leases",
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("camera_id"),
    )
    op.create_index("ix_camera_leases_owner", "camera_leases", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_camera_leases_owner", table_name="camera_leases")
    op.drop_table("camera_leases")
    op.drop_table("cluster_instances")
