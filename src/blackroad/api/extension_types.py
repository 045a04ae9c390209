"""The ``blackroad`` extension field, the same in both APIs' chat requests.

Official clients send it as an extra body field (``extra_body={"blackroad":
{...}}`` with the openai client); responses carry a ``blackroad`` field of
their own (see ``service/context.py``), which official clients parse and
keep. Unknown keys are refused, as everywhere else: nothing asked is
silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from blackroad.errors import InvalidRequest
from blackroad.memory.index import SearchFilters
from blackroad.service.context import ContextRequest, KnowledgeMode
from blackroad.store.sqlite import MAX_INTEGER

# Integers that reach a query: SQLite holds none larger (binding one raised OverflowError).
Id = Annotated[int, Field(ge=1, le=MAX_INTEGER)]
Ref = Id | Annotated[str, Field(min_length=1, max_length=128)]
MetadataValue = str | Annotated[int, Field(ge=-MAX_INTEGER - 1, le=MAX_INTEGER)] | float | bool


class _Extension(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class KnowledgeFilters(_Extension):
    documents: Annotated[list[Id] | None, Field(max_length=1024)] = None
    media_type: Annotated[str | None, Field(max_length=128)] = None
    metadata: Annotated[dict[str, MetadataValue] | None, Field(max_length=32)] = None

    def search_filters(self) -> SearchFilters:
        return SearchFilters(
            documents=None if self.documents is None else tuple(self.documents),
            media_type=self.media_type,
            metadata=dict(self.metadata or {}),
        )


class BlackRoadChat(_Extension):
    """Memory for one chat: a stored conversation, long-term memories, knowledge bases."""

    # A conversation's id, or "new" to start one (its id comes back in the response).
    conversation: Id | Literal["new"] | None = None
    # The request's turn and its answer replace the conversation's last question and
    # what followed it (regenerate; or edit that question): needs a conversation's id.
    regenerate: bool = False
    memory: bool = False
    memory_k: Annotated[int, Field(ge=1, le=50)] = 5
    knowledge_bases: Annotated[list[Ref], Field(max_length=16)] = Field(default_factory=list)
    knowledge_mode: KnowledgeMode = "retrieve"
    top_k: Annotated[int, Field(ge=1, le=50)] = 5
    filters: KnowledgeFilters | None = None
    rerank: Annotated[str | None, Field(min_length=1, max_length=256)] = None

    def context_request(self) -> ContextRequest:
        if self.regenerate and not isinstance(self.conversation, int):
            raise InvalidRequest(
                "regenerate needs the id of a stored conversation", param="blackroad.regenerate"
            )
        return ContextRequest(
            knowledge_bases=tuple(self.knowledge_bases),
            knowledge_mode=self.knowledge_mode,
            top_k=self.top_k,
            filters=None if self.filters is None else self.filters.search_filters(),
            rerank=self.rerank,
            conversation=self.conversation,
            regenerate=self.regenerate,
            memory=self.memory,
            memory_k=self.memory_k,
        )
