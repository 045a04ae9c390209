"""``blackroad chats`` and ``blackroad memories`` against a running server, as two users."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    home = tmp_path_factory.mktemp("memory-cli")
    with running_server(home, auth="on") as server:
        keys = []
        for user in ("carol", "dave"):
            assert blackroad("users", "add", user, home=home).returncode == 0
            created = blackroad("keys", "create", user, home=home)
            keys.append(created.stdout.strip().splitlines()[-1])
        yield server, keys[0], keys[1]


def run(server: Server, key: str, *args: str, code: int = 0) -> str:
    result = blackroad(*args, home=server.home, port=server.port, api_key=key)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout


def test_chats_list_show_rename_export_delete(
    keyed: tuple[Server, str, str], tmp_path: Path
) -> None:
    server, carol, dave = keyed
    created = httpx.post(
        f"{server.url}/api/conversations",
        json={"messages": [{"role": "user", "content": "Plan a trip to Porto"}]},
        headers={"Authorization": f"Bearer {carol}"},
        timeout=HTTP_TIMEOUT,
    ).json()
    ident = str(created["id"])
    listed = run(server, carol, "chats", "list")
    assert "Plan a trip to Porto" in listed and ident in listed
    assert "Porto" in run(server, carol, "chats", "list", "--search", "porto")
    assert "Porto" not in run(server, carol, "chats", "list", "--search", "lisbon")
    assert "Plan a trip to Porto" in run(server, carol, "chats", "show", ident)
    run(server, carol, "chats", "rename", ident, "Porto weekend")
    assert "Porto weekend" in run(server, carol, "chats", "list")
    target = tmp_path / "chat.json"
    run(server, carol, "chats", "export", ident, "--format", "json", "-o", str(target))
    assert json.loads(target.read_text())["title"] == "Porto weekend"
    assert run(server, carol, "chats", "export", ident).startswith("# Porto weekend")
    # Dave has no such conversation.
    refused = run(server, dave, "chats", "show", ident, code=1)
    assert refused.strip() == f"conversation {ident} not found"
    assert "Porto" not in run(server, dave, "chats", "list")
    run(server, carol, "chats", "delete", ident)
    assert "Porto" not in run(server, carol, "chats", "list")


def test_memories_add_edit_history_delete(keyed: tuple[Server, str, str]) -> None:
    server, carol, dave = keyed
    added = run(server, carol, "memories", "add", "Carol rides a bike to work")
    ident = added.split()[-1]
    assert "rides a bike" in run(server, carol, "memories", "list")
    assert "version 2" in run(server, carol, "memories", "edit", ident, "Carol takes the train")
    history = run(server, carol, "memories", "history", ident)
    assert "rides a bike" in history and "takes the train" in history and "carol" in history
    assert run(server, dave, "memories", "delete", ident, code=1).strip() == (
        f"memory {ident} not found"
    )
    run(server, carol, "memories", "delete", ident)
    assert "train" not in run(server, carol, "memories", "list")
