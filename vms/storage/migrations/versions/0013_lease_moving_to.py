"""A camera lease's hand-over in progress: the instance it is promised to.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("camera_leases", sa.Column("moving_to", sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column("camera_leases", "moving_to")
