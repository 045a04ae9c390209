"""A run's model calls are its owner's requests: their limits, their access, their usage.

Real server, the bundled smollm2:135m, users and keys made with the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import Agents
from tests.support.server import Server, blackroad, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("limits")) as started:
        yield started


def _cli(home: Path, *args: str) -> str:
    result = blackroad(*args, home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _user_key(server: Server, name: str, *limits: str) -> str:
    """A new user with ``limits`` (the CLI's options), and a key of theirs."""
    _cli(server.home, "users", "add", name, *limits)
    return _cli(server.home, "keys", "create", name).strip().splitlines()[-1]


def test_a_used_up_token_budget_ends_a_run_between_its_model_calls(server: Server) -> None:
    key = _user_key(server, "bea", "--daily-tokens", "1")
    with Agents(server.url, key) as agents, Agents(server.url) as admin:
        agent = agents.create(name="clock", tools=["current_time"],
                              tool_choice=["required"] * 3, max_steps=3)  # fmt: skip
        run = agents.run(agent, "What time is it?")
        # Watched by the local admin: with the budget gone, bea's own requests are refused.
        failed = admin.wait(run["id"], "failed")
        # The first call was admitted (nothing used yet) and used the budget up.
        assert [s["kind"] for s in failed["steps"]] == ["model", "tool"]
        assert "The daily token budget of user 'bea' is used up" in failed["error"]
        # The run's tokens are the owner's: their next request is refused too.
        chat = {"model": agent["model"], "messages": [{"role": "user", "content": "Hi"}]}
        refused = agents.http.post("/v1/chat/completions", json=chat)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"


def test_a_run_watched_under_a_concurrency_limit_of_one_runs_to_its_end(server: Server) -> None:
    key = _user_key(server, "cy", "--concurrent", "1")
    with Agents(server.url, key) as agents:
        agent = agents.create(name="clock", tools=["current_time"],
                              tool_choice=["current_time"], max_steps=2)  # fmt: skip
        # The stream holds no slot the run's model calls need: no deadlock.
        events = agents.stream(agent, "What time is it?")
        assert events[-1][0] == "run"
        assert events[-1][1]["status"] in ("succeeded", "step_limit"), events[-1][1]
        models = [s for kind, s in events if kind == "step" and s["kind"] == "model"]
        assert models and all(s["status"] == "completed" for s in models)


def test_a_run_ends_when_its_owner_is_disabled(server: Server) -> None:
    key = _user_key(server, "dee")
    with Agents(server.url, key) as agents:
        agent = agents.create(name="scribe", tools=["write_file"], tool_choice=["write_file"],
                              max_steps=2)  # fmt: skip
        run = agents.run(agent, "Write a note saying the backup finished.")
        waiting = agents.wait(run["id"], "awaiting_approval")
    _cli(server.home, "users", "disable", "dee")
    [step] = [s for s in waiting["steps"] if s["status"] == "awaiting_approval"]
    with Agents(server.url) as admin:  # the local admin decides
        decision = f"/api/agents/runs/{run['id']}/steps/{step['id']}/decision"
        assert admin.http.post(decision, json={"approve": True}).status_code == 200
        failed = admin.wait(run["id"], "failed")
    # The approved call ran; the model was not called again for a disabled user.
    assert [s["kind"] for s in failed["steps"]] == ["model", "tool"]
    assert failed["error"] == "the user 'dee' is disabled or was removed"


def test_the_local_admins_name_cannot_be_taken(server: Server) -> None:
    taken = blackroad("users", "add", "local", home=server.home)
    assert taken.returncode == 1
    assert "'local' is the local admin's name" in taken.stdout
