"""The Ollama API: generate, chat, embeddings, and what is installed and loaded.

Field for field as Ollama documents it (docs/api.md): NDJSON streams whose
last object carries ``done_reason`` and the timings in nanoseconds, errors as
``{"error": "..."}``. Model management (create, copy, delete, blobs, pull,
push) lives in ``ollama_models.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from blackroad import __version__
from blackroad.api.auth import principal, require_scope
from blackroad.api.memory_context import kept, with_memory
from blackroad.api.ollama_types import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ShowRequest,
    _Inference,
    parse_duration,
)
from blackroad.api.recording import RequestLog, request_log
from blackroad.api.state import forwarded, inference
from blackroad.api.streaming import event_response, started, tracked
from blackroad.engines.base import CacheHealth, Chunk, Finish, collect
from blackroad.errors import InvalidRequest
from blackroad.models import modelfile
from blackroad.models.types import ModelEntry
from blackroad.service.inference import ModelRef
from blackroad.service.tools import Answer, TextStream, ToolPlan

router = APIRouter(prefix="/api", dependencies=[Depends(require_scope("inference"))])
# The Ollama API level this server speaks; clients compare it to feature minimums.
OLLAMA_VERSION = "0.12.0"


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


def ndjson(lines: AsyncIterator[dict[str, Any]], record: RequestLog) -> StreamingResponse:
    """An NDJSON response; an error after the headers went out becomes an error line."""
    return event_response(
        lines,
        record,
        lambda line: json.dumps(line, ensure_ascii=False) + "\n",
        lambda error: {"error": error.message},
        "application/x-ndjson",
    )


def digest_of(entry: ModelEntry) -> str:
    """The manifest digest for stored models; for files, one derived from identity."""
    if entry.digest:
        return entry.digest.removeprefix("sha256:")
    identity = f"{entry.path}:{entry.size}:{entry.modified_at.isoformat()}"
    return hashlib.sha256(identity.encode()).hexdigest()


def details(entry: ModelEntry) -> dict[str, Any]:
    meta = entry.metadata
    return {
        "parent_model": "",
        "format": "gguf",
        "family": meta.architecture,
        "families": [meta.architecture],
        "parameter_size": meta.parameter_size,
        "quantization_level": meta.quantization,
    }


def cache_view(cache: CacheHealth) -> dict[str, Any]:
    return {**dataclasses.asdict(cache), "hit_rate": round(cache.hit_rate, 4)}


def timings(finish: Finish, started_ns: int) -> dict[str, Any]:
    return {
        "done_reason": finish.reason,
        "total_duration": time.perf_counter_ns() - started_ns,
        "load_duration": finish.load_ns,
        "prompt_eval_count": finish.prompt_tokens,
        "prompt_eval_duration": finish.prompt_eval_ns,
        "eval_count": finish.completion_tokens,
        "eval_duration": finish.eval_ns,
    }


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION, "blackroad": __version__}


@router.get("/tags")
async def tags(request: Request) -> dict[str, Any]:
    service, caller = inference(request), principal(request)
    entries = await service.models(caller)
    here = [
        {
            "name": e.name,
            "model": e.name,
            "modified_at": timestamp(e.modified_at),
            "size": e.size,
            "digest": digest_of(e),
            "details": details(e),
        }
        for e in entries
    ]
    # Models only peers serve: this node knows their names, not their files.
    unknown = timestamp(datetime.fromtimestamp(0, UTC))
    peers = [
        {"name": n, "model": n, "modified_at": unknown, "size": 0, "digest": "", "details": {}}
        for n in service.peer_models(caller, [e.name for e in entries])
        if not forwarded(request)  # another node's router asks what this node serves itself
    ]
    return {"models": here + peers}


@router.post("/show")
async def show(body: ShowRequest, request: Request) -> dict[str, Any]:
    service = inference(request)
    entry = await service.model(body.model_name, principal(request))
    meta, config = entry.metadata, entry.config
    arch = meta.architecture
    engine = service.pool.get(entry)
    # An embedding model has no chat template: the built-in fallback would be a fiction.
    template = "" if meta.embedding_only else engine.template.source
    stop = () if meta.embedding_only else engine.template.stop
    parameters = dict(config.parameters)
    if stop and "stop" not in parameters:
        parameters["stop"] = list(stop)
    spec = modelfile.Modelfile(
        base=str(entry.path),
        parameters=parameters,
        template=template,
        system=config.system,
        messages=[dict(m) for m in config.messages],
        license=list(config.license),
    )
    return {
        "modelfile": modelfile.render(spec),
        "parameters": "\n".join(
            f"{k:<16}{json.dumps(item) if k == 'stop' else item}"
            for k, v in parameters.items()
            for item in (v if isinstance(v, list) else [v])
        ),
        "template": template,
        "system": config.system or "",
        "license": "\n".join(config.license),
        "details": details(entry),
        "model_info": {
            "general.architecture": arch,
            "general.name": meta.general_name or "",
            "general.parameter_count": meta.parameter_count,
            "general.file_type": meta.quantization,
            f"{arch}.context_length": meta.context_length,
            f"{arch}.embedding_length": meta.embedding_length,
            **({} if meta.pooling_type is None else {f"{arch}.pooling_type": meta.pooling_type}),
        },
        "capabilities": ["embedding"] if meta.embedding_only else ["completion", "embedding"],
        "modified_at": timestamp(entry.modified_at),
    }


@router.get("/ps")
async def ps(request: Request) -> dict[str, Any]:
    models = []
    for engine, expires_at in inference(request).pool.loaded():
        entry, health = engine.entry, engine.health()
        never = expires_at == float("inf")
        expires = (
            datetime.max.replace(tzinfo=UTC) if never else datetime.fromtimestamp(expires_at, UTC)
        )
        models.append(
            {
                "name": entry.name,
                "model": entry.name,
                "size": engine.memory_bytes,
                "digest": digest_of(entry),
                "details": details(entry),
                "expires_at": timestamp(expires),
                "size_vram": 0,
                "context_length": engine.n_ctx,
                # BlackRoad's own: sequences decoded together, and the prefix cache.
                "parallel": engine.options.n_parallel,
                "active": health.active,
                "prefix_cache": None if health.cache is None else cache_view(health.cache),
            }
        )
    return {"models": models}


async def _model_for(body: _Inference, request: Request) -> ModelRef:
    if body.think:
        raise InvalidRequest(f"{body.model_name} does not support thinking", param="think")
    return await inference(request).resolve(body.model_name, principal(request), forwarded(request))


def _placement(body: _Inference, request: Request) -> dict[str, Any]:
    """Where and for how long the model runs: the request's keep_alive, num_ctx, num_thread."""
    options = body.options
    return {
        "keep_alive": body.keep_alive_seconds(),
        "n_ctx": options.num_ctx if options else None,
        "n_threads": options.num_thread if options else None,
    }


async def _load_or_unload(
    model: ModelRef, body: _Inference, request: Request, shape: dict[str, Any]
) -> dict[str, Any]:
    """An empty prompt loads the model, or with keep_alive 0 unloads it (Ollama's way)."""
    service = inference(request)
    if body.keep_alive_seconds() == 0:
        await service.unload(model)
        reason = "unload"
    else:
        await service.load(model, **_placement(body, request))
        reason = "load"
    return {"model": body.model_name, "created_at": timestamp(), **shape, "done": True,
            "done_reason": reason}  # fmt: skip


async def _respond(
    body: _Inference,
    request: Request,
    stream: AsyncIterator[Chunk],
    piece: Any,
    extension: dict[str, Any] | None = None,
    tools: ToolPlan | None = None,
) -> dict[str, Any] | StreamingResponse:
    """Non-streamed: one object; streamed: NDJSON. ``piece`` shapes a text fragment.

    ``extension`` (memory the chat used) is BlackRoad's ``blackroad`` field of the final object.
    With ``tools`` the reply is constrained JSON: a text answer streams as it grows,
    tool calls come in one line before the last, once the JSON is whole.
    """
    started_ns = time.perf_counter_ns()
    record = request_log(request)
    chunks = tracked(await started(stream), record)
    last = {"blackroad": extension} if extension else {}
    if not body.stream:
        text, finish = await collect(chunks)
        shaped = piece(text) if tools is None else _assistant_message(tools.read(text))
        return {"model": body.model_name, "created_at": timestamp(), **shaped,
                "done": True, **timings(finish, started_ns), **last}  # fmt: skip

    async def lines() -> AsyncIterator[dict[str, Any]]:
        text_stream = None if tools is None else TextStream(tools)
        async for chunk in chunks:
            fresh = chunk.text if text_stream is None else text_stream.feed(chunk.text)
            if fresh:
                yield {"model": body.model_name, "created_at": timestamp(),
                       **piece(fresh), "done": False}  # fmt: skip
            if chunk.finish is not None and tools is not None and text_stream is not None:
                rest = text_stream.rest(tools.read(text_stream.buffer))
                if rest.calls or rest.content:
                    yield {"model": body.model_name, "created_at": timestamp(),
                           **_assistant_message(rest), "done": False}  # fmt: skip
            if chunk.finish is not None:
                yield {"model": body.model_name, "created_at": timestamp(), **piece(""),
                       "done": True, **timings(chunk.finish, started_ns), **last}  # fmt: skip

    return ndjson(lines(), record)


@router.post("/generate", response_model=None)
async def generate(body: GenerateRequest, request: Request) -> Response | dict[str, Any]:
    request_log(request).model = body.model_name
    if body.images:
        raise InvalidRequest(f"{body.model_name} does not support images", param="images")
    if body.context:
        raise InvalidRequest(
            "context (token arrays from earlier replies) is not supported; use /api/chat",
            param="context",
        )
    service = inference(request)
    model = await _model_for(body, request)
    if not body.prompt and body.suffix is None:
        return await _load_or_unload(model, body, request, {"response": ""})
    params = service.sampling(model, body.overrides())
    where = {**_placement(body, request), "on_node": request_log(request).served_by}
    if body.suffix is not None:
        stream = service.generate(model, params, prompt=body.prompt, suffix=body.suffix, **where)
    elif body.raw:
        stream = service.generate(model, params, prompt=body.prompt, **where)
    else:
        system = body.system if body.system is not None else model.config.system
        turns = [{"role": "system", "content": system}] if system else []
        turns.append({"role": "user", "content": body.prompt})
        stream = service.generate(model, params, messages=turns, template=body.template, **where)
    return await _respond(body, request, stream, lambda text: {"response": text})


@router.post("/chat", response_model=None)
async def chat(body: ChatRequest, request: Request) -> Response | dict[str, Any]:
    request_log(request).model = body.model_name
    tools = body.tool_plan()
    for index, message in enumerate(body.messages):
        if message.images:
            raise InvalidRequest(
                f"{body.model_name} does not support images", param=f"messages[{index}].images"
            )
    service = inference(request)
    model = await _model_for(body, request)
    if not body.messages:
        empty = {"message": {"role": "assistant", "content": ""}}
        return await _load_or_unload(model, body, request, empty)
    params = service.sampling(model, body.overrides())
    context = await with_memory(request, model, body.rendered_messages(), body.blackroad, params)
    stream = service.generate(
        model,
        params,
        messages=service.conversation(model, context.messages),
        # Ollama continues a conversation that ends with the assistant's message.
        continue_final=body.messages[-1].role == "assistant",
        truncate=body.truncate,
        on_node=request_log(request).served_by,
        **_placement(body, request),
    )
    return await _respond(
        body,
        request,
        kept(request, context, stream),
        lambda text: {"message": {"role": "assistant", "content": text}},
        context.extension(),
        tools if tools.active else None,
    )


def _assistant_message(answer: Answer) -> dict[str, Any]:
    """A reply read as text or tool calls, arguments as JSON objects (Ollama's shape)."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content or ""}
    if answer.calls:
        message["tool_calls"] = [
            {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}}
            for i, c in enumerate(answer.calls)
        ]
    return {"message": message}


async def _embed(
    request: Request, model: str, texts: list[str], keep_alive: float | None, truncate: bool
) -> tuple[list[list[float]], int, int]:
    record = request_log(request)
    record.model = model
    service = inference(request)
    ref = await service.resolve(model, principal(request), forwarded(request))
    started_ns = time.perf_counter_ns()
    result = await service.embed(ref, texts, truncate, keep_alive, on_node=record.served_by)
    record.add_usage(result.prompt_tokens, 0)
    return result.vectors, result.prompt_tokens, time.perf_counter_ns() - started_ns


@router.post("/embed")
async def embed(body: EmbedRequest, request: Request) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise InvalidRequest("input must not be empty", param="input")
    started_ns = time.perf_counter_ns()
    vectors, tokens, _ = await _embed(
        request, body.model_name, texts, parse_duration(body.keep_alive), body.truncate
    )
    if body.dimensions is not None:
        if body.dimensions > len(vectors[0]):
            raise InvalidRequest(
                f"dimensions must be at most {len(vectors[0])}", param="dimensions"
            )
        vectors = [_normalized(v[: body.dimensions]) for v in vectors]
    return {
        "model": body.model_name,
        "embeddings": vectors,
        "total_duration": time.perf_counter_ns() - started_ns,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request) -> dict[str, Any]:
    if not body.prompt:
        return {"embedding": []}  # what Ollama answers to an empty prompt
    vectors, _, _ = await _embed(
        request, body.model_name, [body.prompt], parse_duration(body.keep_alive), False
    )
    return {"embedding": vectors[0]}


def _normalized(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]
