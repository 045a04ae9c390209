"""Memory for chat routes of both APIs: their ``blackroad`` field to a ``Context``, and back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from fastapi import Request

from blackroad.api.auth import principal
from blackroad.api.extension_types import BlackRoadChat
from blackroad.api.state import chat_context, inference
from blackroad.engines.base import Chunk, Message, SamplingParams
from blackroad.service.context import Context
from blackroad.service.inference import ModelRef


async def with_memory(
    request: Request,
    model: ModelRef,
    messages: Sequence[Message],
    extension: BlackRoadChat | None,
    params: SamplingParams,
) -> Context:
    """The chat's messages with what its ``blackroad`` field asks put in."""
    ask = None if extension is None else extension.context_request()
    if ask is None or not ask.asked:
        return Context(model.name, list(messages), list(messages))
    if ask.rerank is not None:  # the caller must be allowed the reranking model too
        await inference(request).resolve(ask.rerank, principal(request))
    window = inference(request).window(model)
    return await chat_context(request).prepare(
        principal(request).user, model.name, messages, ask, window, params.max_tokens
    )


def kept(request: Request, context: Context, stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """``stream``, appended to its conversation when it completes (if it has one)."""
    if context.conversation is None:
        return stream
    return chat_context(request).kept(principal(request).user, context, stream)
