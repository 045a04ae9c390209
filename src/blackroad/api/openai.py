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
from blackroad.api.memory_context import kept, with_memory
from blackroad.api.openai_types import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from blackroad.api.recording import RequestLog, request_log
from blackroad.api.state import forwarded, inference
from blackroad.api.streaming import event_response, started, tracked
from blackroad.engines.base import Chunk, Finish, collect
from blackroad.errors import InvalidRequest
from blackroad.models.types import ModelEntry
from blackroad.service.tools import Answer, CallPart, CallStream, TextStream

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


def _peer_model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "blackroad"}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    service, caller = inference(request), principal(request)
    entries = await service.models(caller)
    # Another node's router asks what this node serves itself.
    peers = [] if forwarded(request) else service.peer_models(caller, [e.name for e in entries])
    data = [_model_object(e) for e in entries] + [_peer_model_object(m) for m in peers]
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    model = await inference(request).resolve(model_id, principal(request), forwarded(request))
    return _peer_model_object(model.name) if model.entry is None else _model_object(model.entry)


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
    model = await service.resolve(body.model, principal(request), forwarded(request))
    params = service.sampling(model, body.sampling())
    context = await with_memory(request, model, body.rendered_messages(), body.blackroad, params)
    generation = kept(
        request,
        context,
        service.generate(
            model,
            params,
            messages=service.conversation(model, context.messages),
            continue_final=body.continue_final(),
            # A stored conversation's history is the server's to fit into the window.
            truncate=context.conversation is not None,
            on_node=record.served_by,
        ),
    )
    extension = context.extension()
    try:
        first = await started(generation)
    except InvalidRequest as exc:
        if exc.param == "max_tokens" and body.max_completion_tokens is not None:
            exc.param = "max_completion_tokens"  # the engine's name for the client's field
        raise
    stream = tracked(first, record)
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

    tools = body.tool_plan()
    if not body.stream:
        text, finish = await collect(stream)
        message, reason = _assistant_message(tools.read(text), finish.reason)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reason,
                }
            ],
            "usage": _usage(finish.prompt_tokens, finish.completion_tokens),
            **({"blackroad": extension} if extension else {}),
        }

    def delta_chunk(delta: dict[str, Any]) -> dict[str, Any]:
        return chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    async def events() -> AsyncIterator[dict[str, Any]]:
        opening = delta_chunk({"role": "assistant", "content": ""})
        if extension:  # known before the first token: clients can show sources at once
            opening["blackroad"] = extension
        yield opening
        # Constrained JSON: a text answer and the calls stream as they are written.
        text_stream, call_stream = TextStream(tools), CallStream()
        async for piece in stream:
            if piece.text and tools.active:
                if fresh := text_stream.feed(piece.text):
                    yield delta_chunk({"content": fresh})
                for part in call_stream.feed(piece.text):
                    yield delta_chunk({"tool_calls": [_call_delta(part)]})
            elif piece.text:
                yield delta_chunk({"content": piece.text})
            if piece.finish is not None:
                reason: str = piece.finish.reason
                if tools.active:
                    answer = text_stream.rest(tools.read(text_stream.buffer))
                    if not call_stream.started:  # what could not be read as it came
                        for delta in _tool_deltas(answer):
                            yield delta_chunk(delta)
                    reason = "tool_calls" if answer.calls else reason
                done = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
                yield chunk([done])
                if body.include_usage:
                    yield chunk(
                        [], _usage(piece.finish.prompt_tokens, piece.finish.completion_tokens)
                    )

    return _event_stream(record, events())


def _assistant_message(answer: Answer, reason: str) -> tuple[dict[str, Any], str]:
    """The assistant's message of a chat completion and its finish_reason."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
    if not answer.calls:
        return message, reason
    message["tool_calls"] = [
        {"id": c.id, "type": "function",
         "function": {"name": c.name, "arguments": c.arguments_json}}
        for c in answer.calls
    ]  # fmt: skip
    return message, "tool_calls"


def _call_delta(part: CallPart) -> dict[str, Any]:
    """A call's part as a ``delta.tool_calls`` item: its start with index, id, type, name
    and empty arguments, or more of its arguments."""
    if part.id is None:
        return {"index": part.index, "function": {"arguments": part.arguments}}
    return {"index": part.index, "id": part.id, "type": "function",
            "function": {"name": part.name, "arguments": ""}}  # fmt: skip


def _tool_deltas(answer: Answer) -> list[dict[str, Any]]:
    """Stream deltas of an answer read whole: its text, or each call's start then its
    arguments."""
    if not answer.calls:
        return [{"content": answer.content}] if answer.content else []
    parts: list[CallPart] = []
    for index, call in enumerate(answer.calls):
        parts.append(CallPart(index, call.id, call.name))
        parts.append(CallPart(index, arguments=call.arguments_json))
    return [{"tool_calls": [_call_delta(part)]} for part in parts]


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request
) -> dict[str, Any] | StreamingResponse:
    record = request_log(request)
    record.model = body.model
    service = inference(request)
    model = await service.resolve(body.model, principal(request), forwarded(request))
    params = service.sampling(model, body.sampling())
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
    def generation(index: int) -> AsyncIterator[Chunk]:
        return service.generate(model, params, prompt=prompts[index], on_node=record.served_by)

    first = await started(generation(0))

    def stream_for(index: int) -> AsyncIterator[Chunk]:
        return tracked(first if index == 0 else generation(index), record)

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
    model = await service.resolve(body.model, principal(request), forwarded(request))
    result = await service.embed(model, inputs, on_node=record.served_by)
    width = len(result.vectors[0])
    if body.dimensions is not None and body.dimensions != width:
        raise InvalidRequest(
            f"{body.model} produces {width}-dimensional embeddings and cannot shorten them",
            param="dimensions",
        )
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
