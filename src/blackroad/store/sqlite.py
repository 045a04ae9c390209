"""The SQLite driver every BlackRoad connection uses: pysqlite3, with sqlite-vec loaded.

Python's own ``sqlite3`` may be built without extension loading (it is on the
machines BlackRoad is developed on), and then sqlite-vec, the vector index of
the knowledge bases, cannot load. ``pysqlite3-binary`` is the same DB-API
module bundling SQLite 3.51 with FTS5 and extension loading; SQLAlchemy uses
it as its driver module, and :func:`connect` gives the raw connections the
same extension.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_vec
from pysqlite3 import dbapi2 as driver

__all__ = [
    "MAX_INTEGER",
    "Connection",
    "IntegrityError",
    "OperationalError",
    "Row",
    "connect",
    "driver",
    "load_extensions",
]

# The largest integer SQLite holds: binding a larger one raises OverflowError, so
# the API bounds every integer that reaches a query (an id, a limit) by it.
MAX_INTEGER = 2**63 - 1

if TYPE_CHECKING:
    # pysqlite3 ships no type information; its API is the standard library's, name for name.
    from sqlite3 import Connection, IntegrityError, OperationalError, Row
else:
    Connection, Row = driver.Connection, driver.Row
    IntegrityError, OperationalError = driver.IntegrityError, driver.OperationalError


def load_extensions(connection: Connection) -> None:
    """Load sqlite-vec into ``connection`` (its ``vec0`` tables and ``vec_*`` functions)."""
    connection.enable_load_extension(True)
    try:
        sqlite_vec.load(connection)
    finally:
        connection.enable_load_extension(False)


def connect(path: Path | str, **options: Any) -> Connection:
    connection: Connection = driver.connect(str(path), **options)
    load_extensions(connection)
    return connection
