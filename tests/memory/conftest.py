"""Fixtures of the memory tests: a real database, migrated (SQLite, or each of both)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blackroad.store.database import Database


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    found = Database(tmp_path / "blackroad.db")
    yield found
    found.close()


@pytest.fixture
def database_on_both(database_location: Path | str) -> Iterator[Database]:
    """A migrated database of a store that runs on both: a SQLite file, then a PostgreSQL."""
    found = Database(database_location)
    yield found
    found.close()
