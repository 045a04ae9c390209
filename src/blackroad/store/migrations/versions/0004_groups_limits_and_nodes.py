"""Groups with model access, limits on users and keys, and the node that served a request."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_groups_limits_and_nodes"
down_revision = "0003_request_caller"

LIMITS = ("rpm", "tpm", "max_concurrent", "daily_tokens", "monthly_tokens")


def upgrade() -> None:
    op.add_column("requests", sa.Column("node", sa.String(128)))
    op.create_index("ix_requests_node", "requests", ["node"])
    for table in ("users", "api_keys"):
        for limit in LIMITS:
            op.add_column(table, sa.Column(limit, sa.Integer))
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("models", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "group_members",
        sa.Column(
            "group_id",
            sa.Integer,
            sa.ForeignKey("groups.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        ),
    )
