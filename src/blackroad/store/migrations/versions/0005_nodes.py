"""Remote nodes: Ollama and OpenAI-compatible peers, with the models last discovered on them."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_nodes"
down_revision = "0004_groups_limits_and_nodes"


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("api_key", sa.Text),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
