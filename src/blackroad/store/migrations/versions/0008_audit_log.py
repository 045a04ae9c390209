"""The audit log: its records (leaves of a Merkle tree), the tree's state, signed checkpoints."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_audit_log"
down_revision = "0007_placements"


def upgrade() -> None:
    op.create_table(
        "audit_records",
        # The leaf's index in the tree: dense, from 0, never reused.
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("record", sa.Text, nullable=False),  # the leaf's data, byte for byte
        sa.Column("time", sa.Text, nullable=False, index=True),  # ISO-8601 UTC, as in the record
        # Full texts kept outside the leaf (the leaf holds their sha256), so they can be erased.
        sa.Column("input", sa.Text),
        sa.Column("output", sa.Text),
    )
    op.create_table(
        "audit_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("frontier", sa.JSON, nullable=False),
        sa.Column("last_leaf", sa.LargeBinary(32)),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("time", sa.Text, nullable=False),
    )
