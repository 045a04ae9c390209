"""PostgreSQL as the store: the migration history there, planes migrating together, ``up``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Table

import blackroad.store
from blackroad.store.database import Database
from blackroad.store.schema import Base
from tests.support.postgres import Postgres
from tests.support.server import running_server

MIGRATIONS = Path(blackroad.store.__file__).parent / "migrations" / "versions"
FULL_TEXT = {"messages_fts", "chunks_fts"}  # PostgreSQL's full-text indexes (0009)


def _newest_revision() -> str:
    return max(path.stem for path in MIGRATIONS.glob("[0-9]*.py"))


def _table_of(difference: object) -> str:
    """The table an Alembic autogenerate difference is about."""
    if isinstance(difference, list):  # a column's modifications: (kind, schema, table, ...)
        return str(difference[0][2])
    assert isinstance(difference, tuple)
    subject = difference[1]
    if hasattr(subject, "table"):  # an index or a constraint
        return str(subject.table.name)
    if isinstance(subject, Table):
        return subject.name
    return str(difference[2])  # (kind, schema, table, column)


def _names(url: str, query: str) -> set[str]:
    with psycopg.connect(url) as connection:
        return {str(row[0]) for row in connection.execute(query)}


def test_the_whole_history_runs_on_postgresql_to_the_declared_tables(postgres: Postgres) -> None:
    url = postgres.new_database()
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        database.close()
    # Tables not declared yet (knowledge, agents) are the migrations' alone, and so are
    # the full-text indexes (FTS5 tables on SQLite, GIN indexes here: checked below).
    assert [
        d
        for d in differences
        if _table_of(d) in Base.metadata.tables
        and not (d[0] == "remove_index" and d[1].name in FULL_TEXT)
    ] == []
    assert _names(url, "SELECT version_num FROM alembic_version") == {_newest_revision()}
    # FTS5's place: full-text GIN indexes, and no SQLite trigger or virtual table.
    indexes = _names(url, "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING gin%'")
    assert indexes == FULL_TEXT
    assert "ix_agents_sandbox" in _names(url, "SELECT indexname FROM pg_indexes")
    Database(url).close()  # at head already: opens again without a change


def test_control_planes_starting_together_migrate_one_database_once(postgres: Postgres) -> None:
    url = postgres.new_database()
    opening = f"from blackroad.store.database import Database; Database({url!r}).close()"
    planes = [
        subprocess.Popen([sys.executable, "-c", opening], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [plane.communicate(timeout=120)[1] for plane in planes]
    assert [plane.returncode for plane in planes] == [0, 0, 0], errors
    assert _names(url, "SELECT version_num FROM alembic_version") == {_newest_revision()}


@pytest.mark.xfail(
    strict=True,
    raises=RuntimeError,
    reason="knowledge bases and the usage reports are SQLite-only so far",
)
def test_up_serves_with_its_state_in_postgresql(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.new_database()
    try:
        with running_server(tmp_path, database_url=url) as server:
            assert server.alive()
    finally:
        # However far it got, what it stored is in PostgreSQL: never a SQLite file at home.
        assert not (tmp_path / "blackroad.db").exists()
        assert _names(url, "SELECT name FROM users") == {"admin"}
