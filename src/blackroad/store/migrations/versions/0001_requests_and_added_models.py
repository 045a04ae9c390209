"""Request log and user-added models."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_requests_and_added_models"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(256), nullable=False),
        sa.Column("model", sa.String(256), index=True),
        sa.Column("client", sa.String(128)),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "added_models",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
