"""Batching and the prefix cache seen from outside: concurrent clients, /api/ps and /metrics."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.test_operations import scrape, value
from tests.conftest import SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server

COUNTING: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Count from 1 to 50, separated by commas."}
]


@pytest.mark.anyio
async def test_concurrent_streams_each_get_their_whole_answer(
    async_client: openai.AsyncOpenAI,
) -> None:
    async def stream() -> tuple[str, int]:
        events = await async_client.chat.completions.create(
            model=SMOLLM2,
            messages=COUNTING,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, tokens = "", 0
        async for event in events:
            if event.choices:
                text += event.choices[0].delta.content or ""
            if event.usage:
                tokens = event.usage.completion_tokens
        return text, tokens

    # More streams than the server decodes at once: the rest wait their turn.
    results = await asyncio.gather(*(stream() for _ in range(6)))
    assert {tokens for _, tokens in results} == {20}
    assert len({text for text, _ in results}) == 1 and results[0][0]


def test_ps_and_metrics_report_the_prefix_cache(server: Server, client: openai.OpenAI) -> None:
    system = {"role": "system", "content": "You answer in one word. " * 30}
    first = [system, {"role": "user", "content": "Colour of the sky?"}]
    reply = client.chat.completions.create(model=SMOLLM2, messages=first, max_tokens=3)  # type: ignore[arg-type]
    before = scrape(server.url)
    second = [
        *first,
        {"role": "assistant", "content": reply.choices[0].message.content or ""},
        {"role": "user", "content": "And of grass?"},
    ]
    client.chat.completions.create(model=SMOLLM2, messages=second, max_tokens=3)  # type: ignore[arg-type]
    after = scrape(server.url)

    def moved(name: str) -> float:
        return value(after, name, model=SMOLLM2) - value(before, name, model=SMOLLM2)

    assert moved("blackroad_prefix_cache_reused_tokens_total") >= 150  # the system prompt
    assert moved("blackroad_prefix_cache_prompt_tokens_total") > 150
    capacity = value(after, "blackroad_prefix_cache_capacity_tokens", model=SMOLLM2)
    assert 0 < value(after, "blackroad_prefix_cache_tokens", model=SMOLLM2) <= capacity

    loaded = httpx.get(f"{server.url}/api/ps", timeout=HTTP_TIMEOUT).json()["models"]
    entry = next(m for m in loaded if m["name"] == SMOLLM2)
    cache = entry["prefix_cache"]
    assert entry["parallel"] >= 1 and cache["capacity_tokens"] == capacity
    assert 0 < cache["hit_rate"] <= 1 and cache["reused_tokens"] <= cache["prompt_tokens"]
