"""The Ollama API's model management: create, copy, delete, blobs, pull, push.

Long operations report progress as NDJSON status lines (or, with
``stream: false``, answer with the last one). The work runs in a thread:
hashing and copying gigabytes must not stall the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.responses import Response

from blackroad.api.auth import require_scope
from blackroad.api.ollama import ndjson
from blackroad.api.ollama_types import CopyRequest, CreateRequest, DeleteRequest, TransferRequest
from blackroad.api.recording import request_log
from blackroad.api.state import inference, settings
from blackroad.errors import InvalidRequest
from blackroad.models import modelfile
from blackroad.models.registry import open_registry, pull, push
from blackroad.models.store import ModelStore
from blackroad.service.models import ModelManager

router = APIRouter(prefix="/api", dependencies=[Depends(require_scope("admin"))])


def manager(request: Request) -> ModelManager:
    return ModelManager(inference(request).catalog)


async def _progress(
    request: Request, work: Iterator[dict[str, Any]], stream: bool
) -> Response | dict[str, Any]:
    """Stream status lines, or run to the end and answer with the last one."""
    lines = iterate_in_threadpool(work)
    first = await anext(lines)  # errors before any progress are plain HTTP errors
    if not stream:
        last = first
        async for last in lines:  # noqa: B007 - only the final status is answered
            pass
        return last

    async def replay() -> AsyncIterator[dict[str, Any]]:
        yield first
        async for line in lines:
            yield line

    return ndjson(replay(), request_log(request))


@router.post("/create", response_model=None)
async def create(body: CreateRequest, request: Request) -> Response | dict[str, Any]:
    if body.adapters:
        raise InvalidRequest("adapters (LoRA) are not supported", param="adapters")
    if body.quantize:
        raise InvalidRequest("quantize is not supported; quantize with llama.cpp", "quantize")
    if body.modelfile is not None:
        spec = await run_in_threadpool(modelfile.parse, body.modelfile)  # up to 8 MB of it
    else:
        licenses = [body.license] if isinstance(body.license, str) else body.license or []
        spec = modelfile.Modelfile(
            base=body.from_,
            parameters=dict(body.parameters or {}),
            template=body.template,
            system=body.system,
            messages=[{"role": m.role, "content": m.content} for m in body.messages or []],
            license=list(licenses),
        )
    # Checked before the first status, in a thread: the Modelfile's template renders once.
    work = await run_in_threadpool(manager(request).create, body.model_name, spec, body.files)
    return await _progress(request, work, body.stream)


@router.post("/copy")
async def copy(body: CopyRequest, request: Request) -> Response:
    await run_in_threadpool(manager(request).copy, body.source, body.destination)
    return Response(status_code=200)


@router.delete("/delete")
async def delete(body: DeleteRequest, request: Request) -> Response:
    await run_in_threadpool(manager(request).delete, body.model_name)
    return Response(status_code=200)


def _store(request: Request) -> ModelStore:
    return inference(request).catalog.store


@router.head("/blobs/{digest}")
async def has_blob(digest: str, request: Request) -> Response:
    exists = await run_in_threadpool(_store(request).has_blob, digest)
    return Response(status_code=200 if exists else 404)


@router.post("/blobs/{digest}")
async def upload_blob(digest: str, request: Request) -> Response:
    """Stream the body to disk, verify its sha256, then keep it as a blob."""
    store = _store(request)
    tmp = store.private_partial(digest)  # validates the digest
    if await run_in_threadpool(store.has_blob, digest):
        return Response(status_code=200)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("wb") as out:
            async for chunk in request.stream():
                await run_in_threadpool(out.write, chunk)
        await run_in_threadpool(store.commit_partial, digest, tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return Response(status_code=201)


def _registry_location(request: Request) -> str:
    location = settings(request).registry
    if not location:
        raise InvalidRequest(
            "no registry is configured: set BLACKROAD_REGISTRY to a directory or the URL of "
            "your organisation's mirror (BlackRoad never pulls from the internet by itself)"
        )
    return location


def _transfer(request: Request, name: str, direction: Any) -> Iterator[dict[str, Any]]:
    registry = open_registry(_registry_location(request), api_key=settings(request).registry_key)
    with contextlib.closing(registry):
        yield from direction(_store(request), registry, name)


@router.post("/pull", response_model=None)
async def pull_model(body: TransferRequest, request: Request) -> Response | dict[str, Any]:
    _registry_location(request)
    work = _transfer(request, body.model_name, pull)
    return await _progress(request, work, body.stream)


@router.post("/push", response_model=None)
async def push_model(body: TransferRequest, request: Request) -> Response | dict[str, Any]:
    _registry_location(request)
    work = _transfer(request, body.model_name, push)
    return await _progress(request, work, body.stream)
