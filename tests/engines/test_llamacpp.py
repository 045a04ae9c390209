"""The embedded engine in-process: cancellation frees it within one token; order is FIFO."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from blackroad.engines.base import SamplingParams
from blackroad.engines.llamacpp import LlamaCppEngine, LlamaCppOptions
from blackroad.errors import QueueFull
from blackroad.models.bundled import bundled_models
from blackroad.models.metadata import read_metadata
from blackroad.models.types import ModelEntry
from tests.conftest import SMOLLM2

pytestmark = pytest.mark.anyio
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]


@pytest.fixture
async def engine() -> AsyncIterator[LlamaCppEngine]:
    path = bundled_models()[SMOLLM2]
    entry = ModelEntry(SMOLLM2, path, "bundled", 0, datetime.now(UTC), read_metadata(path))
    options = LlamaCppOptions(n_ctx=2048, n_threads=2, n_batch=512, max_queue=2, retry_after=1)
    engine = LlamaCppEngine(entry, options)
    yield engine
    await engine.unload()
    engine.close()


async def test_closing_a_stream_stops_generation_within_one_token(engine: LlamaCppEngine) -> None:
    params = SamplingParams(max_tokens=1000, temperature=0)
    stream = engine.stream_chat(STORY, params)
    received = [await anext(stream) for _ in range(3)]
    assert all(c.finish is None for c in received)
    await stream.aclose()  # type: ignore[attr-defined]
    # The next job runs only once the cancelled one has left the worker thread.
    prompt_tokens = len(await engine.tokenize(engine.template.render(STORY)))
    # Tokens in the KV cache: the prompt, the tokens received, and at most one
    # more that was being sampled when the stream closed.
    assert engine.cached_tokens <= prompt_tokens + len(received) + 1
    assert not engine.health().busy


async def test_requests_are_served_in_arrival_order(engine: LlamaCppEngine) -> None:
    finished: list[int] = []

    async def request(index: int) -> None:
        async for chunk in engine.stream_completion(f"{index}.", SamplingParams(max_tokens=3)):
            if chunk.finish:
                finished.append(index)

    tasks = []
    for index in range(3):
        tasks.append(asyncio.create_task(request(index)))
        await asyncio.sleep(0)  # let each request reach the queue before the next
    await asyncio.gather(*tasks)
    assert finished == [0, 1, 2]


async def test_a_full_queue_refuses_at_once(engine: LlamaCppEngine) -> None:
    long = engine.stream_chat(STORY, SamplingParams(max_tokens=1000))
    await anext(long)  # running
    waiting = [asyncio.create_task(engine.tokenize("x")) for _ in range(engine.options.max_queue)]
    await asyncio.sleep(0)
    assert engine.health().queued == engine.options.max_queue
    with pytest.raises(QueueFull) as refused:
        await engine.tokenize("one too many")
    assert refused.value.retry_after == 1
    await long.aclose()  # type: ignore[attr-defined]
    assert all(await asyncio.gather(*waiting))
