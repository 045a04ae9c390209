"""Nodes that join with a token: join tokens, and each joined node's credential and last report."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_join_tokens_and_node_credentials"
down_revision = "0005_nodes"


def upgrade() -> None:
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("used_by", sa.String(128)),
    )
    op.add_column("nodes", sa.Column("credential_hash", sa.String(64)))
    op.add_column("nodes", sa.Column("stats", sa.JSON))
    # SQLite cannot add a UNIQUE column; a unique index is the same constraint.
    op.create_index("ix_nodes_credential_hash", "nodes", ["credential_hash"], unique=True)
