"""Alembic environment: migrations run on the connection the caller hands in.

On PostgreSQL the version table is made first, with room for the revisions'
names: Alembic's own is VARCHAR(32), which SQLite never enforces and
PostgreSQL does ("0006_join_tokens_and_node_credentials" is longer).
"""

from __future__ import annotations

from alembic import context

from blackroad.store.schema import Base

connection = context.config.attributes["connection"]
if connection.dialect.name == "postgresql":
    connection.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(128) NOT NULL,"
        " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
    )
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
