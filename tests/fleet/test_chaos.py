"""Nodes killed under load: a control plane, three joined BlackRoad nodes, a "vLLM", no loss.

The official clients keep a steady load of streamed and unstreamed chats on
the control plane while nodes are SIGKILLed and started again. Every request
must succeed, every stream must be complete and well formed, and each must
be recorded exactly once.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import SMOLLM2
from tests.fleet.test_routing import MODEL, records
from tests.support.fleet import Node, fake_vllm, joined, node_key, started
from tests.support.server import HTTP_TIMEOUT, Server, running_server
from tests.support.wait import until

REQUESTS = 36
WORKERS = 4
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Server, list[Node], Node]]:
    vllm = fake_vllm(tmp_path / "vllm", MODEL, token_ms=10)
    with (
        running_server(tmp_path / "control", fleet_probe_seconds="0.5") as control,
        httpx.Client(timeout=120) as http,
    ):
        token = http.post(control.url + "/api/fleet/tokens", json={"uses": 3}).json()["token"]
        nodes = [
            joined(control.url, tmp_path / f"node{i}", f"node{i}", token, num_threads="1",
                   num_parallel="2")
            for i in range(3)
        ]  # fmt: skip
        with started([vllm]):
            try:
                for node in nodes:  # the model exists on the nodes only, under the fleet's name
                    node.wait_ready()
                    made = http.post(
                        node.url + "/api/create",
                        json={"model": MODEL, "from": SMOLLM2},
                        headers={"Authorization": f"Bearer {node_key(node)}"},
                    )
                    assert made.status_code == 200, made.text
                body = {"name": "vllm", "kind": "openai", "url": vllm.url}
                assert http.post(control.url + "/api/fleet/nodes", json=body).status_code == 201
                until(lambda: _listed(control) and _serving(control) == 4)
                yield control, nodes, vllm
            finally:
                for node in nodes:
                    node.stop()


def _serving(control: Server) -> int:
    """How many peers list the fleet's model, and are up."""
    peers = httpx.get(control.url + "/api/fleet", timeout=HTTP_TIMEOUT).json()["nodes"][1:]
    return sum(MODEL in p["models"] and p["state"] == "up" for p in peers)


def chat(control: Server, index: int) -> int:
    """One request of the load, in one of three shapes; the completion tokens it reports."""
    shape = index % 3
    client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
    if shape == 0:
        stream = client.chat.completions.create(
            model=MODEL, messages=CHAT, stream=True, temperature=0, max_tokens=24,
            stream_options={"include_usage": True},
        )  # fmt: skip
        finish, usage = None, None
        for event in stream:
            if event.choices and event.choices[0].finish_reason:
                finish = event.choices[0].finish_reason
            usage = event.usage or usage
        assert finish in ("stop", "length") and usage is not None
        return usage.completion_tokens
    if shape == 1:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=CHAT,
            temperature=0,
            max_tokens=24,
        )
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage
        return reply.usage.completion_tokens
    parts = list(
        ollama.Client(host=control.url).chat(
            model=MODEL, messages=CHAT, stream=True, options={"temperature": 0, "num_predict": 24}
        )
    )
    assert parts[-1].done and all(not p.done for p in parts[:-1])
    assert parts[-1].done_reason in ("stop", "length")
    return int(parts[-1].eval_count or 0)


def test_nodes_killed_under_load_lose_no_request(
    fleet: tuple[Server, list[Node], Node],
) -> None:
    control, nodes, _ = fleet
    until(lambda: _listed(control))
    failures: list[BaseException] = []
    tokens: list[int] = []
    done = threading.Event()
    counter = iter(range(REQUESTS))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            try:
                tokens.append(chat(control, index))
            except Exception as exc:  # every failure is the test's finding
                failures.append(exc)

    restarts: list[threading.Timer] = []

    def killer() -> None:
        rng = random.Random(7)
        kills = 0
        while not done.wait(2.0):
            alive = [n for n in nodes if n.alive]
            if len(alive) < 2:  # the vLLM and one node always stay: someone can serve
                continue
            victim = rng.choice(alive)
            victim.kill()
            kills += 1
            restart = threading.Timer(1.0, victim.start, kwargs={"wait": False})
            restarts.append(restart)
            restart.start()
        assert kills >= 2

    workers = [threading.Thread(target=worker) for _ in range(WORKERS)]
    chaos = threading.Thread(target=killer)
    chaos.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    chaos.join()
    for restart in restarts:  # before the fixture stops the nodes: none may start after
        restart.join()
    assert failures == []
    assert len(tokens) == REQUESTS and all(t > 0 for t in tokens)
    rows = records(control, "/v1/chat/completions") + records(control, "/api/chat")
    assert len(rows) == REQUESTS  # once per request, however many nodes served it
    assert all(row["status"] == 200 and row["error"] is None for row in rows)
    assert sorted(row["completion_tokens"] for row in rows) == sorted(tokens)


def _listed(control: Server) -> bool:
    models = httpx.get(control.v1 + "/models", timeout=HTTP_TIMEOUT).json()["data"]
    return MODEL in [m["id"] for m in models]


def test_a_killed_node_rejoins_by_itself(fleet: tuple[Server, list[Node], Node]) -> None:
    control, nodes, vllm = fleet
    vllm.kill()
    for node in nodes[1:]:
        node.kill()
    until(lambda: _state(control, "node1") == "down" and _state(control, "vllm") == "down")
    for node in nodes[1:]:
        node.start()
    until(lambda: _state(control, "node1") == "up" and _state(control, "node2") == "up")
    assert {row["node"] for row in _spread(control, 12)} >= {"node1", "node2"}


def _state(control: Server, name: str) -> str:
    nodes = httpx.get(control.url + "/api/fleet", timeout=HTTP_TIMEOUT).json()["nodes"]
    return str(next(n["state"] for n in nodes if n["name"] == name))


def _spread(control: Server, count: int) -> list[dict[str, object]]:
    """``count`` requests at once; the records of them."""
    threads = [threading.Thread(target=chat, args=(control, 1)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [dict(row) for row in records(control, "/v1/chat/completions")[-count:]]
