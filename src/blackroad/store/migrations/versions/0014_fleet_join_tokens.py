"""PLACEHOLDER (owned by the audit/fleet helper): fill in or delete."""

from __future__ import annotations

revision = "0014_fleet_join_tokens"
down_revision = "0013_agents_ids_and_trust"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
