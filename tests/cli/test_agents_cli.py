"""``blackroad agents`` against a running server: definitions, runs streamed live, approvals.

The first steps' tool choice forces smollm2:135m's calls, so what is checked
is the loop as the command prints it and its exit code (0 succeeded, 1 failed
or cancelled, 2 step limit, 3 awaiting approval), not what the model decides.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SMOLLM2
from tests.support.agents import Agents, sandbox_of
from tests.support.server import BLACKROAD, Server, blackroad, server_env

NOTE = "Write done in done.txt."


def agents_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    result = blackroad("agents", *args, home=server.home, port=server.port)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cli(server: Server, *args: str, code: int = 0) -> str:
    result = agents_cli(server, *args)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def api(server: Server) -> Iterator[Agents]:
    with Agents(server.url) as client:
        yield client


def named(api: Agents, name: str) -> dict[str, Any]:
    agents: list[dict[str, Any]] = api.http.get("/api/agents").json()["agents"]
    [agent] = [a for a in agents if a["name"] == name]
    return agent


def latest_run(api: Agents, agent: dict[str, Any]) -> dict[str, Any]:
    runs = api.http.get("/api/agents/runs", params={"agent": agent["id"]}).json()["runs"]
    return api.get(runs[0]["id"])


def test_create_list_show_edit_and_remove(server: Server) -> None:
    created = cli(server, "create", "cli-helper", "--model", SMOLLM2, "--tool", "calculator",
                  "--tool", "write_file", "--max-steps", "4", "--deny", "write_file",
                  "--first", "calculator")  # fmt: skip
    assert "created agent 'cli-helper'" in created
    [row] = [line for line in cli(server, "list").splitlines() if "cli-helper" in line]
    assert "calculator, write_file" in row and SMOLLM2 in row
    shown = json.loads(cli(server, "show", "cli-helper", "--json"))
    assert shown["tools"] == ["calculator", "write_file"] and shown["max_steps"] == 4
    assert shown["approval"] == {"write_file": "deny"} and shown["tool_choice"] == ["calculator"]
    by_id = cli(server, "show", str(shown["id"]))
    assert '{"write_file": "deny"}' in by_id and "cli-helper" in by_id
    # The server refuses an edit that leaves the policy naming a tool no longer given.
    refused = cli(server, "edit", "cli-helper", "--tool", "calculator", code=1)
    assert "approval names 'write_file', not among tools" in refused
    cli(server, "edit", "cli-helper", "--system", "Answer in one word.", "--tool", "calculator",
        "--ask", "calculator", "--max-steps", "2")  # fmt: skip
    edited = json.loads(cli(server, "show", "cli-helper", "--json"))
    assert edited["id"] == shown["id"] and edited["system"] == "Answer in one word."
    assert edited["tools"] == ["calculator"] and edited["approval"] == {"calculator": "ask"}
    assert edited["max_steps"] == 2 and edited["tool_choice"] == ["calculator"]  # kept
    assert "removed agent 'cli-helper'" in cli(server, "rm", "cli-helper")
    assert "cli-helper" not in cli(server, "list")
    assert "you have no agent named 'cli-helper'" in cli(server, "run", "cli-helper", "x", code=1)


def test_a_bad_definition_shows_the_server_s_reason(
    server: Server, api: Agents, tmp_path: Path
) -> None:
    unknown = cli(server, "create", "cli-bad", "--model", SMOLLM2, "--tool", "rm_rf", code=1)
    assert "unknown tool 'rm_rf'" in unknown
    memory = cli(server, "create", "cli-bad", "--model", SMOLLM2, "--memory", "often", code=1)
    assert "memory" in memory and "'read'" in memory
    assert "give the agent a --model" in cli(server, "create", "cli-bad", code=1)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert "is not JSON" in cli(server, "create", "cli-bad", "-f", str(broken), code=1)
    assert "cli-bad" not in [a["name"] for a in api.http.get("/api/agents").json()["agents"]]


def test_run_prints_the_tool_step_and_ends_with_the_answer(
    server: Server, api: Agents, tmp_path: Path
) -> None:
    definition = tmp_path / "calc.json"  # temperature 0, which no option sets
    fields = {"model": SMOLLM2, "tools": ["calculator"], "max_steps": 2, "temperature": 0,
              "tool_choice": ["calculator", "none"]}  # fmt: skip
    definition.write_text(json.dumps(fields))
    cli(server, "create", "cli-calc", "-f", str(definition))
    agent = named(api, "cli-calc")
    assert agent["temperature"] == 0
    result = agents_cli(server, "run", "cli-calc", "What is 17 times 23?")
    run = latest_run(api, agent)
    assert run["status"] == "succeeded" and result.returncode == 0, result.stdout
    model, tool, answer = run["steps"]
    assert f"[{model['seq']}] {SMOLLM2} calls calculator" in result.stdout
    assert f"[{tool['seq']}] calculator {json.dumps(tool['input'])}" in result.stdout
    assert f"→ {tool['output']['content']}" in result.stdout
    assert f"[{answer['seq']}] {SMOLLM2}: {run['answer'] or '(no answer)'}" in result.stdout
    assert result.stdout.rstrip().endswith("succeeded")
    steps = cli(server, "steps", str(run["id"]))
    assert "calculator" in steps and f"run {run['id']} of 'cli-calc': succeeded" in steps
    [row] = [line for line in cli(server, "runs", "--agent", "cli-calc").splitlines()[1:]]
    assert row.split()[:4] == [str(run["id"]), "cli-calc", "local", "succeeded"]


def test_a_call_with_side_effects_waits_and_is_approved_or_rejected(
    server: Server, api: Agents
) -> None:
    agent = api.create(name="cli-scribe", tools=["write_file"], max_steps=1,
                       tool_choice=["write_file"])  # fmt: skip
    sandbox = sandbox_of(server.home, agent["id"])
    waiting = agents_cli(server, "run", "cli-scribe", NOTE)
    assert waiting.returncode == 3, waiting.stdout
    run = latest_run(api, agent)
    step = run["steps"][-1]
    assert run["status"] == step["status"] == "awaiting_approval"
    assert f"blackroad agents approve {run['id']} {step['id']}" in waiting.stdout
    assert waiting.stdout.rstrip().endswith(f"run {run['id']} is awaiting approval")
    pending = [line.split() for line in cli(server, "approvals").splitlines()]
    assert [str(run["id"]), str(step["id"]), "cli-scribe", "write_file"] in [p[:4] for p in pending]
    written = sandbox / step["input"]["path"]
    assert not written.exists()  # nothing runs before the decision

    approved = agents_cli(server, "approve", str(run["id"]), str(step["id"]))
    assert approved.returncode == 2, approved.stdout
    tool = api.get(run["id"])["steps"][-1]
    assert tool["status"] == "completed" and not tool["output"]["is_error"], tool["output"]
    assert f"approved step {step['id']} of run {run['id']}" in approved.stdout
    assert f"→ {tool['output']['content']}" in approved.stdout
    assert written.read_text() == step["input"]["content"]
    assert api.http.get("/api/agents/approvals").json()["approvals"] == []

    again = agents_cli(server, "run", "cli-scribe", NOTE)
    assert again.returncode == 3, again.stdout
    second = latest_run(api, agent)
    step = second["steps"][-1]
    rejected = agents_cli(server, "reject", str(second["id"]), str(step["id"]),
                          "--reason", "the old note stays")  # fmt: skip
    assert rejected.returncode == 2, rejected.stdout  # its one model step taken: the step limit
    assert rejected.stdout.rstrip().endswith("stopped at its step limit, without an answer")
    tool = api.get(second["id"])["steps"][-1]
    assert tool["output"]["is_error"] and "the old note stays" in tool["output"]["content"]
    assert "the old note stays" in rejected.stdout
    # A decision out of turn is the server's refusal, exit 1.
    late = cli(server, "approve", str(second["id"]), str(step["id"]), code=1)
    assert "not awaiting approval" in late


def test_cancel_stops_a_long_run_and_its_watchers(server: Server, api: Agents) -> None:
    api.create(name="cli-long", tools=["current_time"], max_steps=50,
               tool_choice=["required"] * 50)  # fmt: skip
    env = {**server_env(server.home, server.port), "COLUMNS": "200"}
    command = [str(BLACKROAD), "agents", "run", "cli-long", "Tell me the time, again and again."]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as watching:
        run_id = started_run(api, named(api, "cli-long"))
        api.wait_for_steps(run_id, 2)
        assert cli(server, "cancel", str(run_id)).strip() == f"run {run_id}: cancelled"
        output, _ = watching.communicate(timeout=120)
    assert watching.returncode == 1, output
    assert "current_time" in output and output.rstrip().endswith("cancelled")
    watched = agents_cli(server, "watch", str(run_id))
    assert watched.returncode == 1 and watched.stdout.rstrip().endswith("cancelled")
    listed = cli(server, "runs", "--agent", "cli-long", "--status", "cancelled")
    assert [line.split()[0] for line in listed.splitlines()[1:]] == [str(run_id)]
    detached = cli(server, "run", "cli-long", "What time is it?", "--detach").strip()
    assert cli(server, "cancel", detached).strip() == f"run {detached}: cancelled"


def started_run(api: Agents, agent: dict[str, Any]) -> int:
    """The id of the agent's first run, once the server has it."""
    deadline = time.monotonic() + 60
    while True:
        runs = api.http.get("/api/agents/runs", params={"agent": agent["id"]}).json()["runs"]
        if runs:
            return int(runs[0]["id"])
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
