"""The directory's store on SQLite and PostgreSQL: users, groups and keys, and the key lookup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blackroad.errors import InvalidRequest, Unauthorized
from blackroad.fleet.placement import Placements
from blackroad.identity.directory import Directory
from blackroad.identity.types import Limits
from blackroad.store.database import Database


@pytest.fixture
def directory(database_location: Path | str) -> Directory:
    return Directory(Database(database_location))


def test_a_key_stands_for_its_user_with_their_groups_models_and_both_limits(
    directory: Directory,
) -> None:
    directory.add_group("team", ["smollm2:135m"])
    directory.add_group("open", None)
    directory.add_group("lab", ["gemma3:270m", "qwen*"])
    directory.add_user("ann", limits={"rpm": 5, "daily_tokens": 2**40}, groups=["team", "lab"])
    key = directory.create_key(
        "ann", "ci", models=["smollm2:135m"], limits={"max_concurrent": 1}, expires_at=None
    )
    caller = directory.authenticate(key.secret)
    assert (caller.user, caller.role, caller.key_prefix) == ("ann", "user", key.prefix)
    assert caller.scopes == frozenset({"inference"})
    assert caller.allowlists == (
        frozenset({"smollm2:135m"}),  # the key's
        frozenset({"smollm2:135m", "gemma3:270m", "qwen*"}),  # the groups'
    )
    assert caller.user_limits == Limits(rpm=5, daily_tokens=2**40)
    assert caller.key_limits == Limits(max_concurrent=1)
    # A group with every model lifts the groups' allowlist; the key's stays.
    directory.change_members("open", add=["ann"])
    assert directory.authenticate(key.secret).allowlists == (frozenset({"smollm2:135m"}),)
    assert directory.acting_user("ann").allowlists == ()


def test_revoked_expired_and_disabled_keys_are_refused_at_once(directory: Directory) -> None:
    directory.add_user("bob")
    lasting = directory.create_key("bob", "lasting")
    soon = directory.create_key("bob", "soon", expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert directory.authenticate(soon.secret).user == "bob"
    past = directory.create_key("bob", "past", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(Unauthorized, match="expired"):
        directory.authenticate(past.secret)
    with pytest.raises(Unauthorized, match="Incorrect"):
        directory.authenticate(lasting.secret[:-1] + ("A" if lasting.secret[-1] != "A" else "B"))
    directory.revoke_key(lasting.prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        directory.authenticate(lasting.secret)
    directory.update_user("bob", disabled=True)
    with pytest.raises(Unauthorized, match="revoked"):
        directory.authenticate(soon.secret)
    with pytest.raises(Unauthorized, match="disabled"):
        directory.acting_user("bob")
    assert not directory.has_usable_key()


def test_names_are_unique_and_an_admin_scope_needs_an_admin(directory: Directory) -> None:
    assert directory.first_admin("chief", "pw-1234567") is not None
    assert directory.first_admin("other", None) is None  # users exist already
    with pytest.raises(InvalidRequest, match="exists"):
        directory.add_user("chief")
    directory.add_user("carl")
    with pytest.raises(InvalidRequest, match="admin"):
        directory.create_key("carl", scopes=("admin",))
    assert [user.name for user in directory.users()] == ["carl", "chief"]


def test_placements_are_kept_changed_and_ended(database_location: Path | str) -> None:
    placements = Placements(Database(database_location))
    placements.set("smollm2:135m", 2)
    placements.set("gemma3", 1)
    placements.set("smollm2:135m", 3)
    assert placements.wanted() == {"smollm2:135m": 3, "gemma3:latest": 1}
    placements.set("gemma3", 0)
    assert Placements(Database(database_location)).wanted() == {"smollm2:135m": 3}
