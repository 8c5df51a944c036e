"""task_state: paused tasks and their consecutive failures

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_state",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("auto_paused", sa.Boolean(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_state")
