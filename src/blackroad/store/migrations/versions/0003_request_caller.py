"""Who made each request: the user and the prefix of the key they used."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_request_caller"
down_revision = "0002_users_and_api_keys"


def upgrade() -> None:
    op.add_column("requests", sa.Column("user", sa.String(128)))
    op.add_column("requests", sa.Column("key_prefix", sa.String(32)))
    op.create_index("ix_requests_user", "requests", ["user"])
