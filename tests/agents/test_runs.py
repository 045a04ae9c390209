"""Agent runs on a real server with the bundled instruct model: steps, limits, events, cancel.

The first steps' ``tool_choice`` makes smollm2:135m call the tools each test
needs, so what is checked is the loop (what it persists, audits and
refuses), not what a 135M model happens to decide.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SMOLLM2
from tests.support.agents import Agents, audit_records
from tests.support.server import Server, running_server


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents")


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    with running_server(home) as started:
        yield started


@pytest.fixture
def agents(server: Server) -> Iterator[Agents]:
    with Agents(server.url) as client:
        yield client


def test_definitions_are_created_listed_replaced_and_deleted(agents: Agents) -> None:
    created = agents.create(name="helper", tools=["calculator", "write_file"], max_steps=4)
    assert created["approval"] == {} and created["memory"] == "none"
    assert [a["name"] for a in agents.http.get("/api/agents").json()["agents"]] == ["helper"]
    replaced = agents.http.put(
        f"/api/agents/{created['id']}",
        json={"name": "helper", "model": SMOLLM2, "tools": ["calculator"], "approval": {
            "calculator": "ask"}},
    )  # fmt: skip
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["tools"] == ["calculator"]
    assert replaced.json()["approval"] == {"calculator": "ask"}
    assert agents.http.delete(f"/api/agents/{created['id']}").status_code == 204
    assert agents.http.get(f"/api/agents/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"tools": ["rm_rf"]}, 400, "unknown tool 'rm_rf'"),
        ({"tools": ["calculator"], "approval": {"write_file": "ask"}}, 400, "not among tools"),
        ({"tools": ["calculator"], "approval": {"calculator": "allow"}}, 400, "approval"),
        ({"tools": ["calculator"], "tool_choice": ["read_file"]}, 400, "not among tools"),
        ({"model": "no-such-model:1"}, 404, "no-such-model"),
        ({"knowledge_bases": [987654]}, 404, "987654"),
        ({"max_steps": 0}, 400, "max_steps"),
        ({"name": "../etc"}, 400, "name"),
        ({"surprise": True}, 400, "surprise"),
    ],
)
def test_a_bad_definition_is_refused_with_the_reason(
    agents: Agents, fields: dict[str, Any], status: int, words: str
) -> None:
    response = agents.http.post("/api/agents", json={"name": "bad", "model": SMOLLM2, **fields})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert agents.http.post("/api/agents", content=b"{not json").status_code == 400


def test_a_multi_step_run_searches_a_knowledge_base_then_calculates(
    agents: Agents, server: Server
) -> None:
    base = agents.http.post("/api/kb", json={"name": "prices"}).json()["id"]
    upload = agents.http.post(
        f"/api/kb/{base}/documents",
        files={"files": ("prices.txt", b"A crate of Zephyr apples costs 12 euros.")},
    )
    assert upload.status_code == 200, upload.text
    agent = agents.create(
        name="shopper",
        tools=["knowledge_search", "calculator"],
        knowledge_bases=[base],
        tool_choice=["knowledge_search", "calculator"],
        max_steps=3,
    )
    run = agents.run(agent, "What do 7 crates of Zephyr apples cost?")
    finished = agents.wait(run["id"], "succeeded", "step_limit")
    steps = finished["steps"]
    kinds = [(s["kind"], s["name"]) for s in steps[:4]]
    assert kinds == [
        ("model", SMOLLM2), ("tool", "knowledge_search"), ("model", SMOLLM2), ("tool", "calculator")
    ]  # fmt: skip
    assert "Zephyr apples costs 12 euros" in steps[1]["output"]["content"]
    arithmetic = steps[3]
    assert arithmetic["status"] == "completed" and arithmetic["input"]["expression"]
    if not arithmetic["output"]["is_error"]:
        float(arithmetic["output"]["content"])  # a number, whatever the model asked for
    # Each model call and each tool call and result is an audit record of this run.
    records = [r for r in audit_records(server.home) if r.get("run") == run["id"]]
    kinds_audited = [r["kind"] for r in records]
    assert kinds_audited.count("agent.model") == sum(s["kind"] == "model" for s in steps)
    assert kinds_audited.count("agent.tool_call") == sum(s["kind"] == "tool" for s in steps)
    assert kinds_audited.count("agent.tool_result") == sum(s["kind"] == "tool" for s in steps)
    assert kinds_audited[0] == "agent.run" and kinds_audited[-1] == "agent.end"
    # And the model calls are in the request log: the owner's usage and budgets count them.
    with sqlite3.connect(server.home / "blackroad.db") as db:
        logged = db.execute(
            "SELECT sum(prompt_tokens + completion_tokens), count(*) FROM requests"
            " WHERE method = 'AGENT' AND path = ? AND user = 'local'",
            (f"/api/agents/runs/{run['id']}",),
        ).fetchone()
    models = [s["output"] for s in steps if s["kind"] == "model"]
    assert logged == (sum(m["prompt_tokens"] + m["completion_tokens"] for m in models), len(models))


def test_a_run_stops_at_its_step_limit(agents: Agents) -> None:
    agent = agents.create(name="looper", tools=["current_time"], tool_choice=["required"] * 5,
                          max_steps=2)  # fmt: skip
    finished = agents.wait(agents.run(agent, "What time is it?")["id"], "step_limit")
    assert [s["kind"] for s in finished["steps"]] == ["model", "tool", "model", "tool"]
    assert finished["answer"] is None


def test_a_text_answer_finishes_the_run(agents: Agents) -> None:
    agent = agents.create(name="talker", tools=["calculator"], tool_choice=["none"])
    finished = agents.wait(agents.run(agent, "Say hello.")["id"], "succeeded")
    [step] = finished["steps"]
    assert step["input"] == []  # tool_choice none: no tools offered
    assert finished["answer"] == step["output"]["content"] and finished["answer"]


def test_events_stream_every_step_and_end_with_the_run(agents: Agents) -> None:
    agent = agents.create(name="streamer", tools=["current_time"], tool_choice=["current_time"],
                          max_steps=2)  # fmt: skip
    events = agents.stream(agent, "What time is it in Lisbon?")
    assert events[-1][0] == "run" and events[-1][1]["status"] in ("succeeded", "step_limit")
    run_id = events[-1][1]["id"]
    stored = agents.http.get(f"/api/agents/runs/{run_id}").json()["steps"]
    # Every step's final state was sent, in order.
    last_sent = {s["id"]: s for kind, s in events if kind == "step"}
    assert list(last_sent.values()) == stored
    # A finished run's events: its steps and its end, then the stream closes.
    replay = agents.events(run_id)
    assert [s for kind, s in replay if kind == "step"] == stored


def test_a_run_can_be_cancelled_and_takes_no_step_after(agents: Agents) -> None:
    agent = agents.create(name="long", tools=["current_time"], tool_choice=["required"] * 50,
                          max_steps=50)  # fmt: skip
    run = agents.run(agent, "Tell me the time, again and again.")
    agents.wait_for_steps(run["id"], 2)
    cancelled = agents.http.post(f"/api/agents/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    steps = agents.http.get(f"/api/agents/runs/{run['id']}").json()["steps"]
    again = agents.http.get(f"/api/agents/runs/{run['id']}").json()
    assert again["status"] == "cancelled" and again["steps"] == steps
    # Cancelling a finished run changes nothing.
    assert agents.http.post(f"/api/agents/runs/{run['id']}/cancel").json()["status"] == "cancelled"


def test_runs_of_unknown_ids_and_decisions_out_of_turn_are_refused(agents: Agents) -> None:
    assert agents.http.get("/api/agents/runs/424242").status_code == 404
    assert agents.http.post("/api/agents/424242/runs", json={"input": "x"}).status_code == 404
    agent = agents.create(name="quick", tools=["calculator"], tool_choice=["none"])
    finished = agents.wait(agents.run(agent, "Hi")["id"], "succeeded")
    step = finished["steps"][0]["id"]
    decision = agents.http.post(
        f"/api/agents/runs/{finished['id']}/steps/{step}/decision", json={"approve": True}
    )
    assert decision.status_code == 409, decision.text
    assert "not awaiting approval" in decision.json()["error"]
    empty = agents.http.post(f"/api/agents/{agent['id']}/runs", json={"input": ""})
    assert empty.status_code == 400


def test_the_journal_is_in_sqlite(server: Server, agents: Agents) -> None:
    agent = agents.create(name="journaled", tools=["calculator"], tool_choice=["none"])
    run = agents.wait(agents.run(agent, "Hi")["id"], "succeeded")
    with sqlite3.connect(server.home / "blackroad.db") as db:
        (definition,) = db.execute(
            "SELECT definition FROM agent_runs WHERE id = ?", (run["id"],)
        ).fetchone()
    assert json.loads(definition)["name"] == "journaled"
