"""Agents, their runs' journal and MCP servers as stored, on a SQLite file and a real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blackroad.agents.definitions import AgentDefinition, Agents
from blackroad.agents.journal import Journal, audit_entry
from blackroad.agents.mcp import McpServer, McpServers
from blackroad.agents.sandboxes import Sandboxes, new_name
from blackroad.audit.log import AuditLog
from blackroad.errors import InvalidRequest, NotFound
from blackroad.store.database import Database
from blackroad.store.schema import RequestRecord

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


def test_a_run_and_its_steps_are_journaled_with_their_audit_and_usage(
    database: Database, tmp_path: Path
) -> None:
    audit = AuditLog(database, tmp_path, "blackroad/test/journal")
    journal = Journal(database, audit)
    agents = Agents(database, Sandboxes(tmp_path / "sandboxes"))
    agent = agents.create(ALICE, AgentDefinition("helper", "smollm2:135m", tools=("clock",)))
    run = journal.start(agent, "What time is it?")
    assert (run.status, run.sandbox, run.definition) == ("running", agent.sandbox, agent.definition)
    started = datetime.now(UTC) - timedelta(seconds=1)
    usage = RequestRecord(
        created_at=started, method="AGENT", path=f"/api/agents/runs/{run.id}",
        model="smollm2:135m", user=ALICE, status=200, prompt_tokens=30, completion_tokens=5,
        duration_ms=40.0,
    )  # fmt: skip
    calls = {"content": "", "calls": [{"id": "c1", "name": "clock", "arguments": {}}]}
    model = journal.add_step(run, "model", "completed", "smollm2:135m", sent=["clock"],
                             output=calls, usage=usage)  # fmt: skip
    tool = journal.add_step(
        run, "tool", "started", "clock", call_id="c1", sent={"zone": "UTC"},
        audit=audit_entry("tool", {"run": run.id, "tool": "clock"}, {"zone": "UTC"}),
    )  # fmt: skip
    assert (model.seq, model.output, tool.seq, tool.input) == (1, calls, 2, {"zone": "UTC"})
    assert tool.output is None and database.tokens_since(ALICE, None, started) == 35
    done = journal.update_step(tool, "completed", output={"content": "12:00"}, duration_ms=3.0)
    assert done is not None and (done.output, done.call_id) == ({"content": "12:00"}, "c1")
    assert journal.update_step(tool, "rejected", decided_by=BOB) is None  # not "started" now
    finished = journal.set_status(run, "succeeded", answer="Noon.")
    assert finished is not None and (finished.status, finished.answer) == ("succeeded", "Noon.")
    assert journal.set_status(run, "failed", error="too late") is None  # finished already
    assert [r.id for r in journal.runs(ALICE, agent.id, ["succeeded"])] == [run.id]
    assert journal.runs(BOB) == [] and journal.runs(None, statuses=["running"]) == []
    assert [s.id for s in journal.steps(run.id)] == [model.id, tool.id]
    assert [kind for kind in _kinds(audit)] == ["agent.tool", "agent.run"]
    agents.delete(ALICE, agent.id)  # its runs go with it
    with pytest.raises(NotFound):
        journal.run(run.id)


def _kinds(audit: AuditLog) -> list[str]:
    return [json.loads(text)["kind"] for _, text, _ in audit.records()]
