"""roles.changed_by_rank: the rank of whoever last created or changed a role, so a lower rank cannot undo it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("roles") as table:
        table.add_column(sa.Column("changed_by_rank", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("roles") as table:
        table.drop_column("changed_by_rank")
