"""Helpers shared by every streaming endpoint, whatever its wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator

from blackroad.api.recording import RequestLog
from blackroad.engines.base import Chunk, Finish


async def started(stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """Wait for the first chunk, then return the whole stream.

    Anything that fails before generation starts (queue full, prompt too
    long, a model that will not load) is raised here, while the handler can
    still answer with a proper status code instead of a 200 and an error event.
    """
    first = await anext(stream)

    async def replay() -> AsyncIterator[Chunk]:
        try:
            yield first
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    return replay()


async def tracked(stream: AsyncIterator[Chunk], log: RequestLog) -> AsyncIterator[Chunk]:
    """Pass chunks through, noting time to first token and usage in the request log."""
    async for chunk in stream:
        log.first_token()
        if chunk.finish is not None:
            log.add_usage(chunk.finish.prompt_tokens, chunk.finish.completion_tokens)
        yield chunk


async def collect(stream: AsyncIterator[Chunk]) -> tuple[str, Finish]:
    parts: list[str] = []
    finish: Finish | None = None
    async for chunk in stream:
        parts.append(chunk.text)
        finish = chunk.finish or finish
    assert finish is not None, "an engine stream always ends with a finish"
    return "".join(parts), finish
