"""Continuous batching and the prefix cache, in-process on the real bundled models.

Speed is not asserted here (bench/serving.py measures it); what is asserted
is what batching must not change (each sequence's text, seeds, grammars,
stops) and what it must do (share steps fairly, read long prompts in
chunks, reuse and evict cached prefixes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import jsonschema
import pytest

from blackroad.engines.base import Chunk, Finish, SamplingParams
from blackroad.engines.llamacpp import LlamaCppEngine, LlamaCppOptions
from blackroad.models.bundled import bundled_models
from blackroad.models.metadata import read_metadata
from blackroad.models.types import ModelEntry
from tests.conftest import SMOLLM2

pytestmark = pytest.mark.anyio
TOPICS = ["the sea", "a mountain", "bread", "a violin", "winter", "a lighthouse", "rain", "a fox"]


def ask(topic: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write three sentences about {topic}."}]


@asynccontextmanager
async def running(model: str = SMOLLM2, **options: int) -> AsyncIterator[LlamaCppEngine]:
    path = bundled_models()[model]
    entry = ModelEntry(model, path, "bundled", 0, datetime.now(UTC), read_metadata(path))
    settings: dict[str, int] = {
        "n_ctx": 1024, "n_threads": 2, "n_batch": 512, "max_queue": 16, "retry_after": 1,
        "n_parallel": 8, "n_cached": 2, **options,
    }  # fmt: skip
    engine = LlamaCppEngine(entry, LlamaCppOptions(**settings))
    try:
        yield engine
    finally:
        await engine.unload()
        engine.close()


async def text_of(stream: AsyncIterator[Chunk]) -> tuple[str, Finish]:
    parts, finish = [], None
    async for chunk in stream:
        parts.append(chunk.text)
        finish = chunk.finish or finish
    assert finish is not None
    return "".join(parts), finish


async def test_each_sequence_reads_the_same_alone_or_beside_seven_others() -> None:
    # SmolLM2's Q4_1 weights go through the same dot products whatever the
    # batch; Gemma's K-quants are repacked by llama.cpp for batched matrix
    # products that round differently, so its greedy text can drift (see
    # docs/architecture.md).
    params = SamplingParams(max_tokens=24, temperature=0)
    async with running(SMOLLM2) as engine:
        alone = [await text_of(engine.stream_chat(ask(topic), params)) for topic in TOPICS]
        together = await asyncio.gather(
            *(text_of(engine.stream_chat(ask(topic), params)) for topic in TOPICS)
        )
    assert [text for text, _ in together] == [text for text, _ in alone]
    assert [f.completion_tokens for _, f in together] == [f.completion_tokens for _, f in alone]
    assert len({text for text, _ in alone}) > 1  # the prompts really differ


async def test_a_seed_gives_the_same_text_beside_other_sequences() -> None:
    seeded = SamplingParams(max_tokens=24, temperature=1.0, seed=1234)
    async with running() as engine:
        alone, _ = await text_of(engine.stream_chat(ask("a fox"), seeded))
        others = SamplingParams(max_tokens=24, temperature=1.0)
        results = await asyncio.gather(
            *(text_of(engine.stream_chat(ask(topic), others)) for topic in TOPICS[:3]),
            text_of(engine.stream_chat(ask("a fox"), seeded)),
        )
    assert results[-1][0] == alone


async def test_grammars_and_stops_stay_with_their_own_sequence() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    counting = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    async with running() as engine:
        (structured, _), (counted, finish), (free, _) = await asyncio.gather(
            text_of(
                engine.stream_chat(
                    [{"role": "user", "content": "Describe a person as JSON."}],
                    SamplingParams(max_tokens=64, temperature=0, json_schema=schema),
                )
            ),
            text_of(
                engine.stream_chat(
                    counting, SamplingParams(max_tokens=64, temperature=0, stop=("5",))
                )
            ),
            text_of(engine.stream_chat(ask("rain"), SamplingParams(max_tokens=16, temperature=0))),
        )
    jsonschema.validate(json.loads(structured), schema)
    assert "5" not in counted and finish.reason == "stop"
    assert not free.lstrip().startswith("{")


async def test_a_second_turn_reuses_the_first_turns_cache() -> None:
    system = {"role": "system", "content": "You are a patient tutor. " * 40}
    first = [system, {"role": "user", "content": "What is a prime number?"}]
    params = SamplingParams(max_tokens=16, temperature=0)
    async with running() as engine:
        reply, _ = await text_of(engine.stream_chat(first, params))
        prompt_tokens = len(await engine.tokenize(engine.template.render(first)))
        before = engine.health().cache
        assert before is not None
        second = [
            *first,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "And 7?"},
        ]
        await text_of(engine.stream_chat(second, params))
        after = engine.health().cache
    assert after is not None and after.prompts == before.prompts + 1
    # The whole first turn's prompt was found again; only the new part was read.
    assert after.reused_tokens - before.reused_tokens >= prompt_tokens - 1


async def test_a_running_sequences_prefix_is_shared_with_a_newcomer() -> None:
    system = {"role": "system", "content": "You are the help desk of a hospital. " * 20}
    counting = SamplingParams(max_tokens=300, temperature=0)
    params = SamplingParams(max_tokens=8, temperature=0)
    async with running(n_parallel=2, n_cached=0) as engine:
        first = engine.stream_chat([system, {"role": "user", "content": "Count to 100."}], counting)
        await anext(first)  # running, its stream holding the system prompt
        before = engine.health().cache
        newcomer = [system, {"role": "user", "content": "Where is radiology?"}]
        alone_text, _ = await text_of(engine.stream_chat(newcomer, params))
        after = engine.health().cache
        await first.aclose()  # type: ignore[attr-defined]
    assert before is not None and after is not None
    shared = len("You are the help desk of a hospital. " * 20) // 6  # tokens, roughly
    assert after.reused_tokens - before.reused_tokens >= shared
    assert alone_text


async def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    params = SamplingParams(max_tokens=4, temperature=0)

    def conversation(name: str) -> list[dict[str, str]]:
        system = f"You are {name}. " + f"{name} knows many things about {name}'s town. " * 20
        return [{"role": "system", "content": system}, {"role": "user", "content": "Hello"}]

    async with running(n_parallel=1, n_cached=1) as engine:  # two sequences in all

        async def reused(name: str) -> int:
            before = engine.health().cache
            await text_of(engine.stream_chat(conversation(name), params))
            after = engine.health().cache
            assert after is not None
            return after.reused_tokens - (before.reused_tokens if before else 0)

        for name in ("Ada", "Bea", "Cyd"):
            await reused(name)
        cache = engine.health().cache
        assert cache is not None and cache.cached_tokens <= cache.capacity_tokens
        assert await reused("Cyd") > 100  # the most recent is kept
        assert await reused("Ada") < 20  # the oldest was evicted: only the template's start matches


async def test_every_running_stream_gets_a_token_each_step() -> None:
    arrivals: list[int] = []
    params = SamplingParams(max_tokens=40, temperature=0)
    counting = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]

    async with running(n_parallel=4) as engine:

        async def consume(index: int) -> None:
            async for chunk in engine.stream_chat(counting, params):
                if chunk.finish is None:
                    arrivals.append(index)

        await asyncio.gather(*(consume(index) for index in range(4)))

    counts = [0, 0, 0, 0]
    for index in arrivals:
        counts[index] += 1
        # No stream gets ahead of another by more than a step or two of text.
        assert max(counts) - min(counts) <= 3, counts


async def test_a_long_prompt_is_read_in_chunks_while_others_decode() -> None:
    long_prompt = [{"role": "user", "content": "Summarize: " + "the quick brown fox jumps. " * 60}]
    counting = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]
    async with running(n_batch=32, n_parallel=2) as engine:
        runner = engine.stream_chat(counting, SamplingParams(max_tokens=400, temperature=0))
        await anext(runner)
        prompt_tokens = len(await engine.tokenize(engine.template.render(long_prompt)))
        assert prompt_tokens > 8 * 32
        received = 0
        late = engine.stream_chat(long_prompt, SamplingParams(max_tokens=1, temperature=0))
        reader = asyncio.ensure_future(anext(late))
        while not reader.done():
            await anext(runner)
            received += 1
        await runner.aclose()  # type: ignore[attr-defined]
        await late.aclose()  # type: ignore[attr-defined]
    # One token per step for the runner, while the prompt took at least
    # prompt_tokens / 32 steps to read: the runner was never frozen.
    assert received >= prompt_tokens // 32 - 2


async def test_cancelling_one_sequence_leaves_the_others_running() -> None:
    params = SamplingParams(max_tokens=30, temperature=0)
    async with running(n_parallel=3) as engine:
        doomed = engine.stream_chat(ask("winter"), SamplingParams(max_tokens=500, temperature=0))
        others = [
            asyncio.ensure_future(text_of(engine.stream_chat(ask(t), params))) for t in TOPICS[:2]
        ]
        await anext(doomed)
        await doomed.aclose()  # type: ignore[attr-defined]
        results = await asyncio.gather(*others)
        assert all(finish.completion_tokens == 30 for _, finish in results)
        assert engine.health().active == 0
