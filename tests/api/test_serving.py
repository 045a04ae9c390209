"""Serving behaviour across requests: disconnects, a full queue, API keys, binding."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.test_openai import requests_table
from tests.conftest import SMOLLM2
from tests.support.server import BLACKROAD, HTTP_TIMEOUT, Server, running_server, server_env
from tests.support.wait import until

STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a long story about a dragon and a knight."}
]
KEY = "br-test-key-0123456789"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


@pytest.fixture(scope="module")
def no_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that refuses (503) any request arriving while its model is busy."""
    with running_server(
        tmp_path_factory.mktemp("queue"), max_queue="0", retry_after="3", num_parallel="1"
    ) as s:
        yield s


def smollm2_ps(server: Server) -> dict[str, Any]:
    """smollm2's entry in /api/ps (loaded models), or {} while it is not loaded."""
    models = httpx.get(f"{server.url}/api/ps", timeout=HTTP_TIMEOUT).json()["models"]
    return next((m for m in models if m["model"] == SMOLLM2), {})


def test_client_disconnect_mid_stream_frees_the_engine(no_queue_server: Server) -> None:
    server = no_queue_server
    before = (smollm2_ps(server).get("prefix_cache") or {}).get("cached_tokens", 0)
    # Counting, greedily: no end of text before max_tokens, so a generation that went on
    # after the client left would put all 2000 tokens in the KV cache.
    body = {"model": SMOLLM2, "prompt": COUNTING, "max_tokens": 2000, "temperature": 0}
    with httpx.stream(
        "POST", f"{server.v1}/completions", json={**body, "stream": True}, timeout=HTTP_TIMEOUT
    ) as response:
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    until(lambda: smollm2_ps(server)["active"] == 0, what="the engine free")
    cached = smollm2_ps(server)["prefix_cache"]["cached_tokens"] - before
    # The prompt, the few tokens sent, and those made while the server noticed: far
    # fewer than the 2000 (counted in the engine's tokens, so a slow machine is no excuse).
    assert cached < 1000
    # This server (no queue) answers 503 while the model is busy: it serves again at once.
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
    reply = client.chat.completions.create(model=SMOLLM2, messages=STORY, max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    cancelled = [r for r in requests_table(server) if r["status"] == 499]
    assert cancelled and cancelled[-1]["path"] == "/v1/completions"
    assert server.alive()


@pytest.mark.anyio
async def test_busy_model_answers_503_with_retry_after(no_queue_server: Server) -> None:
    async with openai.AsyncOpenAI(
        base_url=no_queue_server.v1, api_key="x", max_retries=0
    ) as client:
        running = await client.chat.completions.create(
            model=SMOLLM2, messages=STORY, max_tokens=2000, stream=True
        )
        await anext(aiter(running))
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(model=SMOLLM2, messages=STORY, max_tokens=2)
        assert refused.value.status_code == 503
        assert refused.value.response.headers["retry-after"] == "3"
        error = refused.value.body
        assert isinstance(error, dict) and error["code"] == "queue_full"
        await running.close()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("keyed"), api_key=KEY) as s:
        yield s


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "You didn't provide an API key"),
        ({"Authorization": f"Bearer {KEY}x"}, "Incorrect API key"),
        ({"Authorization": f"Basic {KEY}"}, "You didn't provide an API key"),
    ],
    ids=["missing", "wrong", "wrong-scheme"],
)
def test_api_key_required_when_configured(
    keyed_server: Server, headers: dict[str, str], message: str
) -> None:
    response = httpx.get(f"{keyed_server.v1}/models", headers=headers, timeout=HTTP_TIMEOUT)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and message in error["message"]
    assert KEY not in response.text


def test_right_key_is_accepted_by_the_official_client(keyed_server: Server) -> None:
    client = openai.OpenAI(base_url=keyed_server.v1, api_key=KEY, max_retries=0)
    assert SMOLLM2 in {m.id for m in client.models.list()}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed_server.v1, api_key="nope", max_retries=0).models.list()
    assert KEY not in keyed_server.log.read_text()


def test_non_loopback_bind_without_a_key_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BLACKROAD), "up", "--host", "0.0.0.0"],
        env=server_env(tmp_path, 0),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "BLACKROAD_API_KEY" in result.stderr
