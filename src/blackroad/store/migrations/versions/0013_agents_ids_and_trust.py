"""PLACEHOLDER (owned by the identity/agents helper): fill in or delete."""

from __future__ import annotations

revision = "0013_agents_ids_and_trust"
down_revision = "0012_node_draining"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
