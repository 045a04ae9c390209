"""Knowledge bases: who may use them, their documents, ingestion and search.

A knowledge base belongs to the user who made it and may be shared with
groups, each share granting ``read`` (search, chat, list documents) or
``write`` (also add and delete documents). Anyone else is answered as if it
did not exist (404), so ids cannot be probed. Admins have no implicit access:
case files are the business of those they are shared with.

Ingestion of one file: its sha256 first (an unchanged re-upload does nothing),
then text extraction, chunking and embedding, all outside any transaction;
then the original bytes are stored durably (``store/objects.py``) and the
document, its chunks, their full-text entries and their vectors are written
in ONE transaction. A crash or ``kill -9`` at any point leaves either the
previous state or the whole new document, never part of one. A changed file
under a name already present replaces that document in the same transaction.

Embeddings come through the caller-supplied ``Embedder`` (the inference
service), never from an engine directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from blackroad.errors import Forbidden, InvalidRequest, NotFound
from blackroad.memory import index
from blackroad.memory.chunking import Chunk, chunk
from blackroad.memory.extract import extracted
from blackroad.store import sqlite
from blackroad.store.database import Database
from blackroad.store.objects import ObjectStore

Permission = Literal["read", "write", "owner"]
# Texts sent to the embedding model at once: enough to batch, small enough
# that one upload does not hold the model for long between other requests.
EMBED_BATCH = 32
# Candidates a reranker sees per passage asked for.
RERANK_DEPTH = 4
Embedder = Callable[[str, list[str]], Awaitable[list[list[float]]]]
Outcome = Literal["added", "updated", "unchanged"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_id(ref: str) -> bool:
    """Whether a base's reference is its id: ASCII digits (``"¹"`` is a digit to
    ``str.isdigit`` but not to ``int``)."""
    return ref.isascii() and ref.isdigit()


@dataclass(frozen=True)
class KnowledgeBase:
    id: int
    name: str
    owner: str
    description: str
    embedding_model: str
    dimensions: int | None
    chunk_tokens: int
    chunk_overlap: int
    created_at: str
    updated_at: str
    permission: Permission  # the caller's

    def view(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Document:
    id: int
    kb_id: int
    name: str
    media_type: str
    sha256: str
    size: int
    pages: int | None
    characters: int
    chunks: int
    metadata: dict[str, Any]
    created_at: str
    updated_at: str

    def view(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Ingested:
    outcome: Outcome
    document: Document


# The knowledge bases a user may see, with the strongest permission they hold.
_VISIBLE = """
SELECT kb.*,
       CASE WHEN kb.owner = :user THEN 'owner'
            WHEN EXISTS (SELECT 1 FROM knowledge_shares s
                           JOIN group_members m ON m.group_id = s.group_id
                           JOIN users u ON u.id = m.user_id
                          WHERE s.kb_id = kb.id AND u.name = :user AND s.permission = 'write')
            THEN 'write' ELSE 'read' END AS permission
  FROM knowledge_bases kb
 WHERE kb.owner = :user
    OR kb.id IN (SELECT s.kb_id FROM knowledge_shares s
                   JOIN group_members m ON m.group_id = s.group_id
                   JOIN users u ON u.id = m.user_id
                  WHERE u.name = :user)
"""

_DOCUMENT = """
SELECT d.id, d.kb_id, d.name, d.media_type, d.sha256, d.size, d.pages, d.characters,
       (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks,
       d.metadata, d.created_at, d.updated_at
  FROM documents d
"""

_RANK: dict[Permission, int] = {"read": 0, "write": 1, "owner": 2}


def _knowledge_base(row: sqlite.Row) -> KnowledgeBase:
    return KnowledgeBase(
        id=row["id"],
        name=row["name"],
        owner=row["owner"],
        description=row["description"],
        embedding_model=row["embedding_model"],
        dimensions=row["dimensions"],
        chunk_tokens=row["chunk_tokens"],
        chunk_overlap=row["chunk_overlap"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        permission=row["permission"],
    )


def _document(row: sqlite.Row) -> Document:
    values = dict(row)
    values["metadata"] = json.loads(values["metadata"])
    return Document(**values)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0


def _unused(connection: sqlite.Connection, digests: list[str]) -> list[str]:
    """Those of ``digests`` no document names any more (the same file may be in several bases)."""
    return [
        digest
        for digest in set(digests)
        if connection.execute(
            "SELECT 1 FROM documents WHERE sha256 = ? LIMIT 1", (digest,)
        ).fetchone()
        is None
    ]


class KnowledgeBases:
    """Knowledge bases over one database and one object store."""

    def __init__(self, database: Database, objects: ObjectStore, embedder: Embedder) -> None:
        self.database = database
        self.objects = objects
        self.embedder = embedder

    # -- knowledge bases ---------------------------------------------------

    def visible(self, user: str) -> list[KnowledgeBase]:
        rows = self.database.reader().execute(_VISIBLE + " ORDER BY kb.name, kb.id", {"user": user})
        return [_knowledge_base(row) for row in rows]

    def get(self, user: str, ref: int | str, need: Permission = "read") -> KnowledgeBase:
        """The base ``ref`` (an id, or a name among those the user sees) if they hold ``need``."""
        value: int | str
        if isinstance(ref, int) or is_id(ref):
            where, value = "kb.id = :ref", int(ref)
            if value > sqlite.MAX_INTEGER:  # no such id, rather than an overflow
                raise NotFound(f"knowledge base {ref!r} not found")
        else:
            # A user's own base wins a name shared with them by someone else.
            where, value = "kb.name = :ref", ref
        query = f"SELECT * FROM ({_VISIBLE}) kb WHERE {where} ORDER BY permission = 'owner' DESC"  # noqa: S608
        row = self.database.reader().execute(query, {"user": user, "ref": value}).fetchone()
        if row is None:
            raise NotFound(f"knowledge base {ref!r} not found")
        found = _knowledge_base(row)
        if _RANK[found.permission] < _RANK[need]:
            raise Forbidden(f"knowledge base {found.name!r} is shared with you read-only")
        return found

    def create(
        self,
        owner: str,
        name: str,
        embedding_model: str,
        chunk_tokens: int,
        chunk_overlap: int,
        description: str = "",
    ) -> KnowledgeBase:
        if chunk_overlap >= chunk_tokens:
            raise InvalidRequest("chunk_overlap must be smaller than chunk_tokens", "chunk_overlap")
        now = _now()

        def insert(connection: sqlite.Connection) -> int:
            try:
                cursor = connection.execute(
                    "INSERT INTO knowledge_bases (owner, name, description, embedding_model, "
                    "chunk_tokens, chunk_overlap, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (owner, name, description, embedding_model, chunk_tokens, chunk_overlap,
                     now, now),
                )  # fmt: skip
            except sqlite.IntegrityError:
                raise InvalidRequest(
                    f"you already have a knowledge base named {name!r}", "name"
                ) from None
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return self.get(owner, self.database.write(insert))

    def delete(self, user: str, ref: int | str) -> None:
        found = self.get(user, ref, "owner")

        def remove(connection: sqlite.Connection) -> list[str]:
            index.drop_vectors(connection, found.id)
            # Documents, then their chunks and full-text entries, go by cascade.
            digests = connection.execute(
                "SELECT sha256 FROM documents WHERE kb_id = ?", (found.id,)
            ).fetchall()
            connection.execute("DELETE FROM knowledge_bases WHERE id = ?", (found.id,))
            return _unused(connection, [row[0] for row in digests])

        self._forget(self.database.write(remove))

    def share(self, user: str, ref: int | str, group: str, permission: str | None) -> None:
        """Share with ``group`` (``read`` or ``write``), or stop sharing (``None``)."""
        found = self.get(user, ref, "owner")

        def change(connection: sqlite.Connection) -> None:
            row = connection.execute("SELECT id FROM groups WHERE name = ?", (group,)).fetchone()
            if row is None:
                raise NotFound(f"group {group!r} not found")
            if permission is None:
                connection.execute(
                    "DELETE FROM knowledge_shares WHERE kb_id = ? AND group_id = ?",
                    (found.id, row[0]),
                )
                return
            connection.execute(
                "INSERT INTO knowledge_shares (kb_id, group_id, permission) VALUES (?, ?, ?) "
                "ON CONFLICT (kb_id, group_id) DO UPDATE SET permission = excluded.permission",
                (found.id, row[0], permission),
            )

        self.database.write(change)

    def shares(self, user: str, ref: int | str) -> list[dict[str, str]]:
        found = self.get(user, ref)
        rows = self.database.reader().execute(
            "SELECT g.name, s.permission FROM knowledge_shares s JOIN groups g "
            "ON g.id = s.group_id WHERE s.kb_id = ? ORDER BY g.name",
            (found.id,),
        )
        return [{"group": name, "permission": permission} for name, permission in rows]

    # -- documents -----------------------------------------------------------

    def documents(self, user: str, ref: int | str) -> list[Document]:
        found = self.get(user, ref)
        rows = self.database.reader().execute(
            _DOCUMENT + " WHERE d.kb_id = ? ORDER BY d.name", (found.id,)
        )
        return [_document(row) for row in rows]

    def document(self, user: str, ref: int | str, document_id: int) -> Document:
        found = self.get(user, ref)
        row = (
            self.database.reader()
            .execute(_DOCUMENT + " WHERE d.kb_id = ? AND d.id = ?", (found.id, document_id))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"document {document_id} not found in knowledge base {found.name!r}")
        return _document(row)

    def document_text(self, user: str, ref: int | str, document_id: int) -> str:
        found = self.document(user, ref, document_id)
        row = (
            self.database.reader()
            .execute("SELECT text FROM documents WHERE id = ?", (found.id,))
            .fetchone()
        )
        return str(row[0])

    async def add(
        self,
        user: str,
        ref: int | str,
        filename: str,
        data: bytes,
        metadata: dict[str, Any] | None = None,
    ) -> Ingested:
        """Index ``data`` as the document ``filename``: added, updated (changed) or unchanged."""
        found = await asyncio.to_thread(self.get, user, ref, "write")
        digest = hashlib.sha256(data).hexdigest()
        current = await asyncio.to_thread(self._by_name, found.id, filename)
        if current is not None and current.sha256 == digest:
            return Ingested("unchanged", current)
        document = await extracted(data, filename)  # in a helper, bounded
        chunks = await asyncio.to_thread(chunk, document, found.chunk_tokens, found.chunk_overlap)
        if not chunks:
            raise InvalidRequest(
                f"{filename}: no text to index (a scanned document needs OCR first)", "file"
            )
        vectors = await self._embed(found, [c.text for c in chunks])
        await asyncio.to_thread(self.objects.put, data)
        fields = {
            "name": filename,
            "media_type": document.media_type,
            "sha256": digest,
            "size": len(data),
            "pages": len(document.pages) or None,
            "characters": len(document.text),
            "metadata": json.dumps({**({"title": document.title} if document.title else {}),
                                    **(metadata or {})}),
            "text": document.text,
        }  # fmt: skip

        def commit(connection: sqlite.Connection) -> tuple[int, list[str]]:
            return self._write_document(connection, found, fields, chunks, vectors)

        document_id, replaced = await asyncio.to_thread(self.database.write, commit)
        self._forget(replaced)
        stored = await asyncio.to_thread(self.document, user, found.id, document_id)
        return Ingested("added" if current is None else "updated", stored)

    def remove(self, user: str, ref: int | str, document_id: int) -> None:
        found = self.get(user, ref, "write")
        document = self.document(user, found.id, document_id)

        def drop(connection: sqlite.Connection) -> list[str]:
            return self._drop_document(connection, found.id, document.id)

        self._forget(self.database.write(drop))

    # -- search ----------------------------------------------------------------

    async def search(
        self,
        user: str,
        refs: Sequence[int | str],
        query: str,
        k: int = 5,
        mode: index.Mode = "hybrid",
        filters: index.SearchFilters | None = None,
        rerank: str | None = None,
    ) -> list[index.Hit]:
        """The ``k`` best passages; with ``rerank`` (an embedding model), RERANK_DEPTH times
        as many candidates re-scored by that model's cosine between query and passage."""
        bases = [await asyncio.to_thread(self.get, user, ref) for ref in refs]
        vectors: dict[int, list[float]] = {}
        if mode != "lexical":
            by_model: dict[str, list[KnowledgeBase]] = {}
            for base in bases:
                if base.dimensions is not None:  # an empty base has nothing to find
                    by_model.setdefault(base.embedding_model, []).append(base)
            for model, group in by_model.items():
                [vector] = await self.embedder(model, [query])
                vectors.update((base.id, vector) for base in group)
        ids = [base.id for base in bases]

        depth = k if rerank is None else k * RERANK_DEPTH

        def run() -> list[index.Hit]:
            return index.search(
                self.database.reader(), query, vectors, ids, k=depth, mode=mode, filters=filters
            )

        hits = await asyncio.to_thread(run)
        if rerank is None or not hits:
            return hits
        [asked, *passages] = await self.embedder(rerank, [query, *(hit.text for hit in hits)])
        return index.reorder(hits, [_cosine(asked, passage) for passage in passages])[:k]

    # -- internals -------------------------------------------------------------

    async def _embed(self, base: KnowledgeBase, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start : start + EMBED_BATCH]
            vectors.extend(await self.embedder(base.embedding_model, batch))
        width = len(vectors[0])
        if base.dimensions is not None and width != base.dimensions:
            raise InvalidRequest(
                f"{base.embedding_model} now gives {width}-dimensional vectors, but knowledge base "
                f"{base.name!r} holds {base.dimensions}-dimensional ones"
            )
        return vectors

    def _by_name(self, kb_id: int, name: str) -> Document | None:
        row = (
            self.database.reader()
            .execute(_DOCUMENT + " WHERE d.kb_id = ? AND d.name = ?", (kb_id, name))
            .fetchone()
        )
        return None if row is None else _document(row)

    def _write_document(
        self,
        connection: sqlite.Connection,
        base: KnowledgeBase,
        fields: dict[str, Any],
        chunks: list[Chunk],
        vectors: list[list[float]],
    ) -> tuple[int, list[str]]:
        """Insert one document with its chunks and vectors, replacing one of the same name."""
        replaced: list[str] = []
        row = connection.execute(
            "SELECT id FROM documents WHERE kb_id = ? AND name = ?", (base.id, fields["name"])
        ).fetchone()
        if row is not None:
            replaced = self._drop_document(connection, base.id, row[0])
        stored = connection.execute(
            "SELECT dimensions FROM knowledge_bases WHERE id = ?", (base.id,)
        ).fetchone()[0]
        if stored is None:
            index.create_vectors(connection, base.id, len(vectors[0]))
        now = _now()
        cursor = connection.execute(
            "INSERT INTO documents (kb_id, name, media_type, sha256, size, pages, characters, "
            "metadata, text, created_at, updated_at) "
            "VALUES (:kb_id, :name, :media_type, :sha256, :size, :pages, :characters, "
            ":metadata, :text, :now, :now)",
            {**fields, "kb_id": base.id, "now": now},
        )
        document_id = cursor.lastrowid
        assert document_id is not None
        chunk_ids = [
            connection.execute(
                "INSERT INTO chunks (document_id, kb_id, ordinal, page, char_start, char_end, "
                "heading, tokens, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (document_id, base.id, c.ordinal, c.page, c.start, c.end, c.heading, c.tokens,
                 c.text),
            ).fetchone()[0]
            for c in chunks
        ]  # fmt: skip
        index.add_vectors(connection, base.id, chunk_ids, vectors)
        connection.execute(
            "UPDATE knowledge_bases SET dimensions = ?, updated_at = ? WHERE id = ?",
            (len(vectors[0]), now, base.id),
        )
        return document_id, replaced

    def _drop_document(
        self, connection: sqlite.Connection, kb_id: int, document_id: int
    ) -> list[str]:
        """Delete a document with its chunks and vectors; the blobs no other document uses."""
        chunk_ids = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM chunks WHERE document_id = ?", (document_id,)
            )
        ]
        index.remove_vectors(connection, kb_id, chunk_ids)
        digest = connection.execute(
            "DELETE FROM documents WHERE id = ? RETURNING sha256", (document_id,)
        ).fetchone()[0]
        return _unused(connection, [digest])

    def _forget(self, digests: list[str]) -> None:
        """Delete blobs whose last document is gone (after the commit, so a crash keeps them)."""
        for digest in digests:
            self.objects.delete(digest)

    def sweep(self) -> int:
        """Delete blobs no document names (a crash between storing one and its commit)."""
        referenced = (
            row[0] for row in self.database.reader().execute("SELECT sha256 FROM documents")
        )
        orphans = self.objects.orphans(referenced)
        self._forget(orphans)
        return len(orphans)
