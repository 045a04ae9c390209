"""The caller's conversations (``/api/conversations``) and long-term memories (``/api/memories``).

Inference scope, and only ever the caller's own: every call names the
caller as owner, so another user's conversation or memory is answered as if
it did not exist (404), never 403, and ids cannot be probed. Memories taken
from a conversation by a model come back in the answer, and are ordinary
memories afterwards: listed, edited, deleted like any other.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from blackroad.api.auth import principal, require_scope
from blackroad.api.recording import request_log
from blackroad.api.state import conversations, memories
from blackroad.memory.conversations import TITLE_MAX, ExportFormat, Role
from blackroad.memory.facts import MEMORY_CHARS
from blackroad.store.sqlite import MAX_INTEGER

router = APIRouter(prefix="/api", dependencies=[Depends(require_scope("inference"))])
# A larger id is no row, not an overflow.
Id = Annotated[int, Path(ge=1, le=MAX_INTEGER)]
Title = Annotated[str, Field(min_length=1, max_length=TITLE_MAX)]
Text = Annotated[str, Field(min_length=1, max_length=MEMORY_CHARS)]
EXPORT_TYPES = {"json": "application/json", "markdown": "text/markdown; charset=utf-8"}
EXPORT_SUFFIXES = {"json": "json", "markdown": "md"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageIn(_Strict):
    role: Role
    content: Annotated[str, Field(max_length=1_000_000)]


class ConversationCreate(_Strict):
    title: Title | None = None
    model: Annotated[str | None, Field(min_length=1, max_length=256)] = None
    # Messages to start with (an import); a chat naming the conversation adds the rest.
    messages: Annotated[list[MessageIn], Field(max_length=1000)] = Field(default_factory=list)


class ConversationUpdate(_Strict):
    title: Title


class MemoryCreate(_Strict):
    text: Text


class MemoryUpdate(_Strict):
    text: Text


class RecallRequest(_Strict):
    query: Annotated[str, Field(min_length=1, max_length=8192)]
    k: Annotated[int, Field(ge=1, le=50)] = 5


def _owner(request: Request) -> str:
    return principal(request).user


# -- conversations -----------------------------------------------------------


@router.get("/conversations")
async def list_conversations(
    request: Request,
    q: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> dict[str, Any]:
    """The caller's conversations, latest first; ``q`` searches titles and messages."""
    found = await run_in_threadpool(conversations(request).list, _owner(request), q, limit, offset)
    return {"conversations": [c.as_dict() for c in found]}


@router.post("/conversations", status_code=201)
async def create_conversation(body: ConversationCreate, request: Request) -> dict[str, Any]:
    messages = [m.model_dump() for m in body.messages]
    created = await run_in_threadpool(
        conversations(request).create, _owner(request), body.title, body.model, messages
    )
    return created.as_dict()


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: Id, request: Request) -> dict[str, Any]:
    found = await run_in_threadpool(conversations(request).get, _owner(request), conversation_id)
    return found.as_dict()


@router.patch("/conversations/{conversation_id}")
async def rename_conversation(
    conversation_id: Id, body: ConversationUpdate, request: Request
) -> dict[str, Any]:
    renamed = await run_in_threadpool(
        conversations(request).rename, _owner(request), conversation_id, body.title
    )
    return renamed.as_dict()


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: Id, request: Request) -> Response:
    await run_in_threadpool(conversations(request).delete, _owner(request), conversation_id)
    return Response(status_code=204)


@router.get("/conversations/{conversation_id}/export")
async def export_conversation(
    conversation_id: Id,
    request: Request,
    format: Annotated[Literal["json", "markdown"], Query()] = "json",
) -> Response:
    """The whole conversation as a file to download: JSON, or Markdown to read."""
    chosen: ExportFormat = format
    text = await run_in_threadpool(
        conversations(request).export, _owner(request), conversation_id, chosen
    )
    name = f"conversation-{conversation_id}.{EXPORT_SUFFIXES[chosen]}"
    return Response(
        text,
        media_type=EXPORT_TYPES[chosen],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/conversations/{conversation_id}/memories", status_code=201)
async def extract_memories(conversation_id: Id, request: Request) -> dict[str, Any]:
    """Facts the memory model finds in the conversation, kept as the caller's memories."""
    record = request_log(request)
    found = memories(request)
    record.model = found.memory_model
    kept = await found.remember(principal(request), conversations(request), conversation_id, record)
    return {"memories": [m.as_dict() for m in kept]}


# -- memories ----------------------------------------------------------------


@router.get("/memories")
async def list_memories(request: Request) -> dict[str, Any]:
    found = await run_in_threadpool(memories(request).store.list, _owner(request))
    return {"memories": [m.as_dict() for m in found]}


@router.post("/memories", status_code=201)
async def add_memory(body: MemoryCreate, request: Request) -> dict[str, Any]:
    added = await memories(request).add(_owner(request), body.text)
    return added.as_dict()


@router.post("/memories/recall")
async def recall_memories(body: RecallRequest, request: Request) -> dict[str, Any]:
    """The caller's memories closest in meaning to ``query``, the closest first."""
    found = await memories(request).recall(_owner(request), body.query, body.k)
    return {"memories": [m.as_dict() for m in found]}


@router.get("/memories/{memory_id}")
async def get_memory(memory_id: Id, request: Request) -> dict[str, Any]:
    found = await run_in_threadpool(memories(request).store.get, _owner(request), memory_id)
    return found.as_dict()


@router.patch("/memories/{memory_id}")
async def edit_memory(memory_id: Id, body: MemoryUpdate, request: Request) -> dict[str, Any]:
    owner = _owner(request)
    edited = await memories(request).edit(owner, memory_id, body.text, owner)
    return edited.as_dict()


@router.delete("/memories/{memory_id}", status_code=204)
async def delete_memory(memory_id: Id, request: Request) -> Response:
    await run_in_threadpool(memories(request).store.delete, _owner(request), memory_id)
    return Response(status_code=204)


@router.get("/memories/{memory_id}/history")
async def memory_history(memory_id: Id, request: Request) -> dict[str, Any]:
    versions = await run_in_threadpool(memories(request).store.history, _owner(request), memory_id)
    return {"versions": [v.as_dict() for v in versions]}
