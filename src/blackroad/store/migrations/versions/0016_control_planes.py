"""The control planes serving on this database, each refreshing its row while it runs."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_control_planes"
down_revision = "0015_postgres_bigint"


def upgrade() -> None:
    op.create_table(
        "control_planes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("database_kind", sa.String(16), nullable=False),
        sa.Column("database_host", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leads", sa.Text, nullable=False),
        sa.Column("problem", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("control_planes")
