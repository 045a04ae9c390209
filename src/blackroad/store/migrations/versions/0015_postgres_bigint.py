"""PostgreSQL: every integer column 64-bit, as SQLite's INTEGER is (nothing changes on SQLite).

The history declares ``sa.Integer``, which is INTEGER (32 bits) and SERIAL
on PostgreSQL: a limit, a token budget or a count the API accepts up to
``store.sqlite.MAX_INTEGER`` would not fit, nor a request log past 2³¹
rows. Each INTEGER column of the tables there at this revision becomes
BIGINT, and each sequence behind one counts as far.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_postgres_bigint"
down_revision = "0014_fleet_join_tokens"


def _integer_columns(bind: sa.Connection) -> list[tuple[str, str]]:
    """(table, column) of each 32-bit integer column of the public schema."""
    rows = bind.execute(
        sa.text(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND data_type = 'integer'"
            " ORDER BY table_name, ordinal_position"
        )
    )
    return [(str(table), str(column)) for table, column in rows]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, column in _integer_columns(bind):
        op.alter_column(table, column, type_=sa.BigInteger, existing_type=sa.Integer)
        sequence = bind.execute(
            sa.text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": f'"{table}"', "column": column},
        ).scalar()
        if sequence is not None:  # a name PostgreSQL quoted itself
            op.execute(f"ALTER SEQUENCE {sequence} AS bigint")


def downgrade() -> None:
    """Nothing: 64-bit columns hold whatever the 32-bit ones held."""
