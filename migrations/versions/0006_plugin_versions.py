"""plugin_state.versions: each version a server last saw of a plugin, so `xcore plugin list` can show failed ones

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plugin_state") as table:
        table.add_column(sa.Column("versions", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("plugin_state") as table:
        table.drop_column("versions")
