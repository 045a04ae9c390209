"""Migration 0014 on join tokens made before it: used ones are used up, none stays unexpiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blackroad.errors import Unauthorized
from blackroad.fleet.heartbeat import capabilities
from blackroad.fleet.membership import Membership
from blackroad.identity.keys import hash_secret
from blackroad.store import sqlite
from blackroad.store.database import Database
from tests.support.migrations import upgrade_to

# As SQLAlchemy writes a DateTime into SQLite.
STORED = "%Y-%m-%d %H:%M:%S.%f"
MADE = datetime(2025, 1, 1, tzinfo=UTC)


def _secret(name: str) -> str:
    return f"brj-{name:_<43}"


def test_tokens_made_before_keep_no_unlimited_or_unexpiring_use(tmp_path: Path) -> None:
    path = tmp_path / "blackroad.db"
    upgrade_to(path, "0013_agents_ids_and_trust")
    later = (datetime.now(UTC) + timedelta(days=3)).strftime(STORED)
    made = MADE.strftime(STORED)
    # name: (expires_at, revoked_at, used_at)
    rows = {
        "used": (None, None, made),  # admitted a node: used up, as a one-use token is
        "unused": (None, None, None),  # never used, never expiring: an hour from now
        "dated": (later, None, None),  # never used, expiring: keeps its expiry
        "revoked": (None, made, None),
    }
    with sqlite.connect(path) as db:
        for name, (expires_at, revoked_at, used_at) in rows.items():
            db.execute(
                "INSERT INTO join_tokens (prefix, secret_hash, expires_at, revoked_at, created_at,"
                " used_at, used_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_secret(name)[:12], hash_secret(_secret(name)), expires_at, revoked_at, made,
                 used_at, "old-node" if used_at else None),
            )  # fmt: skip
    upgraded = datetime.now(UTC)
    database = Database(path)  # migrates to the newest revision
    members = Membership(database)
    listed = {token.prefix: token for token in members.tokens()}
    state = {name: listed[_secret(name)[:12]] for name in rows}
    assert {name: (t.state, t.uses, t.max_uses) for name, t in state.items()} == {
        "used": ("used", 1, 1),
        "unused": ("active", 0, 1),
        "dated": ("active", 0, 1),
        "revoked": ("revoked", 0, 1),
    }
    expiry = state["unused"].expires_at
    assert expiry is not None and upgraded < expiry <= datetime.now(UTC) + timedelta(hours=1)
    assert state["dated"].expires_at == datetime.strptime(later, STORED).replace(tzinfo=UTC)

    with pytest.raises(Unauthorized, match="used"):
        members.join("n0", "http://127.0.0.1:9", None, capabilities(), token=_secret("used"))
    for name in ("unused", "dated"):
        joined = members.join(name, "http://127.0.0.1:9", None, capabilities(), token=_secret(name))
        assert joined.how == "joined"
        with pytest.raises(Unauthorized, match="used"):
            members.join("again", "http://127.0.0.1:9", None, capabilities(), token=_secret(name))
    database.close()
