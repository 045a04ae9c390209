"""Memory context for one chat: its stored conversation, recalled memories, knowledge passages.

A chat request may ask (through the ``blackroad`` extension field of either
API) for three things, each independent of the others:

- ``conversation``: the chat continues a thread stored on the server; its
  earlier messages go before the request's, and the new turn and the answer
  are appended to it once the answer is complete. With ``regenerate`` the
  request's turn stands in for the thread's last question: the model reads
  the thread before it, and the complete answer replaces that question and
  what followed (regenerate, or edit the last question and ask again);
- ``memory``: the user's long-term memories most similar to their last
  message are put into context;
- ``knowledge_bases``: passages retrieved from those bases (or, in
  ``whole`` mode, whole documents that fit) are put into context, numbered,
  and come back as citations: document, page, offsets, the quoted passage.

What is recalled and retrieved goes into the LAST user message, ahead of the
question, not into the system message: the conversation's earlier turns
stay a stable prefix, so the engine's prefix cache still serves them.
Passages are added best first while they fit the model's context budget,
what the window holds after the messages and the answer's reserve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from blackroad.engines.base import Chunk, Message
from blackroad.memory.chunking import estimate_tokens
from blackroad.memory.conversations import Conversations
from blackroad.memory.facts import Memories, memory_context
from blackroad.memory.index import Hit, SearchFilters
from blackroad.memory.knowledge import KnowledgeBases

KnowledgeMode = Literal["retrieve", "whole"]
# What a chat template adds around each message, in tokens, at most.
MESSAGE_OVERHEAD = 8
# The answer's reserve when the request sets no limit: a quarter of the window, at most this.
DEFAULT_RESERVE = 512

INSTRUCTION = (
    "Answer the question using the numbered passages below. Cite each passage you use by its "
    "number in square brackets, like [1]. If the passages do not contain the answer, say so."
)


@dataclass(frozen=True)
class ContextRequest:
    """What a chat request asks of memory (the API's ``blackroad`` field)."""

    knowledge_bases: tuple[int | str, ...] = ()
    knowledge_mode: KnowledgeMode = "retrieve"
    top_k: int = 5
    filters: SearchFilters | None = None
    rerank: str | None = None  # an embedding model re-scoring the candidates
    conversation: int | Literal["new"] | None = None
    regenerate: bool = False  # the request's turn replaces the conversation's last question
    memory: bool = False
    memory_k: int = 5

    @property
    def asked(self) -> bool:
        return bool(self.knowledge_bases) or self.conversation is not None or self.memory


@dataclass
class Context:
    """A chat's messages with memory put in, and what to say about it in the response."""

    model: str
    messages: list[Message]
    new_turns: list[Message]  # the request's own messages, as the conversation keeps them
    conversation: int | None = None
    replaces: int | None = None  # the first stored message the answer replaces (regenerate)
    knowledge_mode: KnowledgeMode | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    memories: list[dict[str, Any]] = field(default_factory=list)

    def extension(self) -> dict[str, Any]:
        """The response's ``blackroad`` field."""
        found: dict[str, Any] = {}
        if self.conversation is not None:
            found["conversation"] = self.conversation
        if self.knowledge_mode is not None:
            found["knowledge_mode"] = self.knowledge_mode
            found["citations"] = self.citations
        if self.memories:
            found["memories"] = self.memories
        return found


def _citation(number: int, hit: Hit) -> dict[str, Any]:
    return {
        "index": number,
        "knowledge_base": hit.kb_id,
        "document": {"id": hit.document_id, "name": hit.document_name},
        "page": hit.page,
        "start": hit.char_start,
        "end": hit.char_end,
        "heading": hit.heading,
        "quote": hit.text,
        "score": hit.score,
    }


def _source(citation: dict[str, Any]) -> str:
    where = citation["document"]["name"]
    if citation["page"] is not None:
        where += f", page {citation['page']}"
    return f"[{citation['index']}] ({where})\n{citation['quote']}"


def _last_user(messages: Sequence[Message]) -> int | None:
    for position in range(len(messages) - 1, -1, -1):
        if messages[position].get("role") == "user":
            return position
    return None


class ChatContext:
    """Puts conversations, memories and knowledge into chats, and keeps the answers."""

    def __init__(
        self,
        knowledge: KnowledgeBases,
        conversations: Conversations,
        memories: Memories,
    ) -> None:
        self.knowledge = knowledge
        self.conversations = conversations
        self.memories = memories

    async def prepare(
        self,
        user: str,
        model: str,
        messages: Sequence[Message],
        ask: ContextRequest,
        window: int,
        reserve: int | None,
    ) -> Context:
        """``messages`` with what ``ask`` wants put in, within ``window`` tokens.

        ``reserve`` is the answer's limit (max_tokens), if the request set one.
        """
        context = Context(model, list(messages), list(messages))
        if ask.conversation is not None:
            context.conversation, earlier, context.replaces = await asyncio.to_thread(
                self._thread, user, ask, model, messages
            )
            context.messages = [*earlier, *messages]
        question_at = _last_user(context.messages)
        if question_at is None or not (ask.memory or ask.knowledge_bases):
            return context
        question = str(context.messages[question_at].get("content") or "")
        budget = window - (reserve or min(DEFAULT_RESERVE, window // 4))
        budget -= sum(
            estimate_tokens(str(m.get("content") or "")) + MESSAGE_OVERHEAD
            for m in context.messages
        )
        blocks: list[str] = []
        if ask.memory:
            recalled = await self.memories.recall(user, question, ask.memory_k)
            context.memories = [{"id": m.id, "text": m.text} for m in recalled]
            if recalled:
                block = memory_context(recalled)
                budget -= estimate_tokens(block)
                blocks.append(block)
        if ask.knowledge_bases:
            budget -= estimate_tokens(INSTRUCTION)
            context.knowledge_mode, context.citations = await self._knowledge(
                user, question, ask, budget
            )
            if context.citations:
                blocks.append(INSTRUCTION)
                blocks.extend(_source(c) for c in context.citations)
        if blocks:
            blocks.append(f"Question: {question}")
            context.messages[question_at] = {
                **context.messages[question_at],
                "content": "\n\n".join(blocks),
            }
        return context

    def _thread(
        self, user: str, ask: ContextRequest, model: str, messages: Sequence[Message]
    ) -> tuple[int, Sequence[Message], int | None]:
        """The conversation's id, the history the request goes after, what it replaces."""
        ref = ask.conversation
        if ref == "new" or ref is None:
            first = next((m for m in messages if m.get("role") == "user"), None)
            title = str(first.get("content") or "") if first else ""
            return self.conversations.create(user, title, model).id, [], None
        if ask.regenerate:
            return ref, *self.conversations.last_question(user, ref)
        return ref, self.conversations.history(user, ref), None

    async def _knowledge(
        self, user: str, question: str, ask: ContextRequest, budget: int
    ) -> tuple[KnowledgeMode, list[dict[str, Any]]]:
        if ask.knowledge_mode == "whole":
            whole = await asyncio.to_thread(self._whole, user, ask, budget)
            if whole is not None:
                return "whole", whole
        hits = await self.knowledge.search(
            user, ask.knowledge_bases, question, ask.top_k, filters=ask.filters, rerank=ask.rerank
        )
        citations: list[dict[str, Any]] = []
        for hit in hits:
            cost = estimate_tokens(hit.text) + MESSAGE_OVERHEAD
            if cost > budget:
                continue  # a shorter passage further down may still fit
            budget -= cost
            citations.append(_citation(len(citations) + 1, hit))
        return "retrieve", citations

    def _whole(self, user: str, ask: ContextRequest, budget: int) -> list[dict[str, Any]] | None:
        """Every document of the bases, whole, if together they fit; else None (retrieve)."""
        citations: list[dict[str, Any]] = []
        for ref in ask.knowledge_bases:
            base = self.knowledge.get(user, ref)
            for document in self.knowledge.documents(user, base.id):
                if ask.filters is not None and not ask.filters.admits(document):
                    continue
                text = self.knowledge.document_text(user, base.id, document.id)
                budget -= estimate_tokens(text) + MESSAGE_OVERHEAD
                if budget < 0:
                    return None
                citations.append({
                    "index": len(citations) + 1,
                    "knowledge_base": base.id,
                    "document": {"id": document.id, "name": document.name},
                    "page": None,
                    "start": 0,
                    "end": len(text),
                    "heading": None,
                    "quote": text,
                    "score": None,
                })  # fmt: skip
        return citations

    async def kept(
        self, user: str, context: Context, stream: AsyncIterator[Chunk]
    ) -> AsyncIterator[Chunk]:
        """``stream`` unchanged; once it finishes, the turn and its answer join the conversation."""
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        async for piece in stream:
            if piece.text:
                first = first or time.perf_counter()
                parts.append(piece.text)
            if piece.finish is not None and context.conversation is not None:
                finish = piece.finish
                answer = {
                    "role": "assistant",
                    "content": "".join(parts),
                    "model": context.model,
                    "prompt_tokens": finish.prompt_tokens,
                    "completion_tokens": finish.completion_tokens,
                    "ttft_ms": None if first is None else (first - started) * 1000,
                    "duration_ms": (time.perf_counter() - started) * 1000,
                    "citations": context.citations or None,
                }
                await asyncio.to_thread(
                    self.conversations.append, user, context.conversation, context.new_turns,
                    answer, context.replaces,
                )  # fmt: skip
            yield piece
