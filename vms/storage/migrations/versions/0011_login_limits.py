"""Failed-login counts and lockouts shared by the instances of one PostgreSQL database.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "login_limits",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column(
            "failures",
            postgresql.ARRAY(sa.DateTime(timezone=True)).with_variant(sa.JSON(), "sqlite"),
            nullable=False,
        ),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(op.f("ix_login_limits_expires_at"), "login_limits", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_limits_expires_at"), table_name="login_limits")
    op.drop_table("login_limits")
