"""The search index on a real, migrated SQLite file: rows inserted as the service inserts them.

Vectors here are made by hand (a few dimensions, directions chosen per test)
or random and normalized; what they mean does not matter to the mechanics.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blackroad.errors import InvalidRequest
from blackroad.memory import index
from blackroad.memory.index import Hit, SearchFilters
from blackroad.store import sqlite
from blackroad.store.database import Database

NOW = "2026-01-01T00:00:00.000Z"
DIMENSIONS = 8


@dataclass
class Index:
    """A database with helpers that write what the knowledge-base service writes."""

    database: Database

    def base(self, name: str, dimensions: int = DIMENSIONS) -> int:
        def work(connection: sqlite.Connection) -> int:
            cursor = connection.execute(
                "INSERT INTO knowledge_bases (owner, name, embedding_model, dimensions, "
                "chunk_tokens, chunk_overlap, created_at, updated_at) "
                "VALUES ('alice', ?, 'test', ?, 256, 32, ?, ?)",
                (name, dimensions, NOW, NOW),
            )
            assert cursor.lastrowid is not None
            index.create_vectors(connection, cursor.lastrowid, dimensions)
            return cursor.lastrowid

        return self.database.write(work)

    def document(
        self,
        connection: sqlite.Connection,
        kb_id: int,
        name: str,
        passages: Sequence[str],
        vectors: Any,
        media_type: str = "text/plain",
        metadata: dict[str, Any] | None = None,
    ) -> tuple[int, list[int]]:
        text = "\n\n".join(passages)
        document_id = connection.execute(
            "INSERT INTO documents (kb_id, name, media_type, sha256, size, characters, text, "
            "metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            (kb_id, name, media_type, "0" * 64, len(text), len(text), text,
             json.dumps(metadata or {}), NOW, NOW),
        ).fetchone()[0]  # fmt: skip
        chunk_ids = []
        start = 0
        for ordinal, passage in enumerate(passages):
            chunk_ids.append(
                connection.execute(
                    "INSERT INTO chunks (document_id, kb_id, ordinal, page, char_start, char_end, "
                    "heading, tokens, text) VALUES (?, ?, ?, NULL, ?, ?, NULL, ?, ?) RETURNING id",
                    (document_id, kb_id, ordinal, start, start + len(passage),
                     len(passage.split()), passage),
                ).fetchone()[0]
            )  # fmt: skip
            start += len(passage) + 2
        index.add_vectors(connection, kb_id, chunk_ids, vectors)
        return document_id, chunk_ids

    def add(
        self, kb_id: int, name: str, passages: Sequence[str], vectors: Any, **fields: Any
    ) -> int:
        def work(connection: sqlite.Connection) -> int:
            return self.document(connection, kb_id, name, passages, vectors, **fields)[0]

        return self.database.write(work)

    def remove(self, kb_id: int, document_id: int) -> None:
        def work(connection: sqlite.Connection) -> None:
            ids = [r[0] for r in connection.execute(
                "SELECT id FROM chunks WHERE document_id = ?", (document_id,)
            )]  # fmt: skip
            index.remove_vectors(connection, kb_id, ids)
            connection.execute("DELETE FROM documents WHERE id = ?", (document_id,))

        self.database.write(work)

    def search(
        self, query: str, vectors: dict[int, Any], kb_ids: list[int], **options: Any
    ) -> list[Hit]:
        return index.search(self.database.reader(), query, vectors, kb_ids, **options)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Index]:
    database = Database(tmp_path / "blackroad.db")
    yield Index(database)
    database.close()


def axis(*weights: float) -> list[float]:
    """A direction in DIMENSIONS dimensions from its first few coordinates."""
    return [*weights, *[0.0] * (DIMENSIONS - len(weights))]


def unit(count: int, dimensions: int, seed: int) -> Any:
    vectors = np.random.default_rng(seed).standard_normal((count, dimensions)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


PASSAGES = [
    "The pharmacy closes at nine on weekdays.",
    "Ambulances use the north entrance after midnight.",
    "Visitors register at the pharmacy desk before visiting the wards.",
]
# Passage i points along axis i; the query vector below is nearest to passage 1.
VECTORS = [axis(1, 0, 0), axis(0, 1, 0), axis(0, 0, 1)]
QUERY_VECTOR = axis(0.2, 1, 0.1)


def chunk_texts(hits: list[Hit]) -> list[str]:
    return [hit.text for hit in hits]


def test_lexical_search_ranks_by_bm25_and_reports_where_each_chunk_sits(db: Index) -> None:
    kb = db.base("hospital")
    document_id = db.add(kb, "hours.txt", PASSAGES, VECTORS)
    hits = db.search("When does the pharmacy close?", {}, [kb], mode="lexical")
    # Only passage 0 has "close" (stemmed); both mention the pharmacy.
    assert chunk_texts(hits) == [PASSAGES[0], PASSAGES[2]]
    first = hits[0]
    assert (first.document_id, first.kb_id, first.document_name, first.ordinal) == (
        document_id, kb, "hours.txt", 0,
    )  # fmt: skip
    full = "\n\n".join(PASSAGES)
    assert full[first.char_start : first.char_end] == PASSAGES[0]
    assert first.lexical_rank == 1 and first.bm25 is not None and first.bm25 < hits[1].bm25  # type: ignore[operator]
    assert first.vector_rank is None and first.distance is None
    assert first.score == pytest.approx(1 / (index.RRF_K + 1))


def test_vector_search_ranks_by_cosine_distance(db: Index) -> None:
    kb = db.base("hospital")
    db.add(kb, "hours.txt", PASSAGES, VECTORS)
    hits = db.search("no word in common", {kb: QUERY_VECTOR}, [kb], k=3, mode="vector")
    assert chunk_texts(hits) == [PASSAGES[1], PASSAGES[0], PASSAGES[2]]
    query = np.array(QUERY_VECTOR)
    expected = 1 - query[0] / np.linalg.norm(query)  # to passage 0, along axis 0
    assert hits[1].distance == pytest.approx(expected, abs=1e-6)
    assert [hit.vector_rank for hit in hits] == [1, 2, 3]
    assert all(hit.lexical_rank is None for hit in hits)


def test_hybrid_puts_what_both_lists_found_first(db: Index) -> None:
    kb = db.base("hospital")
    db.add(kb, "hours.txt", PASSAGES, VECTORS)
    # Lexically passage 2 (pharmacy desk, wards) wins; by vector, passage 2 as well.
    query_vector = axis(0.1, 0.3, 1)
    hits = db.search("pharmacy desk wards", {kb: query_vector}, [kb], k=3)
    assert hits[0].text == PASSAGES[2]
    assert (hits[0].lexical_rank, hits[0].vector_rank) == (1, 1)
    assert hits[0].score == pytest.approx(2 / (index.RRF_K + 1))
    # Passage 1 is found only by vector (it has none of the words).
    ambulances = next(hit for hit in hits if hit.text == PASSAGES[1])
    assert ambulances.lexical_rank is None and ambulances.vector_rank == 2
    assert ambulances.score == pytest.approx(1 / (index.RRF_K + 2))
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_a_base_without_a_query_vector_is_searched_lexically(db: Index) -> None:
    kb = db.base("hospital")
    db.add(kb, "hours.txt", PASSAGES, VECTORS)
    assert chunk_texts(db.search("ambulances", {}, [kb]))[:1] == [PASSAGES[1]]
    assert db.search("ambulances", {}, [kb], mode="vector") == []


HOSTILE = [
    '"',
    '""',
    '"unterminated',
    "*",
    "pharm*",
    "NEAR(",
    "NEAR(pharmacy wards, 2)",
    "OR",
    "AND",
    "NOT",
    "pharmacy OR",
    "OR pharmacy AND NOT wards",
    "-",
    "-pharmacy",
    "pharmacy -wards",
    "^pharmacy",
    "text:pharmacy",
    "{text}: pharmacy",
    "(pharmacy",
    "pharmacy)",
    "'; DROP TABLE chunks; --",
    "\x00pharmacy\x00",
    "pharmacy + wards",
    "ファーマシー 药房 صيدلية",
    "phármácy ñ ü ß İ",
    "🏥💊",
    "e\u0301\u0301\u0301",
    "\u202epharmacy",
    "a" * 10_000,
    " ".join(["pharmacy", '"', "NEAR(", "*", "OR"] * 400),
    "".join(random.Random(9).choice('abc "*()-:^+ NEAROR\u00e9\u4e2d') for _ in range(10_000)),
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_no_query_text_can_make_a_search_fail(db: Index, query: str, mode: index.Mode) -> None:
    kb = db.base("hospital")
    db.add(kb, "hours.txt", PASSAGES, VECTORS)
    hits = db.search(query, {kb: QUERY_VECTOR}, [kb], mode=mode)
    if mode == "lexical" and "pharmacy" in query.lower() and query.isascii():
        # The words survive as words: the passages that hold them are found.
        assert any("pharmacy" in hit.text for hit in hits if hit.lexical_rank is not None)


@pytest.mark.parametrize("query", ["", "   ", "!!!", '"*"', "-- ** ^^ ()", "\u3000\u3001"])
def test_a_query_without_words_has_no_lexical_hits(db: Index, query: str) -> None:
    kb = db.base("hospital")
    db.add(kb, "hours.txt", PASSAGES, VECTORS)
    assert index.fts_terms(query) == []
    assert db.search(query, {}, [kb], mode="lexical") == []
    # In hybrid mode the vectors still answer.
    hits = db.search(query, {kb: QUERY_VECTOR}, [kb], k=1)
    assert chunk_texts(hits) == [PASSAGES[1]] and hits[0].lexical_rank is None


def test_hybrid_fuses_only_chunks_holding_two_of_the_query_s_words(db: Index) -> None:
    kb = db.base("hospital")
    db.add(kb, "hours.txt", PASSAGES, VECTORS)
    far = axis(0, 0, 0, 1)  # no passage is near: the lexical list decides what is shared
    # "wards" alone (with a word found nowhere) is weak evidence: vectors only.
    hits = db.search("wards zebra", {kb: far}, [kb], k=3)
    assert all(hit.lexical_rank is None for hit in hits)
    assert [h.text for h in db.search("wards zebra", {}, [kb], mode="lexical")] == [PASSAGES[2]]
    # Two of its words in one passage: BM25 has its say.
    hits = db.search("wards pharmacy zebra", {kb: far}, [kb], k=3)
    assert [hit.text for hit in hits if hit.lexical_rank is not None] == [PASSAGES[2]]
    # A one-word query needs only that word.
    hits = db.search("ambulances", {kb: far}, [kb], k=3)
    assert [hit.text for hit in hits if hit.lexical_rank is not None] == [PASSAGES[1]]


def test_query_words_become_quoted_strings_only() -> None:
    terms = index.fts_terms('What is NEAR("pharmacy" OR wards*) -closed? Ünïcode')
    # FTS5's operators are words like any other ("or" is also a common one, left out).
    assert terms == ['"near"', '"pharmacy"', '"wards"', '"closed"', '"ünïcode"']
    assert len(index.fts_terms(" ".join(f"word{i}" for i in range(1000)))) == index.MAX_TERMS
    # Only common words: they are kept, so the query still means something.
    assert index.fts_terms("what is it") == ['"what"', '"is"', '"it"']


@dataclass
class Stored:
    name: str
    media_type: str
    metadata: dict[str, Any]
    id: int = 0


def test_filters_by_document_media_type_and_metadata(db: Index) -> None:
    kb = db.base("firm")
    text = ["Client matters are confidential."]
    documents = [
        Stored("memo.txt", "text/plain", {"client": "acme", "year": 2024}),
        Stored("brief.md", "text/markdown", {"client": "acme", "year": 2025, "sealed": True}),
        Stored("other.txt", "text/plain", {"client": "globex", "year": "2024", "sealed": 1}),
    ]
    for offset, document in enumerate(documents):
        fields = {"media_type": document.media_type, "metadata": document.metadata}
        document.id = db.add(kb, document.name, text, [axis(1, offset / 10)], **fields)
    memo, brief, other = (document.id for document in documents)
    vectors = {kb: axis(1)}

    def found(filters: SearchFilters, mode: index.Mode = "hybrid") -> set[int]:
        hits = db.search("client", vectors, [kb], filters=filters, mode=mode)
        ids = {hit.document_id for hit in hits}
        # The service's own check of whole documents agrees with the SQL.
        assert ids == {document.id for document in documents if filters.admits(document)}
        return ids

    for mode in ("lexical", "vector", "hybrid"):
        assert found(SearchFilters(), mode) == {memo, brief, other}
        assert found(SearchFilters(documents=(memo, other)), mode) == {memo, other}
        assert found(SearchFilters(documents=()), mode) == set()
        assert found(SearchFilters(media_type="text/markdown"), mode) == {brief}
        assert found(SearchFilters(metadata={"client": "acme"}), mode) == {memo, brief}
        # JSON's types count: 2024 is not "2024", True is not 1.
        assert found(SearchFilters(metadata={"year": 2024}), mode) == {memo}
        assert found(SearchFilters(metadata={"year": "2024"}), mode) == {other}
        assert found(SearchFilters(metadata={"year": 2024.0}), mode) == {memo}
        assert found(SearchFilters(metadata={"sealed": True}), mode) == {brief}
        assert found(SearchFilters(metadata={"sealed": 1}), mode) == {other}
        assert found(SearchFilters(metadata={"client": "acme", "year": 2025}), mode) == {brief}
        assert found(SearchFilters(metadata={"missing": "x"}), mode) == set()
        assert (
            found(SearchFilters(documents=(brief,), metadata={"client": "globex"}), mode) == set()
        )


def test_a_selective_filter_loses_no_vector_results(db: Index) -> None:
    """The filter is applied inside the KNN: far-away allowed chunks are still the k found."""
    kb = db.base("big", dimensions=64)
    crowd = unit(3000, 64, seed=1)
    db.add(kb, "crowd.txt", [f"crowd {i}" for i in range(3000)], crowd)
    query = crowd[0]
    # The allowed document's chunks point away from the query: all 3000 others are nearer.
    far = unit(7, 64, seed=2) * 0.3 - query
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    allowed = db.add(kb, "far.txt", [f"far {i}" for i in range(7)], far)
    hits = db.search("", {kb: query}, [kb], k=5, mode="vector",
                     filters=SearchFilters(documents=(allowed,)))  # fmt: skip
    assert len(hits) == 5 and {hit.document_id for hit in hits} == {allowed}
    exact = np.argsort(-(far @ query))[:5]
    assert [hit.text for hit in hits] == [f"far {i}" for i in exact]


def test_the_nearest_vector_is_found_among_thousands(db: Index) -> None:
    """More chunks than Hamming candidates: each chunk's own vector still finds it first."""
    kb = db.base("big", dimensions=128)
    vectors = unit(5000, 128, seed=3)
    db.add(kb, "crowd.txt", [f"crowd {i}" for i in range(5000)], vectors)
    for i in (0, 1234, 4999):
        [hit] = db.search("", {kb: vectors[i]}, [kb], k=1, mode="vector")
        assert hit.text == f"crowd {i}" and hit.distance == pytest.approx(0, abs=1e-6)


def count(connection: sqlite.Connection, sql: str, *params: Any) -> int:
    return int(connection.execute(sql, params).fetchone()[0])


def count_in(connection: sqlite.Connection, table: str, column: str, ids: list[int]) -> int:
    """Rows of ``table`` (a name made here) whose ``column`` is one of ``ids``."""
    sql = f"SELECT count(*) FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))"  # noqa: S608
    return count(connection, sql, json.dumps(ids))


def test_removing_a_document_leaves_no_trace_in_either_index(db: Index) -> None:
    kb = db.base("hospital")
    keep = db.add(kb, "keep.txt", ["Ambulances park at the north entrance."], [axis(0, 1)])
    gone = db.add(kb, "gone.txt", PASSAGES, VECTORS)
    reader = db.database.reader()
    gone_chunks = [
        r[0] for r in reader.execute("SELECT id FROM chunks WHERE document_id = ?", (gone,))
    ]
    db.remove(kb, gone)

    hits = db.search("pharmacy ambulances wards", {kb: QUERY_VECTOR}, [kb], k=10)
    assert {hit.document_id for hit in hits} == {keep}
    assert count(reader, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'pharmacy'") == 0
    table = index.vector_table(kb)
    assert count_in(reader, table, "chunk_id", gone_chunks) == 0
    # Nor in sqlite-vec's own tables: the row ids and the stored floats.
    assert count_in(reader, f"{table}_rowids", "id", gone_chunks) == 0
    assert count_in(reader, f"{table}_auxiliary", "rowid", gone_chunks) == 0
    assert count_in(reader, table, "chunk_id", list(range(1, 100))) == 1

    def integrity(connection: sqlite.Connection) -> None:
        connection.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")

    db.database.write(integrity)  # raises if the index and the chunks disagree


class Abort(Exception):
    pass


def test_a_rolled_back_transaction_leaves_nothing(db: Index) -> None:
    kb = db.base("existing")
    existing = db.add(kb, "before.txt", ["Nothing about drugs here."], [axis(1)])
    fresh = db.database.write(
        lambda connection: connection.execute(
            "INSERT INTO knowledge_bases (owner, name, embedding_model, chunk_tokens, "
            "chunk_overlap, created_at, updated_at) VALUES ('alice', 'new', 'test', 256, 32, ?, ?) "
            "RETURNING id",
            (NOW, NOW),
        ).fetchone()[0]
    )

    # A base's first document: its vector table is the transaction's first statement.
    def first_document(connection: sqlite.Connection) -> None:
        index.create_vectors(connection, fresh, DIMENSIONS)
        db.document(connection, fresh, "hours.txt", PASSAGES, VECTORS)
        raise Abort

    def another_document(connection: sqlite.Connection) -> None:
        db.document(connection, kb, "hours.txt", PASSAGES, VECTORS)
        raise Abort

    # Deleting a base drops its vectors first.
    def delete_base(connection: sqlite.Connection) -> None:
        index.drop_vectors(connection, kb)
        connection.execute("DELETE FROM knowledge_bases WHERE id = ?", (kb,))
        raise Abort

    for attempt in (first_document, another_document, delete_base):
        with pytest.raises(Abort):
            db.database.write(attempt)
    reader = db.database.reader()
    assert count(reader, "SELECT count(*) FROM knowledge_bases") == 2
    assert count(reader, "SELECT count(*) FROM chunks") == 1
    assert count(reader, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'pharmacy'") == 0
    assert (
        count(
            reader, "SELECT count(*) FROM sqlite_master WHERE name = ?", index.vector_table(fresh)
        )
        == 0
    )
    assert count(reader, f"SELECT count(*) FROM {index.vector_table(kb)}") == 1  # noqa: S608
    hits = db.search("drugs", {kb: axis(1)}, [kb], k=10)
    assert [hit.document_id for hit in hits] == [existing]
    # The fresh base can still get its table: nothing of the attempt is in the way.
    db.database.write(lambda connection: index.create_vectors(connection, fresh, DIMENSIONS))


def test_two_knowledge_bases_do_not_see_each_others_chunks(db: Index) -> None:
    mine, theirs = db.base("mine"), db.base("theirs", dimensions=16)
    db.add(mine, "a.txt", ["The vault code is kept by the night porter."], [axis(1)])
    db.add(theirs, "b.txt", ["The vault code is kept by the day porter."], unit(1, 16, seed=4))
    for mode in ("lexical", "vector", "hybrid"):
        hits = db.search("vault code porter", {mine: axis(1)}, [mine], k=10, mode=mode)
        assert [hit.kb_id for hit in hits] == [mine]
    both = db.search("vault code porter", {mine: axis(1), theirs: unit(1, 16, seed=4)[0]},
                     [mine, theirs], k=10)  # fmt: skip
    assert sorted(hit.kb_id for hit in both) == sorted([mine, theirs])
    assert all(hit.lexical_rank and hit.vector_rank for hit in both)


def test_dropping_a_base_s_vectors_leaves_its_text_searchable(db: Index) -> None:
    kb = db.base("hospital")
    db.add(kb, "hours.txt", PASSAGES, VECTORS)
    db.database.write(lambda connection: index.drop_vectors(connection, kb))
    assert db.search("ambulances", {kb: QUERY_VECTOR}, [kb], mode="vector") == []
    assert chunk_texts(db.search("ambulances", {kb: QUERY_VECTOR}, [kb])) == [PASSAGES[1]]
    db.database.write(lambda connection: index.drop_vectors(connection, kb))  # twice is fine


def test_wrong_vectors_are_refused(db: Index) -> None:
    kb = db.base("hospital")
    with pytest.raises(InvalidRequest, match="8 dimensions"):
        db.add(kb, "bad.txt", ["one"], [[1.0, 0.0]])
    with pytest.raises(InvalidRequest, match="finite"):
        db.add(kb, "bad.txt", ["one"], [axis(float("nan"))])
    with pytest.raises(InvalidRequest, match="zero vector"):
        db.add(kb, "bad.txt", ["one"], [axis()])
    with pytest.raises(InvalidRequest, match="2 chunks but 1 vectors"):
        db.add(kb, "bad.txt", ["one", "two"], [axis(1)])
    with pytest.raises(InvalidRequest, match="dimensions"):
        db.search("x", {kb: [1.0, 2.0]}, [kb])
    with pytest.raises(InvalidRequest):
        db.database.write(lambda connection: index.create_vectors(connection, 99, 7))
    with pytest.raises(InvalidRequest, match="k"):
        db.search("x", {}, [kb], k=0)
    assert count(db.database.reader(), "SELECT count(*) FROM chunks") == 0


def hit(chunk_id: int, score: float) -> Hit:
    return Hit(chunk_id, 1, 1, "d", 0, None, 0, 1, None, 1, "t", score)


def test_reorder_follows_the_reranker_s_scores() -> None:
    hits = [hit(1, 0.3), hit(2, 0.2), hit(3, 0.1)]
    reordered = index.reorder(hits, [0.1, 0.9, 0.1])
    assert [(h.chunk_id, h.score) for h in reordered] == [(2, 0.9), (1, 0.1), (3, 0.1)]
    with pytest.raises(InvalidRequest):
        index.reorder(hits, [1.0])
