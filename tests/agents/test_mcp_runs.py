"""Agents using an MCP server's tools like built-ins: called in a run, approved when they act.

Two registrations of the same real SDK server: ``tools``, which an admin
trusts (its read-only claims are believed), and ``claims``, not trusted yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import Agents
from tests.support.mcp_tool_server import stdio_server
from tests.support.server import Server, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    home = tmp_path_factory.mktemp("mcp-agents")
    notes = home / "notes.txt"
    with running_server(home) as started, Agents(started.url) as agents:
        for name, trusted in (("tools", True), ("claims", False)):
            server = dataclasses.replace(stdio_server(name, notes), trusted=trusted)
            registered = agents.http.post("/api/mcp/servers", json=dataclasses.asdict(server))
            assert registered.status_code == 201, registered.text
            assert registered.json()["trusted"] is trusted
        yield started, notes


def test_an_mcp_tool_is_called_in_a_run(server: tuple[Server, Path]) -> None:
    with Agents(server[0].url) as agents:
        agent = agents.create(name="adder", tools=["mcp:tools"], tool_choice=["tools__add"],
                              max_steps=1)  # fmt: skip
        finished = agents.wait(agents.run(agent, "Add 2 and 3.")["id"], "step_limit")
    model, tool = finished["steps"]
    assert model["input"] == ["tools__add"]  # the named choice, of all the server's tools
    assert tool["name"] == "tools__add" and not tool["output"]["is_error"], tool["output"]
    arguments = tool["input"]
    assert float(tool["output"]["content"]) == arguments["a"] + arguments["b"]


def test_an_mcp_tool_that_is_not_read_only_waits_for_approval(server: tuple[Server, Path]) -> None:
    url, notes = server[0].url, server[1]
    with Agents(url) as agents:
        agent = agents.create(name="noter", tools=["tools__write_note"],
                              tool_choice=["tools__write_note"], max_steps=1)  # fmt: skip
        run = agents.run(agent, "Note that the backup finished.")
        step = agents.wait(run["id"], "awaiting_approval")["steps"][-1]
        assert not notes.exists()
        decided = agents.http.post(
            f"/api/agents/runs/{run['id']}/steps/{step['id']}/decision", json={"approve": True}
        )
        assert decided.status_code == 200, decided.text
        agents.wait(run["id"], "step_limit")
    assert step["input"]["text"] in notes.read_text()


def test_a_read_only_claim_counts_only_once_an_admin_trusts_the_server(
    server: tuple[Server, Path],
) -> None:
    with Agents(server[0].url) as agents:
        agent = agents.create(name="claimer", tools=["claims__add"], tool_choice=["claims__add"],
                              max_steps=1)  # fmt: skip
        run = agents.run(agent, "Add 2 and 3.")
        waiting = agents.wait(run["id"], "awaiting_approval")["steps"][-1]
        assert waiting["name"] == "claims__add"  # "read-only", says the server: not believed
        decided = agents.http.post(
            f"/api/agents/runs/{run['id']}/steps/{waiting['id']}/decision", json={"approve": False}
        )
        assert decided.status_code == 200, decided.text
        trusted = agents.http.patch("/api/mcp/servers/claims", json={"trusted": True})
        assert trusted.status_code == 200 and trusted.json()["trusted"] is True, trusted.text
        again = agents.wait(agents.run(agent, "Add 2 and 3.")["id"], "step_limit")
        assert [s["status"] for s in again["steps"]] == ["completed", "completed"]
        assert not again["steps"][-1]["output"]["is_error"]
        listed = agents.http.get("/api/mcp/servers").json()["servers"]
        assert {s["name"]: s["trusted"] for s in listed} == {"claims": True, "tools": True}
        missing = agents.http.patch("/api/mcp/servers/nope", json={"trusted": True})
        assert missing.status_code == 404


def test_an_agent_naming_an_unknown_mcp_server_is_refused(server: tuple[Server, Path]) -> None:
    with Agents(server[0].url) as agents:
        refused = agents.http.post(
            "/api/agents", json={"name": "lost", "model": "smollm2:135m", "tools": ["mcp:nope"]}
        )
    assert refused.status_code == 400 and "no MCP server named 'nope'" in refused.json()["error"]
