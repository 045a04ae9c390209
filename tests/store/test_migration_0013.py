"""Migration 0013 on a database with rows in it: nothing lost, and no id handed out twice since."""

from __future__ import annotations

from pathlib import Path

from blackroad.store import sqlite
from blackroad.store.database import Database
from tests.support.migrations import upgrade_to

NOW = "2025-01-01T00:00:00"
# Every table 0013 rebuilds, with the id of its newest row below.
REBUILT = {
    "agents": 3,
    "agent_runs": 30,
    "agent_steps": 3,
    "conversations": 5,
    "messages": 2,
    "memories": 7,
    "memory_versions": 1,
    "knowledge_bases": 4,
    "documents": 9,
    "chunks": 11,
}
# Agents 1-3, each with a run (10, 20, 30) and its step.
AGENT_ROWS = [
    "INSERT INTO agents (id, owner, name, definition, created_at, updated_at)"
    " VALUES (:i, 'ann', 'a' || :i, '{}', :now, :now)",
    "INSERT INTO agent_runs (id, agent_id, owner, definition, input, status, created_at,"
    " updated_at) VALUES (:i * 10, :i, 'ann', '{}', 'hi', 'succeeded', :now, :now)",
    "INSERT INTO agent_steps (run_id, seq, kind, status, name, created_at, updated_at)"
    " VALUES (:i * 10, 1, 'model', 'completed', 'm', :now, :now)",
]
ROWS = [
    "INSERT INTO groups (id, name, created_at) VALUES (1, 'g', :now)",
    "INSERT INTO users (id, name, role, disabled, created_at) VALUES (1, 'ann', 'admin', 0, :now)",
    "INSERT INTO api_keys (user_id, name, prefix, secret_hash, scopes, created_at, expires_at)"
    " VALUES (1, 'session', 'br-session00', 'h', '[\"admin\"]', :now, :now)",
    "INSERT INTO api_keys (user_id, name, prefix, secret_hash, scopes, created_at)"
    " VALUES (1, 'script', 'br-script000', 'h', '[\"admin\"]', :now)",
    "INSERT INTO mcp_servers (name, transport, definition, created_at)"
    " VALUES ('tools', 'stdio', '{\"command\": \"srv\"}', :now)",
    "INSERT INTO conversations (id, owner, title, created_at, updated_at)"
    " VALUES (5, 'ann', 't', :now, :now)",
    "INSERT INTO messages (conversation_id, role, content, created_at)"
    " VALUES (5, 'user', 'the zebra crossing', :now)",
    "INSERT INTO messages (conversation_id, role, content, created_at)"
    " VALUES (5, 'assistant', 'a quiet street', :now)",
    "INSERT INTO memories (id, owner, text, source, conversation_id, created_at, updated_at)"
    " VALUES (7, 'ann', 'likes tea', 'extracted', 5, :now, :now)",
    "INSERT INTO memory_versions (memory_id, version, text, changed_by, changed_at)"
    " VALUES (7, 1, 'likes tea', 'ann', :now)",
    "INSERT INTO knowledge_bases (id, owner, name, embedding_model, chunk_tokens, chunk_overlap,"
    " created_at, updated_at) VALUES (4, 'ann', 'kb', 'm', 100, 10, :now, :now)",
    "INSERT INTO knowledge_shares (kb_id, group_id, permission) VALUES (4, 1, 'read')",
    "INSERT INTO documents (id, kb_id, name, media_type, sha256, size, characters, text, metadata,"
    " created_at, updated_at) VALUES (9, 4, 'd', 'text/plain', '0', 1, 1, 'x', '{}', :now, :now)",
    "INSERT INTO chunks (id, document_id, kb_id, ordinal, char_start, char_end, tokens, text)"
    " VALUES (11, 9, 4, 0, 0, 1, 1, 'a quokka in the harbour')",
]


def _found(db: sqlite.Connection, index: str, word: str) -> list[int]:
    """The rowids of a full-text index's rows holding ``word`` (``index`` is a constant)."""
    query = f"SELECT rowid FROM {index} WHERE {index} MATCH ?"  # noqa: S608
    return [row[0] for row in db.execute(query, (word,))]


def _contents(db: sqlite.Connection) -> dict[str, list[tuple[object, ...]]]:
    tables = [*REBUILT, "knowledge_shares"]
    return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}  # noqa: S608


def test_an_existing_database_keeps_every_row_and_never_reuses_an_id(tmp_path: Path) -> None:
    path = tmp_path / "blackroad.db"
    upgrade_to(path, "0012_node_draining")
    with sqlite.connect(path) as db:
        db.execute("PRAGMA foreign_keys=ON")
        for statement in ROWS:
            db.execute(statement, {"now": NOW})
        for i in (1, 2, 3):
            for statement in AGENT_ROWS:
                db.execute(statement, {"now": NOW, "i": i})
    with sqlite.connect(path) as db:
        before = _contents(db)

    Database(path).close()  # migrates to the newest revision

    with sqlite.connect(path) as db:
        db.execute("PRAGMA foreign_keys=ON")
        after = _contents(db)
        # Every row, every column as it was (agents gain their sandbox: the id they had).
        assert {t: rows for t, rows in after.items() if t != "agents"} == {
            t: rows for t, rows in before.items() if t != "agents"
        }
        assert [row[:-1] for row in after["agents"]] == before["agents"]
        assert [row[-1] for row in after["agents"]] == ["1", "2", "3"]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # The full-text indexes still find what they held, and keep up with new rows.
        assert _found(db, "messages_fts", "zebra") == [1]
        assert _found(db, "chunks_fts", "quokka") == [11]
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at)"
            " VALUES (5, 'user', 'a wombat', ?)",
            (NOW,),
        )
        assert _found(db, "messages_fts", "wombat") == [3]
        # The newest row deleted, the next one still gets a new id: in every rebuilt table.
        assert dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall()) == {
            **REBUILT,
            "messages": 3,
        }
        db.execute("DELETE FROM agents WHERE id = 3")  # its run and step go with it
        db.execute(
            "INSERT INTO agents (owner, name, definition, created_at, updated_at, sandbox)"
            " VALUES ('cat', 'c', '{}', ?, ?, 'feed')",
            (NOW, NOW),
        )
        assert db.execute("SELECT max(id) FROM agents").fetchone() == (4,)
        db.execute(
            "INSERT INTO agent_runs (agent_id, owner, definition, input, status, created_at,"
            " updated_at) VALUES (4, 'cat', '{}', 'hi', 'running', ?, ?)",
            (NOW, NOW),
        )
        assert db.execute("SELECT max(id) FROM agent_runs").fetchone() == (31,)
        # Sessions are told from keys; no MCP server is trusted until an admin says so.
        assert db.execute("SELECT prefix, session FROM api_keys ORDER BY id").fetchall() == [
            ("br-session00", 1),
            ("br-script000", 0),
        ]
        assert db.execute("SELECT trusted FROM mcp_servers").fetchall() == [(0,)]
