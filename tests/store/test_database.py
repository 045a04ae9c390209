"""The database: WAL mode, named migrations, and no committed record lost to kill -9."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import openai

import blackroad.store
from blackroad.store.database import Database
from tests.conftest import SMOLLM2
from tests.support.server import running_server


def test_opens_in_wal_mode_at_the_newest_named_migration(tmp_path: Path) -> None:
    database = Database(tmp_path / "blackroad.db")
    database.close()
    with sqlite3.connect(tmp_path / "blackroad.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]
    migrations = Path(blackroad.store.__file__).parent / "migrations" / "versions"
    assert versions == [max(path.stem for path in migrations.glob("[0-9]*.py"))]


def test_reopening_an_existing_database_keeps_its_rows(tmp_path: Path) -> None:
    first = Database(tmp_path / "blackroad.db")
    first.add_model("a:b", tmp_path / "a.gguf")
    first.close()
    again = Database(tmp_path / "blackroad.db")
    assert [name for name, _ in again.added_models()] == ["a:b"]


def test_kill_9_loses_no_answered_request(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
        for _ in range(5):
            client.completions.create(model=SMOLLM2, prompt="Hello", max_tokens=1)
        client.embeddings.create(model=SMOLLM2, input="x")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    with sqlite3.connect(tmp_path / "blackroad.db") as db:
        rows = db.execute("SELECT path, status FROM requests WHERE path LIKE '/v1/%'").fetchall()
    assert rows == [("/v1/completions", 200)] * 5 + [("/v1/embeddings", 200)]
