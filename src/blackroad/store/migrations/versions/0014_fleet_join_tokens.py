"""Join tokens admit a counted number of nodes (one unless made for more), and all expire.

Existing tokens are brought under the same rules rather than left as the
standing, reusable secrets the new rules exist to end: a token that has
admitted a node (``used_at`` set) is used up, as a one-use token would be;
one that never did may still admit one node, until its own expiry, or, if it
had none, an hour after the upgrade (the default lifetime of a new token),
so a join already under way can finish. Nodes that joined keep their
credentials: they need no token again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0014_fleet_join_tokens"
down_revision = "0013_agents_ids_and_trust"

# The default lifetime of a join token when this migration was written (fleet/membership.py).
LIFETIME = timedelta(hours=1)


def upgrade() -> None:
    with op.batch_alter_table("join_tokens") as table:
        table.add_column(sa.Column("max_uses", sa.Integer, nullable=False, server_default="1"))
        table.add_column(sa.Column("uses", sa.Integer, nullable=False, server_default="0"))
    tokens = sa.table(
        "join_tokens",
        sa.column("uses", sa.Integer),
        sa.column("used_at", sa.DateTime(timezone=True)),
        sa.column("expires_at", sa.DateTime(timezone=True)),
    )
    op.execute(tokens.update().where(tokens.c.used_at.is_not(None)).values(uses=1))
    op.execute(
        tokens.update()
        .where(tokens.c.expires_at.is_(None))
        .values(expires_at=datetime.now(UTC) + LIFETIME)
    )


def downgrade() -> None:
    with op.batch_alter_table("join_tokens") as table:
        table.drop_column("uses")
        table.drop_column("max_uses")
