"""Helpers shared by every streaming endpoint, whatever its wire format."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

from blackroad.api.recording import RequestLog, describe_error
from blackroad.engines.base import Chunk
from blackroad.errors import BlackRoadError, EngineError

log = logging.getLogger(__name__)
Event = dict[str, Any]


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
        log.generated.add(chunk.text)
        if chunk.finish is not None:
            log.add_usage(chunk.finish.prompt_tokens, chunk.finish.completion_tokens)
        yield chunk


def event_response(
    events: AsyncIterator[Event],
    record: RequestLog,
    encode: Callable[[Event], str],
    error_event: Callable[[BlackRoadError], Event],
    media_type: str,
    last_line: str = "",
) -> StreamingResponse:
    """Stream ``events``; an error after the headers went out becomes an error event.

    The request record is committed before ``last_line`` (SSE's ``data: [DONE]``),
    so a client that read the whole stream can rely on the record existing.
    """

    async def lines() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield encode(event)
        except BlackRoadError as exc:
            record.error = exc.message
            yield encode(error_event(exc))
        except Exception as exc:
            log.exception("stream for %s failed", record.model)
            record.error = describe_error(exc)
            yield encode(error_event(EngineError("generation failed; see the server log")))
        await record.commit()
        if last_line:
            yield last_line

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(lines(), media_type=media_type, headers=headers)
