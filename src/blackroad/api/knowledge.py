"""Knowledge bases under ``/api/kb``: bases, their shares, documents, and search.

A base is named in a path by its id or, for convenience, by its name among
those the caller sees. Documents are uploaded as ``multipart/form-data``
(one or more ``files`` fields, and an optional ``metadata`` field holding a
JSON object given to each of them); the answer says, per file, whether it was
added, updated or unchanged.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from blackroad.api.auth import principal, require_scope
from blackroad.api.extension_types import KnowledgeFilters
from blackroad.api.state import inference, knowledge, settings
from blackroad.errors import InvalidRequest
from blackroad.memory import index
from blackroad.memory.chunking import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP
from blackroad.memory.knowledge import is_id

router = APIRouter(prefix="/api/kb", dependencies=[Depends(require_scope("inference"))])
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^/\s][^/]*$")]
# Files in one upload: enough for a folder of case files, few enough to answer in one request.
MAX_FILES = 256
MAX_METADATA = 16384  # bytes of the JSON metadata given to every file of an upload


class KnowledgeBaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Annotated[str, Field(max_length=4096)] = ""
    # None: the server's embedding model (BLACKROAD_EMBEDDING_MODEL).
    embedding_model: Annotated[str | None, Field(min_length=1, max_length=256)] = None
    chunk_tokens: Annotated[int, Field(ge=16, le=8192)] = DEFAULT_MAX_TOKENS
    chunk_overlap: Annotated[int, Field(ge=0, le=4096)] = DEFAULT_OVERLAP

    @field_validator("name")
    @classmethod
    def _not_an_id(cls, name: str) -> str:
        if is_id(name):  # it could never be told apart from an id in a path
            raise ValueError("a knowledge base's name must not be all digits")
        return name


class ShareUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permission: Literal["read", "write"]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, Field(min_length=1, max_length=8192)]
    k: Annotated[int, Field(ge=1, le=100)] = 5
    mode: index.Mode = "hybrid"
    filters: KnowledgeFilters | None = None
    # An embedding model that re-scores the candidates (query against passage).
    rerank: Annotated[str | None, Field(min_length=1, max_length=256)] = None


def _user(request: Request) -> str:
    return principal(request).user


@router.get("")
async def list_bases(request: Request) -> dict[str, Any]:
    found = await run_in_threadpool(knowledge(request).visible, _user(request))
    return {"knowledge_bases": [base.view() for base in found]}


@router.post("", status_code=201)
async def create_base(body: KnowledgeBaseCreate, request: Request) -> dict[str, Any]:
    model = body.embedding_model or settings(request).embedding_model
    caller = principal(request)
    # The owner must be allowed the model: it embeds everything put in the base.
    await inference(request).resolve(model, caller, False)
    created = await run_in_threadpool(
        knowledge(request).create,
        caller.user,
        body.name,
        model,
        body.chunk_tokens,
        body.chunk_overlap,
        body.description,
    )
    return created.view()


@router.get("/{ref}")
async def get_base(ref: str, request: Request) -> dict[str, Any]:
    bases, user = knowledge(request), _user(request)

    def view() -> dict[str, Any]:
        return {**bases.get(user, ref).view(), "shares": bases.shares(user, ref)}

    return await run_in_threadpool(view)


@router.delete("/{ref}", status_code=204)
async def delete_base(ref: str, request: Request) -> Response:
    await run_in_threadpool(knowledge(request).delete, _user(request), ref)
    return Response(status_code=204)


@router.put("/{ref}/shares/{group}")
async def share_base(ref: str, group: str, body: ShareUpdate, request: Request) -> dict[str, Any]:
    bases, user = knowledge(request), _user(request)

    def share() -> dict[str, Any]:
        bases.share(user, ref, group, body.permission)
        return {"shares": bases.shares(user, ref)}

    return await run_in_threadpool(share)


@router.delete("/{ref}/shares/{group}", status_code=204)
async def unshare_base(ref: str, group: str, request: Request) -> Response:
    await run_in_threadpool(knowledge(request).share, _user(request), ref, group, None)
    return Response(status_code=204)


@router.get("/{ref}/documents")
async def list_documents(ref: str, request: Request) -> dict[str, Any]:
    found = await run_in_threadpool(knowledge(request).documents, _user(request), ref)
    return {"documents": [document.view() for document in found]}


def _metadata(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRequest("metadata must be a JSON object", "metadata") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, str | int | float | bool) for v in value.values()
    ):
        raise InvalidRequest(
            "metadata must be a JSON object of strings, numbers and booleans", "metadata"
        )
    return value


# The form is described here, not declared as parameters: FastAPI reads declared
# form fields (spooling every file) before the route's dependencies run, and an
# upload must be refused for its key and the base's permission before that.
_UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "maxItems": MAX_FILES,
                        },
                        "metadata": {"type": "string", "maxLength": MAX_METADATA},
                    },
                }
            }
        },
    }
}


@router.post("/{ref}/documents", openapi_extra=_UPLOAD_FORM)
async def upload_documents(ref: str, request: Request) -> dict[str, Any]:
    """Add documents (``files``) with optional JSON ``metadata``, read once the caller may."""
    bases, user = knowledge(request), _user(request)
    await run_in_threadpool(bases.get, user, ref, "write")
    if request.headers.get("content-type", "").split(";")[0].strip() != "multipart/form-data":
        raise InvalidRequest("documents are uploaded as multipart/form-data", "files")
    form = await request.form(max_files=MAX_FILES, max_fields=8, max_part_size=MAX_METADATA)
    files = [part for part in form.getlist("files") if isinstance(part, UploadFile)]
    if not files:
        raise InvalidRequest("the upload has no file in its 'files' field", "files")
    metadata = form.get("metadata")
    extra = _metadata(metadata if isinstance(metadata, str) else None)
    results = []
    for upload in files:
        name = (upload.filename or "").rsplit("/", 1)[-1].strip()
        if not name or len(name) > 255:
            raise InvalidRequest("each file needs a name of 1 to 255 characters", "files")
        ingested = await bases.add(user, ref, name, await upload.read(), extra)
        results.append({"outcome": ingested.outcome, "document": ingested.document.view()})
    return {"documents": results}


@router.get("/{ref}/documents/{document_id}")
async def get_document(ref: str, document_id: int, request: Request) -> dict[str, Any]:
    bases, user = knowledge(request), _user(request)

    def view() -> dict[str, Any]:
        found = bases.document(user, ref, document_id).view()
        return {**found, "text": bases.document_text(user, ref, document_id)}

    return await run_in_threadpool(view)


@router.get("/{ref}/documents/{document_id}/file")
async def download_document(ref: str, document_id: int, request: Request) -> Response:
    bases, user = knowledge(request), _user(request)
    found = await run_in_threadpool(bases.document, user, ref, document_id)
    data = await run_in_threadpool(bases.objects.get, found.sha256)
    disposition = f"attachment; filename*=UTF-8''{quote(found.name, safe='')}"
    return Response(data, media_type=found.media_type, headers={"Content-Disposition": disposition})


@router.delete("/{ref}/documents/{document_id}", status_code=204)
async def delete_document(ref: str, document_id: int, request: Request) -> Response:
    await run_in_threadpool(knowledge(request).remove, _user(request), ref, document_id)
    return Response(status_code=204)


def _hit(hit: index.Hit) -> dict[str, Any]:
    return {
        "chunk_id": hit.chunk_id,
        "knowledge_base": hit.kb_id,
        "document": {"id": hit.document_id, "name": hit.document_name},
        "ordinal": hit.ordinal,
        "page": hit.page,
        "start": hit.char_start,
        "end": hit.char_end,
        "heading": hit.heading,
        "text": hit.text,
        "score": hit.score,
        "lexical_rank": hit.lexical_rank,
        "vector_rank": hit.vector_rank,
    }


async def _search(ref: str, body: SearchRequest, request: Request) -> dict[str, Any]:
    filters = body.filters.search_filters() if body.filters else None
    if body.rerank is not None:
        await inference(request).resolve(body.rerank, principal(request))
    hits = await knowledge(request).search(
        _user(request), [ref], body.query, body.k, body.mode, filters, body.rerank
    )
    return {"query": body.query, "mode": body.mode, "results": [_hit(hit) for hit in hits]}


@router.get("/{ref}/search")
async def search_get(
    ref: str,
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=8192)],
    k: Annotated[int, Query(ge=1, le=100)] = 5,
    mode: index.Mode = "hybrid",
) -> dict[str, Any]:
    return await _search(ref, SearchRequest(query=q, k=k, mode=mode), request)


@router.post("/{ref}/search")
async def search_post(ref: str, body: SearchRequest, request: Request) -> dict[str, Any]:
    return await _search(ref, body, request)
