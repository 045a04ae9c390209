"""Agent definitions and MCP servers as stored, on a SQLite file and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blackroad.agents.definitions import AgentDefinition, Agents
from blackroad.agents.mcp import McpServer, McpServers
from blackroad.agents.sandboxes import Sandboxes, new_name
from blackroad.errors import InvalidRequest, NotFound
from blackroad.store.database import Database

ALICE, BOB = "alice", "bob"


@pytest.fixture
def database(database_location: Path | str) -> Iterator[Database]:
    found = Database(database_location)
    yield found
    found.close()


def test_agents_are_their_owners_and_their_names_unique_per_owner(
    database: Database, tmp_path: Path
) -> None:
    sandboxes = Sandboxes(tmp_path / "sandboxes")
    agents = Agents(database, sandboxes)
    helper = agents.create(ALICE, AgentDefinition("helper", "smollm2:135m", tools=("clock",)))
    bobs = agents.create(BOB, AgentDefinition("helper", "smollm2:135m"))  # another owner's name
    assert helper.definition.tools == ("clock",) and bobs.id != helper.id
    with pytest.raises(InvalidRequest) as taken:
        agents.create(ALICE, AgentDefinition("helper", "gemma3:270m"))
    assert taken.value.param == "name"
    other = agents.create(ALICE, AgentDefinition("other", "smollm2:135m"))
    with pytest.raises(InvalidRequest):
        agents.update(ALICE, other.id, AgentDefinition("helper", "smollm2:135m"))
    renamed = agents.update(ALICE, other.id, AgentDefinition("writer", "gemma3:270m"))
    assert (renamed.definition.name, renamed.definition.model) == ("writer", "gemma3:270m")
    assert [a.definition.name for a in agents.list(ALICE)] == ["helper", "writer"]
    with pytest.raises(NotFound):
        agents.get(BOB, helper.id)
    sandboxes.open(helper.sandbox)
    sandboxes.open(new_name())  # left by a crash
    assert agents.sweep_sandboxes() == 1
    agents.delete(ALICE, helper.id)
    with pytest.raises(NotFound):
        agents.get(ALICE, helper.id)
    assert not sandboxes.path(helper.sandbox).exists()
    newest = agents.create(ALICE, AgentDefinition("helper", "smollm2:135m"))
    assert newest.id > other.id and newest.sandbox != helper.sandbox  # never reused


def test_mcp_servers_are_added_once_trusted_and_removed(database: Database) -> None:
    servers = McpServers(database)
    files = McpServer(
        "files", "stdio", command="mcp-files", args=["--root", "/srv"], env={"K": "v"}
    )
    servers.add(files)
    servers.add(McpServer("web", "http", url="https://mcp.example/mcp", headers={"A": "b"}))
    with pytest.raises(InvalidRequest) as twice:
        servers.add(files)
    assert twice.value.param == "name"
    assert servers.get("files") == files
    assert [s.name for s in servers.list()] == ["files", "web"]
    assert servers.set_trusted("web", True).trusted
    servers.remove("files")
    for gone in (lambda: servers.get("files"), lambda: servers.remove("files")):
        with pytest.raises(NotFound):
            gone()
    with pytest.raises(NotFound):
        servers.set_trusted("files", True)
