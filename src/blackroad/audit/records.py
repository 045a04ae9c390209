"""The audit log's rows on either database: SQLAlchemy Core statements over its three tables.

One gapless tree however many processes append. On SQLite the first
statement of an append is a write, which takes the database's write lock
before the tree's state is read. On PostgreSQL an append first takes a
transaction-scoped advisory lock (``AUDIT_LOCK``), held until the caller's
transaction ends: appends of every control plane on the database take turns,
and each reads the state the one before committed (READ COMMITTED reads a
new snapshot per statement). Either way the index and ``prev`` a record gets
are those of the tree's last committed leaf, so it never forks nor gaps.

An append runs on every request's path, inside its request record's
transaction, so its statements are compiled once per dialect and run on the
transaction's DB-API connection (``Compiled``): through SQLAlchemy's execution
each append took ~100 µs more on SQLite. Everything else runs through
SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, Dialect, bindparam, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from blackroad.audit.merkle import Frontier
from blackroad.store import sqlite
from blackroad.store.schema import audit_checkpoints, audit_records, audit_state

# The advisory lock appends take on PostgreSQL (any constant; "BRau").
AUDIT_LOCK = 0x42526175

# The caller's transaction: a SQLAlchemy connection, or (stores still on
# SQLite only) the SQLite connection under one.
Transaction = Connection | sqlite.Connection


def insert_new(dialect: str, table: Any) -> Any:
    """``INSERT`` that does nothing where the row's key is taken, in ``dialect``'s words."""
    module = postgresql if dialect == "postgresql" else sqlite_dialect
    return module.insert(table)


def record_kind(dialect: str) -> ColumnElement[Any]:
    """A record's ``kind``, read from its JSON text."""
    if dialect == "postgresql":
        kind: ColumnElement[Any] = sql_cast(audit_records.c.record, postgresql.JSONB)["kind"].astext
        return kind
    return func.json_extract(audit_records.c.record, "$.kind")


@dataclass(frozen=True)
class Compiled:
    """A Core statement compiled for one dialect, run on a DB-API connection."""

    sql: str
    defaults: Mapping[str, Any]
    positions: tuple[str, ...] | None  # parameter order, for a dialect with ``?`` parameters

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect) -> Compiled:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # a DML or SELECT statement's
        positions = compiled.positiontup if dialect.positional else None
        return cls(
            str(compiled),
            compiled.params,
            None if positions is None else tuple(positions),
        )

    def run(self, connection: Any, **params: Any) -> Any:
        """The cursor of this statement run with ``params`` on DB-API ``connection``."""
        values = {**self.defaults, **params}
        if self.positions is not None:
            return connection.execute(self.sql, tuple(values[name] for name in self.positions))
        return connection.execute(self.sql, values)


class Appender:
    """The statements of an append, compiled for one database's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.locks = dialect.name == "postgresql"
        state = audit_state.c
        self._lock = Compiled.of(
            select(func.pg_advisory_xact_lock(bindparam("lock", AUDIT_LOCK, BigInteger))),
            dialect,
        )
        self._start = Compiled.of(
            insert_new(dialect.name, audit_state)
            .values(id=1, size=0, frontier=bindparam("frontier"), last_leaf=None)
            .on_conflict_do_nothing(),
            dialect,
        )
        self._state = Compiled.of(
            select(state.size, state.frontier, state.last_leaf).where(state.id == 1), dialect
        )
        self._insert = Compiled.of(audit_records.insert(), dialect)
        self._advance = Compiled.of(
            audit_state.update()
            .where(state.id == 1)
            .values(
                size=bindparam("new_size"),
                frontier=bindparam("new_frontier"),
                last_leaf=bindparam("new_last_leaf"),
            ),
            dialect,
        )

    def state(self, connection: Transaction) -> tuple[Any, int, Frontier, bytes | None]:
        """The DB-API connection, and the tree's size, compact range and last leaf, locked."""
        dbapi = (
            connection.connection.driver_connection
            if isinstance(connection, Connection)
            else connection
        )
        if self.locks:
            self._lock.run(dbapi)
        # A write first (on SQLite, it takes the write lock before the state is read).
        self._start.run(dbapi, frontier=json.dumps(Frontier().to_json()))
        size, frontier, last = self._state.run(dbapi).fetchone()
        loaded = frontier if isinstance(frontier, dict) else json.loads(frontier)
        return dbapi, int(size), Frontier.from_json(loaded), None if last is None else bytes(last)

    def add(self, dbapi: Any, row: Mapping[str, Any], frontier: Frontier, leaf: bytes) -> None:
        """Insert the record ``row`` and move the state past it."""
        self._insert.run(dbapi, **row)
        self._advance.run(
            dbapi,
            new_size=row["idx"] + 1,
            new_frontier=json.dumps(frontier.to_json()),
            new_last_leaf=leaf,
        )


def checkpoint_insert(dialect: str) -> Any:
    """A signed checkpoint's row, kept unless one of its size is there already."""
    return insert_new(dialect, audit_checkpoints).on_conflict_do_nothing()
