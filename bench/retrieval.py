"""Knowledge-base retrieval: ingest throughput and query latency, against ChromaDB (issue 9).

    .venv/bin/python -m bench.retrieval [--sizes 10000,100000] [--sample 2000] [--queries 200]
        [--k 5] [--threads 2] [--oversample 12] [--model all-minilm:l6-v2] [--skip-chroma]

**Text.** Chunks are English prose from the docstrings of this Python's
standard library (deterministic for a given Python version): sentences taken
in order from a random place while the chunk stays within 200 tokens (the
chunker's default and its estimate of WordPiece tokens), 20 chunks a document.
Queries are 6-14 word spans of other docstring sentences.

**Vectors.** ``--sample`` chunks and every query are embedded for real by
``--model`` through the embedded engine (llama.cpp, ``--threads``, batches of
32 as the knowledge service sends them): that gives the embedding rate.
Embedding 100k chunks on two cores would take hours, so the other chunks of a
size get synthetic vectors made from the real ones: the normalized sum of two
distinct sample vectors picked at random (a point between two real chunks,
in the same cone of the space; no two alike). The first ``--sample`` chunks
keep their real vectors.

**Ingest**, per size: into a fresh database, one document per transaction
(its row, its chunks, their FTS5 entries by trigger, ``index.add_vectors``),
as the knowledge service writes; into a fresh ChromaDB ``PersistentClient``
(temporary directory, ``anonymized_telemetry=False``, cosine HNSW, no
embedding function: the vectors are passed, so it never fetches a model), one
``collection.add`` per document with the same ids, texts and vectors. The
"with embedding" rate adds the measured embedding time per chunk to both.

**Queries**, per size: the same ``--queries`` query vectors on both, the
query's embedding EXCLUDED from the latency on both sides (it is the same
model call for either). BlackRoad vector-only and hybrid (BM25 + vectors,
RRF) with ``index.search`` on the database's read-only connection, as the
service runs it (memory-mapped: ``store/database.py``); ChromaDB
``collection.query`` with ``n_results=k`` and the documents, metadatas and
distances included (as BlackRoad returns the
chunks' text).
Each query runs on every side in turn, after 20 warm-up queries. Recall@k of
both vector searches is measured against exact cosine KNN (numpy) over the
same vectors.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.overhead import cpu_model
from blackroad.engines.llamacpp import LlamaCppEngine, LlamaCppOptions
from blackroad.memory import index
from blackroad.memory.chunking import DEFAULT_MAX_TOKENS, estimate_tokens
from blackroad.models.bundled import bundled_models
from blackroad.models.metadata import read_metadata
from blackroad.models.types import ModelEntry
from blackroad.store import sqlite
from blackroad.store.database import Database

CHUNKS_PER_DOCUMENT = 20
CHUNK_TOKENS = DEFAULT_MAX_TOKENS
EMBED_BATCH = 32  # as memory/knowledge.py sends them
WARMUP = 20
# What the second reader maps of the database file (the service's reader maps nothing).
NOW = "2026-01-01T00:00:00.000Z"


def sentences() -> list[str]:
    """The standard library's docstrings, in file order, cut into sentences."""
    root = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if {"test", "tests", "site-packages", "idle_test"} & set(path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                text = " ".join((ast.get_docstring(node) or "").split())
                found.extend(s for s in re.split(r"(?<=[.!?])\s+", text) if len(s) > 20)
    return found


def chunk_texts(pool: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """Runs of consecutive sentences, each as long as fits in ``CHUNK_TOKENS`` (estimated)."""
    fitting = [s for s in pool if estimate_tokens(s) <= CHUNK_TOKENS // 2]
    texts = []
    for _ in range(count):
        at = rng.randrange(len(fitting))
        parts, tokens = [fitting[at]], estimate_tokens(fitting[at])
        while tokens + (more := estimate_tokens(fitting[(at + 1) % len(fitting)])) <= CHUNK_TOKENS:
            at += 1
            parts.append(fitting[at % len(fitting)])
            tokens += more
        texts.append(" ".join(parts))
    return texts


def query_texts(pool: Sequence[str], count: int, rng: random.Random) -> list[str]:
    texts = []
    for _ in range(count):
        words = rng.choice(pool).split()
        start = rng.randrange(max(1, len(words) - 6))
        texts.append(" ".join(words[start : start + rng.randint(6, 14)]))
    return texts


def embed(model: str, threads: int, texts: list[str]) -> tuple[Any, float]:
    """Unit vectors of ``texts`` (float32 array) and the seconds embedding took."""
    path = bundled_models()[model]
    entry = ModelEntry(model, path, "bundled", 0, datetime.now(UTC), read_metadata(path))
    engine = LlamaCppEngine(entry, LlamaCppOptions(512, threads, 512, 1, 1))

    async def run() -> tuple[list[list[float]], float]:
        await engine.embed(["warm up"])
        started = time.perf_counter()
        vectors: list[list[float]] = []
        for at in range(0, len(texts), EMBED_BATCH):
            vectors.extend((await engine.embed(texts[at : at + EMBED_BATCH])).vectors)
        took = time.perf_counter() - started
        await engine.unload()
        return vectors, took

    vectors, took = asyncio.run(run())
    engine.close()
    return np.asarray(vectors, dtype=np.float32), took


def widen(real: Any, count: int, rng: np.random.Generator) -> Any:
    """``count`` unit vectors: ``real`` first, then normalized sums of two distinct real ones."""
    extra = count - len(real)
    if extra <= 0:
        return real[:count]
    first = rng.integers(0, len(real), extra)
    second = (first + rng.integers(1, len(real), extra)) % len(real)
    mixed = real[first] + real[second]
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    return np.concatenate([real, mixed])


@dataclass
class Ingested:
    seconds: float
    count: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def ingest_blackroad(database: Database, texts: list[str], vectors: Any) -> tuple[int, Ingested]:
    def base(connection: sqlite.Connection) -> int:
        kb = connection.execute(
            "INSERT INTO knowledge_bases (owner, name, embedding_model, dimensions, chunk_tokens, "
            "chunk_overlap, created_at, updated_at) VALUES ('bench', 'bench', 'bench', ?, 200, "
            "40, ?, ?) RETURNING id",
            (vectors.shape[1], NOW, NOW),
        ).fetchone()[0]
        index.create_vectors(connection, kb, vectors.shape[1])
        return int(kb)

    kb = database.write(base)
    started = time.perf_counter()
    for first in range(0, len(texts), CHUNKS_PER_DOCUMENT):
        part = texts[first : first + CHUNKS_PER_DOCUMENT]

        def document(
            connection: sqlite.Connection, first: int = first, part: list[str] = part
        ) -> None:
            text = " ".join(part)
            document_id = connection.execute(
                "INSERT INTO documents (kb_id, name, media_type, sha256, size, characters, text, "
                "metadata, created_at, updated_at) VALUES (?, ?, 'text/plain', ?, ?, ?, ?, '{}', "
                "?, ?) RETURNING id",
                (kb, f"doc-{first}.txt", "0" * 64, len(text), len(text), text, NOW, NOW),
            ).fetchone()[0]
            ids, start = [], 0
            for ordinal, chunk in enumerate(part):
                ids.append(connection.execute(
                    "INSERT INTO chunks (document_id, kb_id, ordinal, char_start, char_end, "
                    "tokens, text) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (document_id, kb, ordinal, start, start + len(chunk), len(chunk) // 4, chunk),
                ).fetchone()[0])  # fmt: skip
                start += len(chunk) + 1
            index.add_vectors(connection, kb, ids, vectors[first : first + len(part)])

        database.write(document)
    return kb, Ingested(time.perf_counter() - started, len(texts))


def ingest_chroma(directory: Path, texts: list[str], vectors: Any) -> tuple[Any, Ingested]:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(
        path=str(directory), settings=Settings(anonymized_telemetry=False)
    )
    collection = client.create_collection(
        "bench", metadata={"hnsw:space": "cosine"}, embedding_function=None
    )
    started = time.perf_counter()
    for first in range(0, len(texts), CHUNKS_PER_DOCUMENT):
        part = range(first, min(len(texts), first + CHUNKS_PER_DOCUMENT))
        collection.add(
            ids=[str(i) for i in part],
            embeddings=vectors[first : first + len(part)],
            documents=[texts[i] for i in part],
            metadatas=[{"document": f"doc-{first}.txt", "ordinal": i - first} for i in part],
        )
    return collection, Ingested(time.perf_counter() - started, len(texts))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Latency:
    name: str
    milliseconds: list[float]
    recall: float | None = None

    @property
    def p50(self) -> float:
        return statistics.median(self.milliseconds)

    @property
    def p99(self) -> float:
        return percentile(self.milliseconds, 0.99)

    def line(self) -> str:
        recall = "" if self.recall is None else f"  recall@k {self.recall:.3f}"
        return f"  {self.name:<22} p50 {self.p50:7.2f} ms  p99 {self.p99:7.2f} ms{recall}"


def measure_queries(
    sides: dict[str, Callable[[int], list[int] | None]], count: int, exact: Any, k: int
) -> list[Latency]:
    """Each query on every side in turn; recall against ``exact`` where a side returns ids."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    recalls: dict[str, list[float]] = {name: [] for name in sides}
    for number in range(-WARMUP, count):
        for name, run in sides.items():
            started = time.perf_counter()
            ids = run(max(number, 0))
            took = (time.perf_counter() - started) * 1000
            if number >= 0:
                times[name].append(took)
                if ids is not None:
                    recalls[name].append(len(set(ids) & set(exact[number].tolist())) / k)
    return [
        Latency(name, times[name], statistics.mean(recalls[name]) if recalls[name] else None)
        for name in sides
    ]


def run_size(
    args: argparse.Namespace,
    texts: list[str],
    vectors: Any,
    queries: Any,
    query_words: list[str],
    embed_rate: float,
) -> dict[str, Any]:
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, : args.k] + 1  # chunk ids start at 1
    figures: dict[str, Any] = {"chunks": len(texts)}
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as scratch:
        database = Database(Path(scratch) / "blackroad.db")
        kb, ours = ingest_blackroad(database, texts, vectors)
        with_embedding = 1 / (1 / embed_rate + 1 / ours.rate)
        print(f"  ingest BlackRoad        {ours.rate:9,.0f} chunks/s "
              f"({with_embedding:,.1f} chunks/s with embedding)", flush=True)  # fmt: skip
        figures["blackroad_ingest_chunks_per_s"] = round(ours.rate)

        def search(
            mode: index.Mode, reader: sqlite.Connection
        ) -> Callable[[int], list[int] | None]:
            def run(number: int) -> list[int] | None:
                hits = index.search(reader, query_words[number], {kb: queries[number]}, [kb],
                                    k=args.k, mode=mode)  # fmt: skip
                return [hit.chunk_id for hit in hits] if mode == "vector" else None

            return run

        sides = {
            "BlackRoad vector": search("vector", database.reader()),
            "BlackRoad hybrid": search("hybrid", database.reader()),
        }
        if not args.skip_chroma:
            collection, theirs = ingest_chroma(Path(scratch) / "chroma", texts, vectors)
            chroma_with = 1 / (1 / embed_rate + 1 / theirs.rate)
            ratio = ours.rate / theirs.rate
            print(f"  ingest ChromaDB         {theirs.rate:9,.0f} chunks/s "
                  f"({chroma_with:,.1f} chunks/s with embedding); "
                  f"ratio BlackRoad/ChromaDB {ratio:.2f}", flush=True)  # fmt: skip
            figures["chroma_ingest_chunks_per_s"] = round(theirs.rate)

            def chroma(number: int) -> list[int]:
                found = collection.query(
                    query_embeddings=queries[number : number + 1], n_results=args.k,
                    include=["documents", "metadatas", "distances"],
                )  # fmt: skip
                return [int(i) + 1 for i in found["ids"][0]]

            sides["ChromaDB (HNSW)"] = chroma
        measured = measure_queries(sides, args.queries, exact, args.k)
        database.close()
    for latency in measured:
        print(latency.line())
        key = re.sub(r"\W+", "_", latency.name.lower().replace("(hnsw)", "")).strip("_")
        figures[f"{key}_p50_ms"] = round(latency.p50, 2)
        figures[f"{key}_p99_ms"] = round(latency.p99, 2)
        if latency.recall is not None:
            figures[f"{key}_recall"] = round(latency.recall, 4)
    vector, hybrid, *peer = measured
    if peer:
        print(f"  ratio ChromaDB/BlackRoad p50: vector {peer[0].p50 / vector.p50:.2f}, "
              f"hybrid {peer[0].p50 / hybrid.p50:.2f}; above 1: BlackRoad faster")  # fmt: skip
    target = "met" if hybrid.p50 <= 20 else "MISSED"
    print(f"  target hybrid p50 <= 20 ms: {target}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="chunks, comma-separated")
    parser.add_argument("--sample", type=int, default=2000, help="chunks embedded for real")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--oversample", type=int, default=index.OVERSAMPLE,
                        help="Hamming candidates per result (index.OVERSAMPLE)")  # fmt: skip
    parser.add_argument("--model", default="all-minilm:l6-v2")
    parser.add_argument("--skip-chroma", action="store_true")
    args = parser.parse_args()
    index.OVERSAMPLE = args.oversample
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(1)
    pool = sentences()
    texts = chunk_texts(pool, max(sizes), rng)
    query_words = query_texts(pool, args.queries, rng)
    print(f"{cpu_model()}; {len(pool):,} docstring sentences of Python {sys.version.split()[0]}")
    real, took = embed(args.model, args.threads, texts[: args.sample])
    embed_rate = args.sample / took
    queries, _ = embed(args.model, args.threads, query_words)
    print(f"embedding {args.model}: {embed_rate:,.1f} chunks/s over {args.sample} chunks "
          f"of up to {CHUNK_TOKENS} tokens ({args.threads} threads); {real.shape[1]} "
          f"dimensions; oversample {index.OVERSAMPLE}")  # fmt: skip
    vectors = widen(real, max(sizes), np.random.default_rng(2))
    results = []
    for size in sizes:
        print(f"{size:,} chunks ({min(size, args.sample):,} with real vectors, the rest "
              f"sums of two), {args.queries} queries, k={args.k}, query embedding excluded:",
              flush=True)  # fmt: skip
        results.append(
            run_size(args, texts[:size], vectors[:size], queries, query_words, embed_rate)
        )
    print(json.dumps({"embed_chunks_per_s": round(embed_rate, 1), "sizes": results}))


if __name__ == "__main__":
    main()
