"""The knowledge bases' search index: BM25 over FTS5, KNN over sqlite-vec, fused by RRF.

Everything here runs on the caller's connection and inside the caller's
transaction: the service inserts ``chunks`` rows (their FTS5 entries follow
by trigger) and calls :func:`add_vectors` in the same transaction, so a
document is indexed wholly or not at all. The functions that change the
schema (:func:`create_vectors`, :func:`drop_vectors`) open the transaction if
none is open yet, because the DB-API driver begins one only before DML and a
``CREATE`` run outside it would commit on its own.

**Vectors.** Each knowledge base has its own ``vec0`` table
(``kb_vectors_<id>``), since each chooses its embedding model and so its
dimension. A row holds the chunk id, a coarse code of the (normalized)
embedding that the KNN scans, and the float32 embedding itself as an
auxiliary column, read only for the candidates. The code quantizes each
coordinate to one of 8 levels (thresholds: the octiles of N(0, 1/D), how a
coordinate of a unit vector spreads) and writes level ``l`` as ``l`` ones
out of 7 bits, so the Hamming distance of two codes (``bit[7D]``) is the L1
distance between their levels. A search takes the ``OVERSAMPLE * k`` (at
least ``depth``) nearest codes and re-scores them by exact cosine distance
(``vec_distance_cosine``). Why: the published sqlite-vec (0.1.9) is brute
force only and built without SIMD. Over 100k x 384 real MiniLM vectors on
this machine a float KNN took 41-48 ms a query; sign bits (``bit[D]``) scan
in 2-3 ms but recall only 0.83 of the exact top 5 from 80 candidates; this
code scans in about 9 ms and recalls 0.98 from 40, 0.994 from 60 and 0.995
from 80 candidates (``OVERSAMPLE = 12``: 60 for k = 5). A KNN's cost in
sqlite-vec grows with its k (about 1 ns per row and unit of k), hence the
small candidate lists. The float embedding beside the code gives exact
distances for the hits and lets a base be re-coded. The figures are in
``docs/benchmarks.md`` ("Retrieval (issue 9)").

**Filters** (documents, media type, equality on top-level keys of the
documents' JSON metadata) become a subquery of the chunk ids they allow,
given to the KNN itself as ``chunk_id IN (...)``: sqlite-vec skips every other
row while it scans, so a selective filter loses nothing (its k nearest are
the k nearest among the allowed chunks), and when fewer chunks are allowed
than candidates are taken, all of them are re-scored and the result is exact.
The lexical list applies the same subquery to the FTS5 matches, reading the
chunks' indexes rather than their rows.

**Lexical.** The user's query never reaches FTS5 as syntax: its words (runs of
Unicode letters and digits, at most ``MAX_TERMS``) become double-quoted
strings, common English words dropped when others remain; FTS5 operators,
quotes, ``NEAR(``, ``*`` and ``-`` are only text. A query without words has
no lexical hits. FTS5 scores every row a query matches, so the words are
kept rarest first while the rows they match add up to ``POSTINGS_BUDGET``
(see :func:`_affordable_terms`): at 100k chunks that took an OR query of
ordinary words from 50 to about 5 ms. The lexical mode matches any of the
words (``OR``); the hybrid one only chunks holding at least two of them
(Elasticsearch's ``minimum_should_match``), because a chunk that shares one
word with a question ("hire" in "who can I hire ...") is no evidence, and in
the fusion it pushed the vectors' answers down (recall@5 of paraphrased
questions 0.75 with plain OR, 0.87 with pairs; ``test_retrieval_quality``).
BM25 statistics are those of the one ``chunks_fts`` index, over every
knowledge base.

**Fusion.** Reciprocal rank fusion: a chunk scores the sum over the lists
that found it of ``1 / (RRF_K + rank)``, rank 1-based, with ``RRF_K = 60``
(Cormack, Clarke and Büttcher, 2009: the constant damps the weight of the
very top ranks, so one list's first place does not drown the other's
agreement). Each list contributes its top ``depth = max(DEPTH, k)`` items.
The vector list of several knowledge bases is merged by cosine distance. A
single-list mode scores by the same formula, so ``score`` always means the
same thing; the raw ``bm25`` and ``distance`` come with each hit. RRF sees
ranks only: where BM25's first hit is far ahead of its second (an exact
address) and the vectors prefer the second, the two can tie.

**Reranking** by a model belongs to the service (``memory/`` calls engines
only through the embeddings service): :func:`reorder` puts hits in the order
of the scores a reranker gave them.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from blackroad.errors import InvalidRequest
from blackroad.store import sqlite

__all__ = [
    "DEPTH",
    "MAX_PAIRED",
    "MAX_TERMS",
    "OVERSAMPLE",
    "POSTINGS_BUDGET",
    "RRF_K",
    "FilteredDocument",
    "Hit",
    "Mode",
    "SearchFilters",
    "add_vectors",
    "create_vectors",
    "drop_vectors",
    "fts_terms",
    "remove_vectors",
    "reorder",
    "search",
    "vector_table",
]

Mode = Literal["hybrid", "lexical", "vector"]
MetadataValue = str | int | float | bool

RRF_K = 60
# Each list's contribution to the fusion: its top max(DEPTH, k).
DEPTH = 50
# Hamming candidates re-scored by exact cosine distance, per item wanted.
OVERSAMPLE = 12
# sqlite-vec refuses a KNN with k above 4096.
_KNN_MAX = 4096
MAX_TERMS = 32
# The rarest words whose pairs make a hybrid search's lexical query (28 pairs).
MAX_PAIRED = 8
# Chunks an OR query may match, counted per term (see _affordable_terms).
POSTINGS_BUDGET = 5_000
_WORD = re.compile(r"[^\W_]+")
# Words too common to say what a passage is about; dropped from the FTS5 query
# (unless nothing else is left), since each would match most chunks and make
# every chunk that holds one a candidate to score.
_STOPWORDS = frozenset({
    "a", "about", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by",
    "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or",
    "our", "she", "so", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "those", "to", "was", "we", "were", "what", "when", "where", "which", "who", "whom",
    "why", "will", "with", "would", "you", "your",
})  # fmt: skip
# The coarse code: each coordinate of a unit vector quantized to one of 8 levels, written as 7
# "above threshold" bits (a thermometer code), so the Hamming distance between two codes is the
# L1 distance between their levels. The thresholds are the octiles of N(0, 1/D), about how a
# coordinate of a unit vector in D dimensions is spread, so the levels are about equally used.
_OCTILES = np.array([-1.1503, -0.6745, -0.3186, 0.0, 0.3186, 0.6745, 1.1503], dtype=np.float32)
_CODE = re.compile(r"\bsq8 bit\[(\d+)\]")


@dataclass(frozen=True)
class SearchFilters:
    """What a search may return besides its knowledge bases; ``None`` or empty: no condition.

    ``metadata`` keys are matched by equality against the top-level keys of a
    document's JSON metadata, with JSON's types: ``True`` matches ``true`` only,
    a number matches an equal number, a string an equal string.
    """

    documents: tuple[int, ...] | None = None
    media_type: str | None = None
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.documents is not None or self.media_type is not None or bool(self.metadata)

    def admits(self, document: FilteredDocument) -> bool:
        """Whether ``document`` passes, as the search's SQL decides (for callers outside it)."""
        if self.documents is not None and document.id not in self.documents:
            return False
        if self.media_type is not None and document.media_type != self.media_type:
            return False
        return all(
            key in document.metadata and _same_json(document.metadata[key], value)
            for key, value in self.metadata.items()
        )


class FilteredDocument(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def media_type(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else type(value).__name__


def _same_json(stored: object, wanted: MetadataValue) -> bool:
    return _json_kind(stored) == _json_kind(wanted) and stored == wanted


@dataclass(frozen=True)
class Hit:
    """One chunk found, with its place in its document and how each list ranked it."""

    chunk_id: int
    document_id: int
    kb_id: int
    document_name: str
    ordinal: int
    page: int | None
    char_start: int
    char_end: int
    heading: str | None
    tokens: int
    text: str
    score: float  # the fused score (module docstring); a reranker's after reorder()
    lexical_rank: int | None = None  # 1-based, None where BM25 did not find it
    bm25: float | None = None  # FTS5's bm25(): lower is better
    vector_rank: int | None = None
    distance: float | None = None  # cosine distance, 0 (same direction) to 2


def vector_table(kb_id: int) -> str:
    """The name of a knowledge base's ``vec0`` table (an integer id: safe to put in SQL)."""
    return f"kb_vectors_{operator.index(kb_id)}"


def _begin(connection: sqlite.Connection) -> None:
    if not connection.in_transaction:
        connection.execute("BEGIN")


def create_vectors(connection: sqlite.Connection, kb_id: int, dimensions: int) -> None:
    """Create the vector table of a knowledge base whose embeddings have ``dimensions``."""
    if not 1 <= dimensions <= 8192 or dimensions % 8:
        # A code is whole bytes (7 bits a dimension); embedding models give multiples of 8.
        raise InvalidRequest(f"unsupported embedding width {dimensions}", "dimensions")
    _begin(connection)
    connection.execute(
        f"CREATE VIRTUAL TABLE {vector_table(kb_id)} USING vec0("
        f"chunk_id INTEGER PRIMARY KEY, sq8 bit[{len(_OCTILES) * operator.index(dimensions)}], "
        "+embedding BLOB)"
    )


def drop_vectors(connection: sqlite.Connection, kb_id: int) -> None:
    """Drop a knowledge base's vector table, if it has one."""
    _begin(connection)
    connection.execute(f"DROP TABLE IF EXISTS {vector_table(kb_id)}")


def _dimensions(connection: sqlite.Connection, kb_id: int) -> int | None:
    row = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (vector_table(kb_id),)
    ).fetchone()
    if row is None:
        return None
    found = _CODE.search(row[0])
    assert found is not None, row[0]  # the table is create_vectors' own
    return int(found.group(1)) // len(_OCTILES)


def _matrix(vectors: Sequence[Sequence[float]] | npt.ArrayLike, dimensions: int) -> Any:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != dimensions:
        raise InvalidRequest(
            f"expected vectors of {dimensions} dimensions, got an array of shape {matrix.shape}",
            "vectors",
        )
    if not np.isfinite(matrix).all():
        raise InvalidRequest("vectors must be finite numbers", "vectors")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not norms.all():
        raise InvalidRequest("a zero vector has no direction to compare", "vectors")
    return matrix / norms


def _codes(units: Any) -> Any:
    """The coarse codes (one row of bytes each) of unit vectors."""
    thresholds = _OCTILES[:, None] / np.float32(np.sqrt(units.shape[1]))
    above = units[:, None, :] > thresholds  # (vectors, 7, dimensions)
    return np.packbits(above.reshape(len(units), -1), axis=1)


def add_vectors(
    connection: sqlite.Connection,
    kb_id: int,
    chunk_ids: Sequence[int],
    vectors: Sequence[Sequence[float]] | npt.ArrayLike,
) -> None:
    """Index the embeddings of chunks already inserted in this transaction."""
    if not len(chunk_ids):
        return
    dimensions = _dimensions(connection, kb_id)
    if dimensions is None:
        raise InvalidRequest(f"knowledge base {kb_id} has no vector table", "kb_id")
    matrix = _matrix(vectors, dimensions)
    if len(matrix) != len(chunk_ids):
        raise InvalidRequest(f"{len(chunk_ids)} chunks but {len(matrix)} vectors", "vectors")
    rows = zip(chunk_ids, _codes(matrix), matrix, strict=True)
    connection.executemany(
        f"INSERT INTO {vector_table(kb_id)} (chunk_id, sq8, embedding) "  # noqa: S608
        "VALUES (?, vec_bit(?), ?)",
        ((operator.index(i), code.tobytes(), unit.tobytes()) for i, code, unit in rows),
    )


def remove_vectors(connection: sqlite.Connection, kb_id: int, chunk_ids: Sequence[int]) -> None:
    """Remove chunks' vectors (their rows and FTS5 entries are the caller's to delete)."""
    if not chunk_ids or _dimensions(connection, kb_id) is None:
        return
    connection.executemany(
        f"DELETE FROM {vector_table(kb_id)} WHERE chunk_id = ?",  # noqa: S608
        ((operator.index(i),) for i in chunk_ids),
    )


def fts_terms(query: str) -> list[str]:
    """The user's words as FTS5 strings (double-quoted), without syntax; [] if it has none.

    Common English words are left out when others remain; at most ``MAX_TERMS``.
    """
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    meaningful = [w for w in words if w not in _STOPWORDS] or words
    # A word holds no double quote (it is letters and digits), so quoting cannot be escaped.
    return [f'"{w}"' for w in meaningful[:MAX_TERMS]]


# -- search ------------------------------------------------------------------------------


def _allowed_documents(
    kb_ids: Sequence[int], filters: SearchFilters | None
) -> tuple[str, list[Any]]:
    """A subquery of the ids of the documents of ``kb_ids`` that ``filters`` allow.

    ("", []) when there are no filters: every document of the bases.
    """
    if not filters:
        return "", []
    clauses = ["d.kb_id IN (SELECT value FROM json_each(?))"]
    params: list[Any] = [json.dumps(list(kb_ids))]
    if filters.documents is not None:
        clauses.append("d.id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps([operator.index(d) for d in filters.documents]))
    if filters.media_type is not None:
        clauses.append("d.media_type = ?")
        params.append(filters.media_type)
    for key, value in filters.metadata.items():
        if isinstance(value, bool):
            types, value = ["true" if value else "false"], int(value)
        elif isinstance(value, int | float):
            types = ["integer", "real"]
        else:
            types = ["text"]
        clauses.append(
            "EXISTS (SELECT 1 FROM json_each(d.metadata) m WHERE m.key = ? "
            "AND m.type IN (SELECT value FROM json_each(?)) AND m.value = ?)"
        )
        params.extend([key, json.dumps(types), value])
    return "SELECT d.id FROM documents d WHERE " + " AND ".join(clauses), params  # noqa: S608


def _affordable_terms(connection: sqlite.Connection, terms: list[str]) -> tuple[list[str], int]:
    """The rarest of ``terms`` whose chunks together stay within ``POSTINGS_BUDGET``.

    FTS5 scores every chunk an OR query matches, so a common word would make
    most of a large index candidates. Each term's matches are counted (up to
    the budget, through FTS5 itself, so with its own tokenizer and stemmer),
    and terms are kept rarest first while their counts add up to at most the
    budget; the rarest term that matches anything is always kept, and words
    that together match fewer chunks than the budget are all kept. Returns the
    terms kept and how many of ``terms`` match anything.
    """
    counted = []
    for term in terms:
        (count,) = connection.execute(
            "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
            (term, POSTINGS_BUDGET + 1),
        ).fetchone()
        if count:
            counted.append((count, term))
    kept: list[str] = []
    total = 0
    for count, term in sorted(counted):
        if kept and total + count > POSTINGS_BUDGET:
            break
        kept.append(term)
        total += count
    return kept, len(counted)


def _lexical(
    connection: sqlite.Connection,
    query: str,
    kb_ids: Sequence[int],
    depth: int,
    allowed: tuple[str, list[Any]],
    paired: bool,
) -> list[tuple[int, float]]:
    """(chunk id, bm25) of the best ``depth`` FTS5 matches, best first.

    ``paired``: only chunks holding at least two of the query's words, when it
    has several (pairs of its ``MAX_PAIRED`` rarest; the rarest alone where the
    others were left out as too common).
    """
    words = fts_terms(query)
    terms, matching = _affordable_terms(connection, words)
    if not terms or (paired and len(words) > 1 and matching < 2):
        return []
    match = " OR ".join(terms)
    if paired and len(terms) > 1:
        pairs = itertools.combinations(terms[:MAX_PAIRED], 2)
        match = " OR ".join(f"({a} AND {b})" for a, b in pairs)
    subquery, params = allowed
    # Whether a match is in scope is read from the chunks' indexes, which are
    # small and cached, not from their rows, which hold the text: that
    # halved the time of a query matching thousands of chunks.
    if subquery:
        scope = f"c.document_id IN ({subquery})"
        index_name = "ix_chunks_document_id"
    else:
        scope, params = "c.kb_id IN (SELECT value FROM json_each(?))", [json.dumps(kb_ids)]
        index_name = "ix_chunks_kb_id"
    rows = connection.execute(
        "SELECT rowid, bm25(chunks_fts) AS score FROM chunks_fts "  # noqa: S608
        f"WHERE chunks_fts MATCH ? AND EXISTS (SELECT 1 FROM chunks c INDEXED BY {index_name} "
        f"WHERE {scope} AND c.id = chunks_fts.rowid) ORDER BY score LIMIT ?",
        [match, *params, depth],
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def _nearest(
    connection: sqlite.Connection,
    kb_id: int,
    vector: Sequence[float],
    k: int,
    depth: int,
    allowed: tuple[str, list[Any]],
) -> list[tuple[int, float]]:
    """(chunk id, cosine distance) of a knowledge base's ``depth`` nearest chunks, best first.

    The first ``k`` are re-scored from ``OVERSAMPLE * k`` Hamming candidates
    (or ``depth``, if more), the rest of the list is what those candidates hold.
    """
    dimensions = _dimensions(connection, kb_id)
    if dimensions is None:
        return []  # nothing embedded yet
    unit = _matrix([vector], dimensions)
    code, query = _codes(unit)[0].tobytes(), unit[0].tobytes()
    subquery, params = allowed
    condition = (
        " AND chunk_id IN (SELECT c.id FROM chunks c INDEXED BY ix_chunks_document_id "  # noqa: S608
        f"WHERE c.document_id IN ({subquery}))"
        if subquery
        else ""
    )
    candidates = min(_KNN_MAX, max(depth, OVERSAMPLE * k))
    table = vector_table(kb_id)
    rows = connection.execute(
        f"WITH coarse AS (SELECT chunk_id, embedding FROM {table} "  # noqa: S608
        f"WHERE sq8 MATCH vec_bit(?) AND k = ?{condition}) "
        "SELECT chunk_id, vec_distance_cosine(embedding, ?) AS distance FROM coarse "
        "ORDER BY distance LIMIT ?",
        [code, candidates, *params, query, depth],
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


_HIT_COLUMNS = (
    "c.id, c.document_id, c.kb_id, d.name, c.ordinal, c.page, c.char_start, c.char_end, "
    "c.heading, c.tokens, c.text"
)


def search(
    connection: sqlite.Connection,
    query: str,
    vectors: Mapping[int, Sequence[float]],
    kb_ids: Sequence[int],
    k: int = 5,
    mode: Mode = "hybrid",
    filters: SearchFilters | None = None,
) -> list[Hit]:
    """The ``k`` best chunks of ``kb_ids`` for ``query``, best first.

    ``vectors`` maps each knowledge base to the query's embedding in that
    base's model; a base missing from it is searched lexically only.
    """
    if k < 1:
        raise InvalidRequest("k must be at least 1", "k")
    if mode not in ("hybrid", "lexical", "vector"):
        raise InvalidRequest(f"unknown search mode {mode!r}", "mode")
    kb_ids = [operator.index(i) for i in dict.fromkeys(kb_ids)]
    if not kb_ids:
        return []
    depth = max(DEPTH, k) if mode == "hybrid" else k
    allowed = _allowed_documents(kb_ids, filters)

    lexical: list[tuple[int, float]] = []
    if mode != "vector":
        lexical = _lexical(connection, query, kb_ids, depth, allowed, paired=mode == "hybrid")
    nearest: list[tuple[int, float]] = []
    if mode != "lexical":
        for kb_id in kb_ids:
            if kb_id in vectors:
                found = _nearest(connection, kb_id, vectors[kb_id], k, depth, allowed)
                nearest.extend(found)
        nearest = sorted(nearest, key=lambda found: found[1])[:depth]

    fused: dict[int, dict[str, Any]] = {}
    for name, found in (("lexical", lexical), ("vector", nearest)):
        for rank, (chunk_id, value) in enumerate(found, start=1):
            entry = fused.setdefault(chunk_id, {"score": 0.0})
            entry["score"] += 1.0 / (RRF_K + rank)
            entry[f"{name}_rank"] = rank
            entry["bm25" if name == "lexical" else "distance"] = value
    best = sorted(fused, key=lambda chunk_id: -fused[chunk_id]["score"])[:k]
    if not best:
        return []

    rows = connection.execute(
        f"SELECT {_HIT_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id "  # noqa: S608
        "WHERE c.id IN (SELECT value FROM json_each(?))",
        (json.dumps(best),),
    ).fetchall()
    by_id = {row[0]: row for row in rows}
    return [Hit(*by_id[chunk_id], **fused[chunk_id]) for chunk_id in best if chunk_id in by_id]


def reorder(hits: Sequence[Hit], scores: Sequence[float]) -> list[Hit]:
    """``hits`` in the order of a reranker's ``scores`` (higher first), each with its score.

    Hits a reranker scores the same keep their order.
    """
    if len(scores) != len(hits):
        raise InvalidRequest(f"{len(hits)} hits but {len(scores)} scores", "scores")
    ranked = sorted(zip(hits, scores, strict=True), key=lambda pair: -pair[1])
    return [replace(hit, score=float(score)) for hit, score in ranked]
