"""The engines of remote nodes, against a real BlackRoad server speaking both protocols.

BlackRoad's own server is the peer here: it speaks the OpenAI protocol as
llama-server and vLLM do, and Ollama's as Ollama does.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from blackroad.engines.base import Chunk, Finish, SamplingParams
from blackroad.engines.ollama_peer import OllamaPeer
from blackroad.engines.openai_peer import OpenAIPeer
from blackroad.engines.remote import RemoteEngine
from blackroad.errors import InvalidRequest, ModelNotFound, NodeUnavailable
from tests.api.test_openai import requests_table
from tests.conftest import SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server, free_port
from tests.support.wait import until

pytestmark = pytest.mark.anyio
PEERS = [OpenAIPeer, OllamaPeer]
HI = [{"role": "user", "content": "Say hello."}]
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


def ps(server: Server) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/api/ps", timeout=HTTP_TIMEOUT)
    models: list[dict[str, Any]] = answer.json()["models"]
    return models


def completions_since(server: Server, seen: int) -> list[int]:
    """The statuses of the node's completion requests recorded after its first ``seen``."""
    paths = ("/v1/completions", "/api/generate")
    return [r["status"] for r in requests_table(server)[seen:] if r["path"] in paths]


async def collect(stream: AsyncIterator[Chunk]) -> tuple[str, Finish]:
    text, finish = "", None
    async for chunk in stream:
        text += chunk.text
        finish = chunk.finish or finish
    assert finish is not None
    return text, finish


@pytest.fixture(params=PEERS, ids=["openai", "ollama"])
async def peer(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[RemoteEngine]:
    engine: RemoteEngine = request.param(SMOLLM2, server.url)
    yield engine
    await engine.close()


async def test_a_peer_streams_a_chat_with_exact_counts(peer: RemoteEngine) -> None:
    text, finish = await collect(peer.stream_chat(HI, SamplingParams(max_tokens=5, temperature=0)))
    assert text and finish.reason == "length" and finish.completion_tokens == 5
    assert finish.prompt_tokens > 5


async def test_a_peer_gives_the_same_greedy_text_as_the_node_itself(
    peer: RemoteEngine, server: Server
) -> None:
    text, _ = await collect(peer.stream_chat(HI, SamplingParams(max_tokens=8, temperature=0)))
    async with httpx.AsyncClient(timeout=120) as http:
        direct = await http.post(
            f"{server.v1}/chat/completions",
            json={"model": SMOLLM2, "messages": HI, "max_tokens": 8, "temperature": 0},
        )
    assert text == direct.json()["choices"][0]["message"]["content"]


async def test_a_peer_streams_a_completion_and_honours_stops(peer: RemoteEngine) -> None:
    params = SamplingParams(max_tokens=40, temperature=0, stop=("5",))
    text, finish = await collect(peer.stream_completion("1, 2, 3, 4,", params))
    assert "5" not in text and finish.reason == "stop"


async def test_a_peer_constrains_output_to_a_schema(peer: RemoteEngine) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    params = SamplingParams(max_tokens=40, temperature=0, json_schema=schema)
    text, _ = await collect(peer.stream_chat([{"role": "user", "content": "A city?"}], params))
    assert isinstance(json.loads(text)["city"], str)


async def test_a_peer_embeds(peer: RemoteEngine) -> None:
    result = await peer.embed(["one", "two"])
    assert len(result.vectors) == 2 and result.prompt_tokens > 0
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-3) for v in result.vectors)


async def test_an_unknown_model_is_model_not_found(server: Server) -> None:
    for kind in PEERS:
        engine = kind("no-such-model:1b", server.url)
        with pytest.raises(ModelNotFound):
            await collect(engine.stream_chat(HI, SamplingParams(max_tokens=1)))
        await engine.close()


async def test_a_bad_request_is_the_clients_error_not_the_nodes(server: Server) -> None:
    engine = OpenAIPeer(SMOLLM2, server.url)
    with pytest.raises(InvalidRequest):
        await collect(engine.stream_chat(HI, SamplingParams(max_tokens=1, temperature=-1)))
    with pytest.raises(InvalidRequest):
        await collect(engine.stream_chat(HI, SamplingParams(), template="{{ x }}"))
    await engine.close()


async def test_a_node_that_is_down_is_node_unavailable() -> None:
    for kind in PEERS:
        engine = kind(SMOLLM2, f"http://127.0.0.1:{free_port()}")
        with pytest.raises(NodeUnavailable) as failed:
            await collect(engine.stream_chat(HI, SamplingParams(max_tokens=1)))
        assert failed.value.retry_after >= 1 and "unreachable" in failed.value.message
        assert not engine.health().busy
        await engine.close()


async def test_closing_a_peer_stream_frees_the_node(peer: RemoteEngine, server: Server) -> None:
    seen = len(requests_table(server))
    # Counting, greedily: no end of text before max_tokens, so the node is still
    # generating when its client leaves (a short answer could end first).
    long = peer.stream_completion(COUNTING, SamplingParams(max_tokens=2000, temperature=0))
    await anext(long)
    assert peer.health().busy
    await long.aclose()  # type: ignore[attr-defined]
    assert not peer.health().busy
    # The node saw its client leave mid-answer (499: tests/api/test_serving.py shows
    # that this stops its engine), and its engine runs nothing.
    until(lambda: bool(completions_since(server, seen)), what="the node's record of it")
    assert completions_since(server, seen) == [499]
    until(lambda: all(m["active"] == 0 for m in ps(server)), what="the node idle")


async def test_a_peers_requests_share_one_kept_alive_connection(
    peer: RemoteEngine, server: Server
) -> None:
    """The hop to a node reuses its connection (``engines/node_http.py``): the node sees
    every request of one engine, streamed or not, come from the same client address."""
    seen = len(requests_table(server))
    params = SamplingParams(max_tokens=2, temperature=0)
    for _ in range(3):
        await collect(peer.stream_completion("Hello", params))
    await peer.embed(["Hello"])
    rows = requests_table(server)[seen:]
    assert len(rows) == 4 and len({row["client"] for row in rows}) == 1
