"""The OpenAI API under /v1: models, chat completions, completions, embeddings.

Wire format as OpenAI documents it: JSON responses, Server-Sent Events for
streams (``data: {...}`` lines ending with ``data: [DONE]``), and OpenAI error
objects. Handlers translate; the work happens in ``service`` and ``engines``.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse

from blackroad.api.auth import principal, require_scope
from blackroad.api.errors import openai_error_body
from blackroad.api.openai_types import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from blackroad.api.recording import RequestLog, request_log
from blackroad.api.state import inference
from blackroad.api.streaming import collect, event_response, started, tracked
from blackroad.engines.base import Chunk, Finish
from blackroad.errors import InvalidRequest
from blackroad.models.types import ModelEntry

router = APIRouter(prefix="/v1", dependencies=[Depends(require_scope("inference"))])
SYSTEM_FINGERPRINT = "blackroad"


def _model_object(entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": entry.name,
        "object": "model",
        "created": int(entry.modified_at.timestamp()),
        "owned_by": "blackroad",
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    entries = await inference(request).models(principal(request))
    return {"object": "list", "data": [_model_object(e) for e in entries]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    return _model_object(await inference(request).model(model_id, principal(request)))


def _event_stream(record: RequestLog, events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return event_response(
        events, record, _sse, openai_error_body, "text/event-stream", "data: [DONE]\n\n"
    )


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> dict[str, Any] | StreamingResponse:
    record = request_log(request)
    record.model = body.model
    service = inference(request)
    engine = await service.engine(body.model, principal(request))
    messages = service.conversation(engine.entry, body.rendered_messages())
    params = service.sampling(engine.entry, body.sampling())
    try:
        first = await started(engine.stream_chat(messages, params))
    except InvalidRequest as exc:
        if exc.param == "max_tokens" and body.max_completion_tokens is not None:
            exc.param = "max_completion_tokens"  # the engine's name for the client's field
        raise
    stream = tracked(service.held(engine, first, None), record)
    completion_id = f"chatcmpl-{secrets.token_hex(12)}"
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if body.include_usage:
            event["usage"] = usage
        return event

    if not body.stream:
        text, finish = await collect(stream)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish.reason,
                }
            ],
            "usage": _usage(finish.prompt_tokens, finish.completion_tokens),
        }

    async def events() -> AsyncIterator[dict[str, Any]]:
        delta = {"role": "assistant", "content": ""}
        yield chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
        async for piece in stream:
            if piece.text:
                delta = {"content": piece.text}
                yield chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
            if piece.finish is not None:
                done = {
                    "index": 0,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": piece.finish.reason,
                }
                yield chunk([done])
                if body.include_usage:
                    yield chunk(
                        [], _usage(piece.finish.prompt_tokens, piece.finish.completion_tokens)
                    )

    return _event_stream(record, events())


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request
) -> dict[str, Any] | StreamingResponse:
    record = request_log(request)
    record.model = body.model
    service = inference(request)
    engine = await service.engine(body.model, principal(request))
    params = service.sampling(engine.entry, body.sampling())
    prompts = body.prompts()
    completion_id = f"cmpl-{secrets.token_hex(12)}"
    created = int(time.time())

    def choice(index: int, text: str, finish: Finish | None) -> dict[str, Any]:
        return {
            "index": index,
            "text": text,
            "logprobs": None,
            "finish_reason": None if finish is None else finish.reason,
        }

    def envelope(choices: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            "usage": usage,
        }

    # Prompts are generated in turn; the first is started here so that its
    # errors (queue full, prompt too long) still become an HTTP status.
    first = await started(engine.stream_completion(prompts[0], params))

    def stream_for(index: int) -> AsyncIterator[Chunk]:
        stream = first if index == 0 else engine.stream_completion(prompts[index], params)
        return tracked(service.held(engine, stream, None), record)

    if not body.stream:
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, prompt in enumerate(prompts):
            text, finish = await collect(stream_for(index))
            choices.append(choice(index, (prompt if body.echo else "") + text, finish))
            prompt_tokens += finish.prompt_tokens
            completion_tokens += finish.completion_tokens
        return envelope(choices, _usage(prompt_tokens, completion_tokens))

    async def events() -> AsyncIterator[dict[str, Any]]:
        totals = [0, 0]
        for index, prompt in enumerate(prompts):
            if body.echo:
                yield envelope([choice(index, prompt, None)], None)
            async for piece in stream_for(index):
                if piece.text or piece.finish is not None:
                    yield envelope([choice(index, piece.text, piece.finish)], None)
                if piece.finish is not None:
                    totals[0] += piece.finish.prompt_tokens
                    totals[1] += piece.finish.completion_tokens
        if body.include_usage:
            yield envelope([], _usage(*totals))

    return _event_stream(record, events())


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    record = request_log(request)
    record.model = body.model
    inputs = body.inputs()
    service = inference(request)
    engine = await service.engine(body.model, principal(request))
    entry = engine.entry
    if body.dimensions is not None and body.dimensions != entry.metadata.embedding_length:
        raise InvalidRequest(
            f"{body.model} produces {entry.metadata.embedding_length}-dimensional embeddings "
            "and cannot shorten them",
            param="dimensions",
        )
    try:
        result = await engine.embed(inputs)
    finally:
        await service.release(engine, None)
    record.add_usage(result.prompt_tokens, 0)

    def encode(vector: list[float]) -> list[float] | str:
        if body.encoding_format == "float":
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(result.vectors)
        ],
        "model": body.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
