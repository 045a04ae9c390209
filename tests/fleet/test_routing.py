"""The router on real processes: requests go to healthy peers and survive the peers that die.

The peers here are fake vLLM servers (``tests/support/fake_vllm.py``): real
HTTP servers speaking vLLM's OpenAI protocol, whose text counts words
(``w1 w2 ...``), so a stream continued on another node can be checked word
for word. ``test_chaos.py`` does the same with real BlackRoad nodes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fleet import Node, fake_vllm, started
from tests.support.server import HTTP_TIMEOUT, Server, running_server
from tests.support.wait import until

MODEL = "fleet-model:1"  # served by the peers only: the control plane has no such file
WORDS = 40


def counted(n: int, start: int = 1) -> str:
    return " ".join(f"w{i}" for i in range(start, n + 1))


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("control")
    with running_server(home, fleet_probe_seconds="0.5", fleet_queue_timeout="3") as server:
        yield server


def add(control: Server, *nodes: Node) -> None:
    with httpx.Client(base_url=control.url, timeout=30) as http:
        for node in nodes:
            name = f"vllm-{node.port}"
            added = http.post(
                "/api/fleet/nodes", json={"name": name, "kind": "openai", "url": node.url}
            )
            assert added.status_code == 201, added.text


def clear(control: Server) -> None:
    with httpx.Client(base_url=control.url, timeout=30) as http:
        for node in http.get("/api/fleet").json()["nodes"][1:]:
            assert http.delete(f"/api/fleet/nodes/{node['name']}").status_code == 204
        until(lambda: MODEL not in models(control))


def models(control: Server) -> list[str]:
    return [m["id"] for m in httpx.get(control.v1 + "/models", timeout=HTTP_TIMEOUT).json()["data"]]


@pytest.fixture
def fleet(control: Server, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[Node]]:
    """``request.param`` fake vLLM peers (default 2) of the control plane, removed afterwards."""
    count, token_ms = getattr(request, "param", (2, 30.0))
    nodes = [fake_vllm(tmp_path / f"vllm{i}", MODEL, token_ms) for i in range(count)]
    with started(nodes):
        add(control, *nodes)  # routed at once: no waiting for a probe round
        assert MODEL in models(control)
        try:
            yield nodes
        finally:
            clear(control)


def control_name(control: Server) -> str:
    """The control plane's own name in the fleet (its host name, here)."""
    nodes = httpx.get(control.url + "/api/fleet", timeout=HTTP_TIMEOUT).json()["nodes"]
    name: str = nodes[0]["name"]
    return name


def requests_seen(node: Node) -> int:
    return node.log.read_text().count("request /v1/")


def serving_node(nodes: list[Node], before: list[int]) -> Node:
    """The node that has received a request since ``before`` was counted."""
    until(lambda: any(requests_seen(n) > b for n, b in zip(nodes, before, strict=True)))
    return next(n for n, b in zip(nodes, before, strict=True) if requests_seen(n) > b)


def records(control: Server, path: str) -> list[sqlite3.Row]:
    with sqlite3.connect(control.home / "blackroad.db") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM requests WHERE path = ? ORDER BY id", (path,)).fetchall()


CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "count"}]


def test_the_fleet_lists_and_serves_the_peers_models(control: Server, fleet: list[Node]) -> None:
    client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=5)
    assert reply.choices[0].message.content == counted(5)
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    tags = ollama.Client(host=control.url).list()
    assert MODEL in [m.model for m in tags.models]
    vectors = client.embeddings.create(model=MODEL, input=["a", "bb"])
    assert [v.embedding for v in vectors.data] == [[1.0, 0.0, 1.0], [1.0, 0.0, 2.0]]
    row = records(control, "/v1/chat/completions")[-1]
    assert row["node"].startswith("vllm-") and row["completion_tokens"] == 5
    metrics = httpx.get(control.url + "/metrics", timeout=HTTP_TIMEOUT).text
    up = {
        sample.labels["node"]: sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "blackroad_node_up"
        for sample in family.samples
    }
    assert up == {f"vllm-{n.port}": 1.0 for n in fleet} | {control_name(control): 1.0}


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_a_stream_whose_node_dies_goes_on_from_another_node(
    api: str, control: Server, fleet: list[Node]
) -> None:
    before = [requests_seen(n) for n in fleet]
    pieces: list[str] = []
    finish: Any = None
    if api == "openai":
        client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=WORDS, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        for event in stream:
            if event.choices and event.choices[0].delta.content:
                pieces.append(event.choices[0].delta.content)
                if len(pieces) == 8:
                    serving_node(fleet, before).kill()
            if event.usage is not None:
                finish = event.usage.completion_tokens
    else:
        chat = ollama.Client(host=control.url).chat(
            model=MODEL, messages=CHAT, stream=True, options={"num_predict": WORDS}
        )
        for part in chat:
            pieces.append(part.message.content or "")
            if len(pieces) == 8:
                serving_node(fleet, before).kill()
            if part.done:
                finish = part.eval_count
    assert "".join(pieces) == counted(WORDS)  # nothing lost, nothing repeated
    assert finish == WORDS
    path = "/v1/chat/completions" if api == "openai" else "/api/chat"
    row = records(control, path)[-1]  # once, for the whole stream
    assert (row["status"], row["completion_tokens"], row["error"]) == (200, WORDS, None)


@pytest.mark.parametrize("fleet", [(7, 1.0)], indirect=True)
def test_three_of_seven_down_and_every_request_is_served(
    control: Server, fleet: list[Node]
) -> None:
    for node in fleet[:3]:
        node.kill()
    client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
    for n in range(1, 22):
        if n % 2:
            reply = client.completions.create(model=MODEL, prompt="go", max_tokens=n)
            assert reply.choices[0].text == counted(n)
        else:
            stream = client.completions.create(model=MODEL, prompt="go", max_tokens=n, stream=True)
            assert "".join(e.choices[0].text for e in stream if e.choices) == counted(n)
    # The dead were taken out of rotation: probes mark them down too.
    until(lambda: _states(control).count("down") == 3)


def _states(control: Server) -> list[str]:
    nodes = httpx.get(control.url + "/api/fleet", timeout=HTTP_TIMEOUT).json()["nodes"][1:]
    return [n["state"] for n in nodes]


@pytest.mark.parametrize("fleet", [(1, 1.0)], indirect=True)
def test_with_every_node_down_past_the_wait_a_clean_503_then_service_resumes(
    control: Server, fleet: list[Node]
) -> None:
    """The request waits for a node to come back (``test_waiting.py``), 3 s here, then 503."""
    client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
    fleet[0].kill()
    waited = f"no node serving {MODEL} came back within 3 s"
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, messages=CHAT)
    assert refused.value.status_code == 503
    assert int(refused.value.response.headers["retry-after"]) >= 1
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "node_unavailable"
    assert body["type"] == "server_error" and waited in body["message"]
    with pytest.raises(ollama.ResponseError) as down:
        ollama.Client(host=control.url).generate(model=MODEL, prompt="go")
    assert down.value.status_code == 503 and waited in down.value.error
    fleet[0].start()
    until(lambda: _served(client))


def _served(client: openai.OpenAI) -> bool:
    try:
        reply = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3)
    except openai.APIStatusError:
        return False
    return reply.choices[0].message.content == counted(3)


@pytest.mark.parametrize("fleet", [(1, 50.0)], indirect=True)
def test_a_stream_with_no_node_left_ends_with_an_error_in_each_protocol(
    control: Server, fleet: list[Node]
) -> None:
    chats = len(records(control, "/api/chat"))  # the module's control plane has served others
    client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=WORDS,
        stream=True,
    )

    def read_openai() -> None:
        seen = 0
        for event in stream:
            seen += bool(event.choices and event.choices[0].delta.content)
            if seen == 3:
                fleet[0].kill()

    with pytest.raises(openai.APIError, match="node"):
        read_openai()
    fleet[0].start()
    until(lambda: _served(client))
    chat = ollama.Client(host=control.url).chat(
        model=MODEL, messages=CHAT, stream=True, options={"num_predict": WORDS}
    )

    def read_ollama() -> None:
        for index, _ in enumerate(chat):
            if index == 3:
                fleet[0].kill()

    with pytest.raises(ollama.ResponseError, match="node"):
        read_ollama()
    # Recorded as failed (the client may have gone before the record was written).
    until(lambda: [bool(r["error"]) for r in records(control, "/api/chat")[chats:]] == [True])


@pytest.mark.anyio
@pytest.mark.parametrize("fleet", [(2, 20.0)], indirect=True)
async def test_a_conversation_stays_on_the_node_of_its_first_turn(
    control: Server, fleet: list[Node]
) -> None:
    async with openai.AsyncOpenAI(base_url=control.v1, api_key="unused", max_retries=0) as client:
        talks: list[list[ChatCompletionMessageParam]] = [
            [{"role": "user", "content": f"conversation {i}"}] for i in range(6)
        ]

        async def turn(messages: list[ChatCompletionMessageParam]) -> None:
            reply = await client.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=6
            )
            messages.append(
                {"role": "assistant", "content": reply.choices[0].message.content or ""}
            )
            messages.append({"role": "user", "content": "more"})

        await asyncio.gather(*(turn(t) for t in talks))  # at once: they spread over both nodes
        for talk in talks:  # then one by one, other conversations in between
            await turn(talk)
        where = [
            [node.log.read_text().count(f'"conversation {i}"') for node in fleet] for i in range(6)
        ]
        assert sorted(map(sorted, where)) == [[0, 2]] * 6  # both turns on one node, each time
        assert {row.index(2) for row in where} == {0, 1}  # and both nodes were used


def test_when_every_node_is_busy_requests_wait_then_get_503(tmp_path: Path) -> None:
    """One request at a time per node, one waiting at most, for at most a second."""
    limits = {"fleet_probe_seconds": "0.5", "node_concurrency": "1", "max_queue": "1",
              "fleet_queue_timeout": "1"}  # fmt: skip
    node = fake_vllm(tmp_path / "vllm", MODEL, token_ms=100)
    with running_server(tmp_path / "control", **limits) as control, started([node]):
        add(control, node)
        client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
        busy = client.chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=WORDS, stream=True
        )
        next(iter(busy))  # the node's one place is taken
        with pytest.raises(openai.APIStatusError) as waited:
            client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=1)
        assert waited.value.status_code == 503 and "busy" in waited.value.message
        assert int(waited.value.response.headers["retry-after"]) >= 1
        assert "".join(e.choices[0].delta.content or "" for e in busy if e.choices) != ""
        reply = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
        assert reply.choices[0].message.content == counted(2)  # the place is free again


def test_a_drained_node_gets_no_new_work_until_it_is_undrained(
    control: Server, fleet: list[Node]
) -> None:
    first, second = fleet
    name = f"vllm-{first.port}"
    with httpx.Client(base_url=control.url, timeout=30) as http:
        drained = http.post(f"/api/fleet/nodes/{name}/drain", json={"draining": True})
        assert drained.status_code == 200 and drained.json()["draining"] is True
        listed = {n["name"]: n for n in http.get("/api/fleet").json()["nodes"]}
        assert listed[name]["draining"] is True and listed[name]["state"] == "up"
        client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
        before = requests_seen(first)
        for _ in range(6):
            reply = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
            assert reply.choices[0].message.content == counted(2)
        assert requests_seen(first) == before  # every one went to the other peer
        # Both drained: no node may take the model, a clean 503.
        http.post(f"/api/fleet/nodes/vllm-{second.port}/drain", json={"draining": True})
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
        assert refused.value.status_code == 503
        # Undrained, the first takes work again: it is the only one left undrained.
        http.post(f"/api/fleet/nodes/{name}/drain", json={"draining": False})
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
        assert requests_seen(first) == before + 1
        assert http.post("/api/fleet/nodes/no-such/drain", json={}).status_code == 404
