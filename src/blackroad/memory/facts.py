"""Long-term memories: facts about each user, their history, recall by similarity, extraction.

A memory is one short text that belongs to one user (its ``owner``), added by
the user or extracted from one of their conversations by a model; either way
it is an ordinary memory afterwards, which its owner sees, edits and deletes.
Every text a memory has had is a row of ``memory_versions`` (version 1 when
it is added, one more for each edit), with who changed it and when.

Recall compares the query's embedding with the user's memories by cosine
similarity, in SQL (sqlite-vec's ``vec_distance_cosine`` over float32 bytes
on SQLite, pgvector's ``<=>`` over a ``vector`` column on PostgreSQL): a user has
hundreds of memories, not millions, so a scan of theirs beats keeping an
index. A memory's vector is kept with the name of the model that made it and
compared only with vectors of the same model and width; memories embedded
by another model (the setting changed) or not at all are embedded again,
lazily, by the next recall, so a changed model costs one pass, not a
migration.

Embeddings and extraction go through the inference service, never an
engine. ``MemoryStore`` is the database side (vectors given to it; SQLAlchemy Core
statements over ``store.schema``'s tables, on either database);
``Memories`` adds the models: it embeds what is written and recalls by a
query's text. Embedding is the server's own indexing work with the server's
model (``embedding_model``), as for knowledge bases, so no caller's model
allowlist applies to it. Extraction generates text for the caller, so the
caller must be allowed the memory model, and its tokens count to their request.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Float,
    RowMapping,
    Select,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from blackroad.errors import EngineError, InvalidRequest, NotFound
from blackroad.identity.types import Principal
from blackroad.memory.conversations import Conversation, Conversations, utc_now
from blackroad.service.inference import Inference
from blackroad.store.database import Database
from blackroad.store.schema import Embedding, conversations, memories, memory_versions

Source = Literal["user", "extracted"]
SOURCES: frozenset[str] = frozenset({"user", "extracted"})
MEMORY_CHARS = 2000  # the longest memory: a fact, not a document
EMBED_BATCH = 32  # texts embedded at once when memories are embedded again
# What extraction reads of a conversation: its end, where the newest facts are.
EXTRACT_CHARS = 6000
MAX_FACTS = 10
FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "maxItems": MAX_FACTS,
            "items": {"type": "string", "minLength": 3, "maxLength": 300},
        }
    },
    "required": ["facts"],
    "additionalProperties": False,
}
EXTRACT_SYSTEM = (
    "You extract facts about the user from a conversation, for a memory that later "
    "conversations can use. Write each fact as one short sentence. Reply with JSON only."
)
# One worked example: small models (smollm2:135m) answer an empty list without it.
EXTRACT_EXAMPLE = (
    {
        "role": "user",
        "content": "User: I'm Tom, I work as a nurse in Leeds.\nAssistant: Hello Tom!",
    },
    {
        "role": "assistant",
        "content": '{"facts": ["The user is called Tom.", "The user works as a nurse.", '
        '"The user lives in Leeds."]}',
    },
)


class Meter(Protocol):
    """Where the work done for a request is counted (``api.recording.RequestLog`` is one)."""

    def add_usage(self, prompt_tokens: int, completion_tokens: int) -> None: ...

    def served_by(self, node: str) -> None: ...


@dataclass(frozen=True)
class Memory:
    id: int
    text: str
    source: str
    conversation_id: int | None  # the conversation it was extracted from
    embedding_model: str | None
    version: int  # how many texts it has had
    created_at: str
    updated_at: str
    # Cosine similarity with the query it was recalled for (1: the same direction).
    similarity: float | None = None

    def as_dict(self) -> dict[str, Any]:
        view = asdict(self)
        if self.similarity is None:
            del view["similarity"]
        return view


@dataclass(frozen=True)
class MemoryVersion:
    version: int
    text: str
    changed_by: str
    changed_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_m, _v = memories.c, memory_versions.c
_COLUMNS = (
    _m.id, _m.text, _m.source, _m.conversation_id, _m.embedding_model, _m.created_at,
    _m.updated_at,
    select(func.max(_v.version)).where(_v.memory_id == _m.id).scalar_subquery().label("version"),
)  # fmt: skip
_MEMORY = select(*_COLUMNS)
_HISTORY = select(_v.version, _v.text, _v.changed_by, _v.changed_at).order_by(_v.version)
# Statements on the path of a chat that asks for memory are built once, with
# parameters: building one per call cost more than running it (~0.1 ms on SQLite).
_OWNER: BindParameter[str] = bindparam("owner")
_ONE = _MEMORY.where(_m.id == bindparam("memory"), _m.owner == _OWNER)
_ANY = select(_m.id).where(_m.owner == _OWNER).limit(1)
_LIST = _MEMORY.where(_m.owner == _OWNER).order_by(_m.updated_at.desc(), _m.id.desc())


def _memory(row: RowMapping, similarity: float | None = None) -> Memory:
    return Memory(
        row["id"], row["text"], row["source"], row["conversation_id"], row["embedding_model"],
        row["version"], row["created_at"], row["updated_at"], similarity,
    )  # fmt: skip


def _width(dialect: str) -> ColumnElement[int]:
    """How many dimensions a memory's vector has (float32 bytes on SQLite)."""
    if dialect == "postgresql":
        return func.vector_dims(_m.embedding)
    return func.length(_m.embedding).op("/")(4)  # SQLite's integer division, as is


def _distance(dialect: str) -> ColumnElement[float]:
    """A memory's cosine distance from the bound ``query`` vector: sqlite-vec's function,
    or pgvector's ``<=>``."""
    vector = bindparam("query", type_=Embedding())
    if dialect == "postgresql":
        return _m.embedding.op("<=>", return_type=Float())(vector)
    return func.vec_distance_cosine(_m.embedding, vector, type_=Float())


def clean_text(text: str) -> str:
    """A memory's text: trimmed, and neither empty nor longer than ``MEMORY_CHARS``."""
    cleaned = text.strip()
    if not cleaned:
        raise InvalidRequest("a memory needs some text", param="text")
    if len(cleaned) > MEMORY_CHARS:
        raise InvalidRequest(f"a memory is at most {MEMORY_CHARS} characters", param="text")
    return cleaned


class MemoryStore:
    """Every user's memories and their versions, in one database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        width, distance = _width(database.dialect), _distance(database.dialect).label("distance")
        stale = or_(
            _m.embedding.is_(None),
            _m.embedding_model.is_distinct_from(bindparam("model")),
            width != bindparam("width"),
        )
        self._unembedded = _MEMORY.where(_m.owner == _OWNER, stale).order_by(_m.id)
        self._recall = (
            select(*_COLUMNS, distance)
            .where(
                _m.owner == _OWNER,
                _m.embedding_model == bindparam("model"),
                width == bindparam("width"),
            )
            .order_by(distance, _m.id)
            .limit(bindparam("k"))
        )

    def add(
        self,
        owner: str,
        text: str,
        source: Source = "user",
        conversation_id: int | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> Memory:
        """A new memory of ``owner``'s (version 1), from one of their conversations or not."""
        return self.add_many(owner, [(text, embedding)], source, conversation_id, embedding_model)[
            0
        ]

    def add_many(
        self,
        owner: str,
        texts: Sequence[tuple[str, Sequence[float] | None]],
        source: Source = "user",
        conversation_id: int | None = None,
        embedding_model: str | None = None,
    ) -> builtins.list[Memory]:
        """Several memories (text, embedding) in one transaction."""
        if source not in SOURCES:
            raise InvalidRequest(f"a memory's source is one of {sorted(SOURCES)}", param="source")
        cleaned = [(clean_text(text), vector) for text, vector in texts]
        now = utc_now()
        rows = [
            {"owner": owner, "text": text, "source": source, "conversation_id": conversation_id,
             "embedding": vector, "embedding_model": None if vector is None else embedding_model,
             "created_at": now, "updated_at": now}
            for text, vector in cleaned
        ]  # fmt: skip
        with self.database.engine.begin() as connection:
            if conversation_id is not None:
                c = conversations.c
                owned = select(c.id).where(c.id == conversation_id, c.owner == owner)
                if connection.scalar(owned) is None:
                    raise NotFound(f"conversation {conversation_id} not found")
            added = insert(memories).returning(_m.id, sort_by_parameter_order=True)
            ids = list(connection.execute(added, rows).scalars())
            versions = [
                (memory_id, text) for memory_id, (text, _) in zip(ids, cleaned, strict=True)
            ]
            _add_versions(connection, versions, 1, owner, now)
        return [self.get(owner, memory_id) for memory_id in ids]

    def list(self, owner: str) -> builtins.list[Memory]:
        """``owner``'s memories, the latest changed first."""
        return [_memory(row) for row in self._rows(_LIST, owner=owner)]

    def has_any(self, owner: str) -> bool:
        """Has ``owner`` any memory at all (else recall need not embed the query)?"""
        return bool(self._rows(_ANY, owner=owner))

    def get(self, owner: str, memory_id: int) -> Memory:
        rows = self._rows(_ONE, memory=memory_id, owner=owner)
        if not rows:
            raise NotFound(f"memory {memory_id} not found")
        return _memory(rows[0])

    def edit(
        self,
        owner: str,
        memory_id: int,
        text: str,
        changed_by: str,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> Memory:
        """A new text for a memory, kept as its next version; without an ``embedding`` of
        the new text, the next recall embeds it."""
        cleaned = clean_text(text)
        now = utc_now()
        change = (
            update(memories)
            .where(_m.id == memory_id, _m.owner == owner)
            .values(
                text=cleaned,
                embedding=embedding,
                embedding_model=None if embedding is None else embedding_model,
                updated_at=now,
            )
        )
        with self.database.engine.begin() as connection:
            # The update locks the memory's row (on either database) before its latest
            # version is read, so edits at once take turns and each gets a version of its own.
            if connection.execute(change).rowcount == 0:
                raise NotFound(f"memory {memory_id} not found")
            latest = connection.scalar(
                select(func.max(_v.version)).where(_v.memory_id == memory_id)
            )
            _add_versions(connection, [(memory_id, cleaned)], latest + 1, changed_by, now)
        return self.get(owner, memory_id)

    def history(self, owner: str, memory_id: int) -> builtins.list[MemoryVersion]:
        """Every text the memory has had, oldest first."""
        self.get(owner, memory_id)
        rows = self._rows(_HISTORY.where(_v.memory_id == memory_id))
        return [MemoryVersion(**row) for row in rows]

    def delete(self, owner: str, memory_id: int) -> None:
        """Delete a memory and its history."""
        with self.database.engine.begin() as connection:
            removed = connection.execute(
                delete(memories).where(_m.id == memory_id, _m.owner == owner)
            )
            if removed.rowcount == 0:
                raise NotFound(f"memory {memory_id} not found")

    def unembedded(
        self, owner: str, embedding_model: str, dimensions: int
    ) -> builtins.list[Memory]:
        """``owner``'s memories with no ``dimensions``-wide vector from ``embedding_model``."""
        rows = self._rows(self._unembedded, owner=owner, model=embedding_model, width=dimensions)
        return [_memory(row) for row in rows]

    def set_embeddings(
        self,
        owner: str,
        vectors: Sequence[tuple[Memory, Sequence[float]]],
        embedding_model: str,
    ) -> None:
        """Store each memory's vector, unless its text changed since it was read."""
        if not vectors:
            return
        store = (
            update(memories)
            .where(
                _m.id == bindparam("memory"),
                _m.owner == owner,
                _m.text == bindparam("read_text"),
            )
            .values(
                embedding=bindparam("vector", type_=Embedding()), embedding_model=embedding_model
            )
        )
        rows = [{"memory": m.id, "read_text": m.text, "vector": v} for m, v in vectors]
        with self.database.engine.begin() as connection:
            connection.execute(store, rows)

    def recall(
        self, owner: str, query_vector: Sequence[float], k: int, embedding_model: str
    ) -> builtins.list[Memory]:
        """``owner``'s ``k`` memories most similar to ``query_vector``, the closest first.

        Only memories embedded by ``embedding_model`` at the query's width are compared.
        """
        rows = self._rows(
            self._recall,
            owner=owner,
            model=embedding_model,
            width=len(query_vector),
            query=list(query_vector),
            k=k,
        )
        return [_memory(row, 1.0 - row["distance"]) for row in rows]

    def _rows(self, statement: Select[Any], /, **parameters: Any) -> Sequence[RowMapping]:
        with self.database.engine.connect() as connection:
            return connection.execute(statement, parameters).mappings().all()


def _add_versions(
    connection: Connection,
    texts: Sequence[tuple[int, str]],
    version: int,
    changed_by: str,
    now: str,
) -> None:
    """Each memory's ``version`` (id, text), changed by ``changed_by`` at ``now``."""
    connection.execute(
        insert(memory_versions),
        [
            {"memory_id": memory_id, "version": version, "text": text,
             "changed_by": changed_by, "changed_at": now}
            for memory_id, text in texts
        ],
    )  # fmt: skip


def memory_context(recalled: Sequence[Memory]) -> str:
    """Recalled memories as text for the model, for a chat that asked for memory."""
    lines = "\n".join(f"- {m.text}" for m in recalled)
    return f"What you remember about the user (they can see and edit this):\n{lines}"


def transcript(conversation: Conversation) -> str:
    """The user's and the assistant's turns as text, cut to the last ``EXTRACT_CHARS``."""
    turns = [
        f"{m.role.capitalize()}: {m.content.strip()}"
        for m in conversation.messages or ()
        if m.role in ("user", "assistant") and m.content.strip()
    ]
    text = "\n".join(turns)
    return text[-EXTRACT_CHARS:]


def parse_facts(answer: str) -> builtins.list[str]:
    """The facts of the memory model's JSON answer, trimmed, each once."""
    try:
        facts = json.loads(answer)["facts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"the memory model's answer is not the facts asked for: {exc}") from exc
    seen: set[str] = set()
    unique = []
    for fact in facts:
        text = " ".join(str(fact).split())[:MEMORY_CHARS]
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            unique.append(text)
    return unique


class Memories:
    """Memories with their models: embedded when written, recalled by a query's meaning,
    extracted from conversations. ``store`` answers what needs no model."""

    def __init__(
        self, store: MemoryStore, inference: Inference, embedding_model: str, memory_model: str
    ) -> None:
        self.store = store
        self.inference = inference
        self.embedding_model = embedding_model
        self.memory_model = memory_model

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.inference.vectors(self.embedding_model, list(texts))

    async def add(self, owner: str, text: str) -> Memory:
        """A memory the user wrote, embedded."""
        cleaned = clean_text(text)
        [vector] = await self.embed([cleaned])
        return await asyncio.to_thread(
            self.store.add, owner, cleaned, "user", None, vector, self.embedding_model
        )

    async def edit(self, owner: str, memory_id: int, text: str, changed_by: str) -> Memory:
        """A memory's next version, embedded."""
        cleaned = clean_text(text)
        await asyncio.to_thread(self.store.get, owner, memory_id)  # 404 before any work
        [vector] = await self.embed([cleaned])
        return await asyncio.to_thread(
            self.store.edit, owner, memory_id, cleaned, changed_by, vector, self.embedding_model
        )

    async def recall(self, owner: str, query: str, k: int = 5) -> list[Memory]:
        """``owner``'s ``k`` memories closest in meaning to ``query``, the closest first.

        What the chat path calls when a request asks for memory; ``memory_context``
        turns the result into text for the model.
        """
        if not await asyncio.to_thread(self.store.has_any, owner):
            return []
        [vector] = await self.embed([query])
        stale = await asyncio.to_thread(
            self.store.unembedded, owner, self.embedding_model, len(vector)
        )
        for start in range(0, len(stale), EMBED_BATCH):
            batch = stale[start : start + EMBED_BATCH]
            vectors = await self.embed([m.text for m in batch])
            await asyncio.to_thread(
                self.store.set_embeddings,
                owner,
                list(zip(batch, vectors, strict=True)),
                self.embedding_model,
            )
        return await asyncio.to_thread(self.store.recall, owner, vector, k, self.embedding_model)

    async def extract(
        self, caller: Principal, conversation: Conversation, meter: Meter | None = None
    ) -> list[str]:
        """Facts about the user in ``conversation`` (with its messages), asked of the memory
        model for ``caller`` with an answer constrained to ``{"facts": [...]}``."""
        text = transcript(conversation)
        if not text:
            raise InvalidRequest(f"conversation {conversation.id} has nothing to remember")
        model = await self.inference.resolve(self.memory_model, caller)
        params = self.inference.sampling(
            model, {"temperature": 0.0, "max_tokens": 1024, "json_schema": FACTS_SCHEMA}
        )
        prompt = [
            {"role": "system", "content": EXTRACT_SYSTEM},
            *EXTRACT_EXAMPLE,
            {"role": "user", "content": text},
        ]
        on_node = None if meter is None else meter.served_by
        parts = []
        async for chunk in self.inference.generate(model, params, messages=prompt, on_node=on_node):
            parts.append(chunk.text)
            if chunk.finish is not None and meter is not None:
                meter.add_usage(chunk.finish.prompt_tokens, chunk.finish.completion_tokens)
        return parse_facts("".join(parts))

    async def remember(
        self,
        caller: Principal,
        conversations: Conversations,
        conversation_id: int,
        meter: Meter | None = None,
    ) -> list[Memory]:
        """Extract facts from one of ``caller``'s conversations and keep those not already
        remembered, as memories marked ``extracted``; returned so the user sees them."""
        owner = caller.user
        conversation = await asyncio.to_thread(conversations.get, owner, conversation_id)
        facts = await self.extract(caller, conversation, meter)
        known = {m.text.casefold() for m in await asyncio.to_thread(self.store.list, owner)}
        new = [fact for fact in facts if fact.casefold() not in known]
        if not new:
            return []
        vectors = await self.embed(new)
        return await asyncio.to_thread(
            self.store.add_many,
            owner,
            list(zip(new, vectors, strict=True)),
            "extracted",
            conversation_id,
            self.embedding_model,
        )
