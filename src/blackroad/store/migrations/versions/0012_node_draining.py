"""Nodes can be drained: routed no new work, while what they run now finishes."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_node_draining"
down_revision = "0011_mcp_servers"


def upgrade() -> None:
    with op.batch_alter_table("nodes") as table:
        table.add_column(
            sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("nodes") as table:
        table.drop_column("draining")
