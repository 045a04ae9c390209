"""Placements: how many replicas of a model the fleet keeps on its nodes."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_placements"
down_revision = "0006_join_tokens_and_node_credentials"


def upgrade() -> None:
    op.create_table(
        "placements",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(256), nullable=False, unique=True),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
