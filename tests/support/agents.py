"""A small client of the agents API for tests, and the audit records a server wrote."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import SMOLLM2

FINISHED = ("succeeded", "failed", "cancelled", "step_limit")
Event = tuple[str, dict[str, Any]]


class Agents:
    def __init__(self, url: str, key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=300)

    def __enter__(self) -> Agents:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def create(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post(
            "/api/agents", json={"model": SMOLLM2, "temperature": 0, **fields}
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def run(self, agent: dict[str, Any], text: str) -> dict[str, Any]:
        response = self.http.post(f"/api/agents/{agent['id']}/runs", json={"input": text})
        assert response.status_code == 201, response.text
        run: dict[str, Any] = response.json()
        return run

    def get(self, run_id: int) -> dict[str, Any]:
        response = self.http.get(f"/api/agents/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        return run

    def wait(self, run_id: int, *statuses: str, timeout: float = 300) -> dict[str, Any]:
        """The run once its status is one of ``statuses``; fails on any other final status."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(run_id)
            if run["status"] in statuses:
                return run
            assert run["status"] not in FINISHED, run
            assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
            time.sleep(0.1)

    def wait_for_steps(self, run_id: int, count: int, timeout: float = 300) -> list[dict[str, Any]]:
        """The run's steps once ``count`` of them are completed."""
        deadline = time.monotonic() + timeout
        while True:
            steps: list[dict[str, Any]] = self.get(run_id)["steps"]
            if sum(s["status"] == "completed" for s in steps) >= count:
                return steps
            assert time.monotonic() < deadline, f"run {run_id} has {len(steps)} steps"
            time.sleep(0.05)

    def stream(self, agent: dict[str, Any], text: str) -> list[Event]:
        """The events of a new run, as the run's start streams them."""
        body = {"input": text, "stream": True}
        with self.http.stream("POST", f"/api/agents/{agent['id']}/runs", json=body) as response:
            assert response.status_code == 201
            return read_events(response)

    def events(self, run_id: int) -> list[Event]:
        with self.http.stream("GET", f"/api/agents/runs/{run_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            return read_events(response)


def read_events(response: httpx.Response) -> list[Event]:
    """Server-Sent Events as (event, data) pairs."""
    events: list[Event] = []
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


def sandbox_of(home: Path, agent_id: int) -> Path:
    """The sandbox directory of the agent ``agent_id`` of the server in ``home``."""
    with sqlite3.connect(home / "blackroad.db") as db:
        (name,) = db.execute("SELECT sandbox FROM agents WHERE id = ?", (agent_id,)).fetchone()
    return home / "agents" / str(name)


def audit_records(home: Path) -> list[dict[str, Any]]:
    """Every audit record the server in ``home`` has committed, oldest first."""
    with sqlite3.connect(home / "blackroad.db") as db:
        rows = db.execute("SELECT record FROM audit_records ORDER BY idx").fetchall()
    return [json.loads(record) for (record,) in rows]
