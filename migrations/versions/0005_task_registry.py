"""task_state: what the running server has registered, so `xcore tasks list` can show it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_state") as table:
        table.add_column(sa.Column("plugin_id", sa.String(40)))
        table.add_column(sa.Column("schedule", sa.String(100)))
        table.add_column(sa.Column("registered", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("task_state") as table:
        table.drop_column("registered")
        table.drop_column("schedule")
        table.drop_column("plugin_id")
