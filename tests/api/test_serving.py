"""Serving behaviour across requests: disconnects, a full queue, API keys, binding."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.test_openai import requests_table
from tests.conftest import SMOLLM2
from tests.support.server import BLACKROAD, Server, running_server, server_env

STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a long story about a dragon and a knight."}
]
KEY = "br-test-key-0123456789"


@pytest.fixture(scope="module")
def no_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that refuses (503) any request arriving while its model is busy."""
    with running_server(
        tmp_path_factory.mktemp("queue"), max_queue="0", retry_after="3", num_parallel="1"
    ) as s:
        yield s


def test_client_disconnect_mid_stream_frees_the_engine(no_queue_server: Server) -> None:
    server = no_queue_server
    body = {"model": SMOLLM2, "messages": STORY, "max_tokens": 2000, "stream": True}
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    # 2000 tokens take tens of seconds. Had generation gone on after the client
    # left, this server (no queue) would answer 503 all that time; it must be
    # free again as soon as it has noticed the closed connection.
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
    for _ in range(50):
        try:
            reply = client.chat.completions.create(model=SMOLLM2, messages=STORY, max_tokens=3)
            break
        except openai.APIStatusError as busy:
            assert busy.status_code == 503
            time.sleep(0.1)
    else:
        pytest.fail("the engine was still busy 5 s after the client disconnected")
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    cancelled = [r for r in requests_table(server) if r["status"] == 499]
    assert cancelled and cancelled[-1]["path"] == "/v1/chat/completions"
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
    response = httpx.get(f"{keyed_server.v1}/models", headers=headers)
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
