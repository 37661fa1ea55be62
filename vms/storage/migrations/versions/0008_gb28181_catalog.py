"""Catalog subscriptions of the superior platforms and the catalog each platform was told.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "gb28181_subscriptions",
        sa.Column("platform", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("local_tag", sa.String(length=64), nullable=False),
        sa.Column("remote_tag", sa.String(length=128), nullable=False),
        sa.Column("remote_uri", sa.Text(), nullable=False),
        sa.Column("route", sa.Text(), nullable=False),
        sa.Column("sn", sa.BigInteger(), nullable=False),
        sa.Column("cseq", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "call_id"),
    )
    op.create_table(
        "gb28181_catalog",
        sa.Column("platform", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.String(length=20), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "channel_id"),
    )


def downgrade() -> None:
    op.drop_table("gb28181_catalog")
    op.drop_table("gb28181_subscriptions")
