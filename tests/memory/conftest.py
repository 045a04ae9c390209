"""Fixtures of the memory tests: a real SQLite database, migrated, in the test's directory."""

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
