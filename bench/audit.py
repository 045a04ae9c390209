"""The audit log: how fast records are appended, and how fast an inspector's bundle verifies.

    .venv/bin/python -m bench.audit [--records 5000] [--repeats 3] [--verify-records 1000000]
        [--postgres URL]

1. **Append throughput.** In a temporary ``BLACKROAD_HOME``, records like an
   inference request's are appended with ``AuditLog.record`` (each in its own
   transaction, with the durability the server uses: SQLite WAL,
   ``synchronous=NORMAL``, committed before it returns), against a plain
   SQLite insert of the same record texts, one transaction each, in the same
   mode and on the same disk. The two alternate in blocks of ``--records``,
   ``--repeats`` times (ABAB...); medians of records/s and the ratio are
   printed (target: at least 5,000 records/s appended).
2. **Verification.** A bundle of ``--verify-records`` records (checkpoints
   every 1,000 and at the end) is written straight from records made as the
   log makes them, then verified with ``verify_bundle``, as
   ``blackroad audit verify`` does; the time is printed (target: 1M records
   in under a minute).
3. **Two writers on PostgreSQL** (with ``--postgres URL`` of an empty
   database): two processes, as two control planes would, append
   ``--records`` records each at once with ``AuditLog.record`` (each append
   under the log's advisory lock, committed with PostgreSQL's default
   ``synchronous_commit=on``: durable); records/s from the first start to the
   last end, ``--repeats`` times, median printed (target: at least 2,000
   records/s), and the tree checked gapless.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackroad.audit.bundle import BundleLine, write_bundle
from blackroad.audit.checkpoint import (
    load_or_create_key,
    public_key_bytes,
    sign_checkpoint,
    verifier_key,
)
from blackroad.audit.log import AuditLog, Entry, canonical
from blackroad.audit.merkle import Frontier, leaf_hash
from blackroad.audit.verify import verify_bundle
from blackroad.store.database import Database

FACTS = {
    "method": "POST", "path": "/v1/chat/completions", "model": "smollm2:135m",
    "client": "127.0.0.1:50000", "user": "alice", "key_prefix": "br-AbCdEfGhIj",
    "node": "pi-3", "status": 200, "prompt_tokens": 42, "completion_tokens": 128,
    "ttft_ms": 81.5, "duration_ms": 1204.2, "error": None,
}  # fmt: skip
DIGEST = "ab" * 32
ORIGIN = "blackroad/bench/audit"


def entry() -> Entry:
    return Entry("inference", FACTS, input_sha256=DIGEST, output_sha256=DIGEST)


def appended_per_second(log: AuditLog, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        log.record(entry())
    return count / (time.perf_counter() - started)


def plain_per_second(path: Path, count: int) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, record TEXT)")
    text = canonical({**FACTS, "kind": "inference", "input_sha256": DIGEST})
    started = time.perf_counter()
    for _ in range(count):
        connection.execute("BEGIN")
        connection.execute("INSERT INTO rows (record) VALUES (?)", (text,))
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return count / elapsed


def _writer(url: str, home: str, count: int, start: Barrier, times: Any) -> None:
    """One control plane's appends: ``count`` records once both writers are ready."""
    log = AuditLog(Database(url), Path(home), ORIGIN)
    log.size()  # connected
    start.wait()
    began = time.time()
    for _ in range(count):
        log.record(entry())
    times.put((began, time.time()))


def two_writers_per_second(log: AuditLog, url: str, count: int) -> float:
    """Records/s appended by two processes at once into ``url``; the tree checked gapless."""
    context = multiprocessing.get_context("spawn")
    start, times = context.Barrier(2), context.Queue()
    size = log.size()
    writers = [
        context.Process(target=_writer, args=(url, str(log.home), count, start, times))
        for _ in range(2)
    ]
    for writer in writers:
        writer.start()
    spans: list[tuple[float, float]] = [times.get(timeout=600) for _ in writers]
    for writer in writers:
        writer.join()
    texts = [text for _, text, _ in reversed(log.records(limit=2 * count))]
    indices = [json.loads(text)["index"] for text in texts]
    assert indices == list(range(size, size + 2 * count)), "a gap or a fork"
    return 2 * count / (max(end for _, end in spans) - min(began for began, _ in spans))


def plain_postgres_per_second(url: str, count: int) -> float:
    """Durable commits/s of one writer's plain inserts into ``url``: the disk's serial ceiling."""
    with Database(url).engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS bench_rows (record TEXT)")
    text = canonical({**FACTS, "kind": "inference", "input_sha256": DIGEST})
    engine = Database(url).engine
    started = time.perf_counter()
    for _ in range(count):
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO bench_rows VALUES (%s)", (text,))
    return count / (time.perf_counter() - started)


def chained(count: int) -> Iterator[str]:
    """``count`` record texts, chained as the log chains them."""
    prev = ""
    for index in range(count):
        record = {**FACTS, "index": index, "prev": prev, "time": "2026-12-01T00:00:00.000000Z",
                  "kind": "inference", "input_sha256": DIGEST, "output_sha256": DIGEST}  # fmt: skip
        text = canonical(record)
        prev = leaf_hash(text.encode()).hex()
        yield text


def signed(count: int, every: int, key: Ed25519PrivateKey) -> list[str]:
    """Checkpoints of the chained records, every ``every`` and at the end."""
    notes, frontier = [], Frontier()
    for index, text in enumerate(chained(count)):
        frontier.append(leaf_hash(text.encode()))
        if (index + 1) % every == 0 or index + 1 == count:
            notes.append(sign_checkpoint(ORIGIN, index + 1, frontier.root(), key, ORIGIN))
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="appends per block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="URL of an empty PostgreSQL database (part 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as scratch:
        home = Path(scratch)
        log = AuditLog(Database(home / "blackroad.db"), home, ORIGIN)
        log.record(entry())  # the key and the state exist before timing starts
        audit, plain = [], []
        for repeat in range(args.repeats):
            audit.append(appended_per_second(log, args.records))
            plain.append(plain_per_second(home / "plain.db", args.records))
            print(f"run {repeat + 1}: audit {audit[-1]:,.0f} records/s, "
                  f"plain insert {plain[-1]:,.0f} rows/s", flush=True)  # fmt: skip
        a, p = statistics.median(audit), statistics.median(plain)
        met = "met" if a >= 5000 else "MISSED"
        print(f"append: audit {a:,.0f} records/s, plain SQLite insert {p:,.0f} rows/s, "
              f"ratio {a / p:.3f}; target >= 5,000 records/s {met}")  # fmt: skip

        started = time.perf_counter()
        key = load_or_create_key(home / "bundle.key")
        notes = signed(args.verify_records, 1000, key)
        lines = (BundleLine(i, t, None) for i, t in enumerate(chained(args.verify_records)))
        bundle = home / "bundle.zip"
        verifier = verifier_key(ORIGIN, public_key_bytes(key))
        write_bundle(bundle, lines, notes, verifier)
        made = time.perf_counter() - started
        started = time.perf_counter()
        verdict = verify_bundle(bundle, verifier)
        took = time.perf_counter() - started
        size = bundle.stat().st_size / 1e6
        within = "met" if took < 60 and verdict.ok else "MISSED"
        print(f"bundle: {args.verify_records:,} records, {len(notes)} checkpoints, "
              f"{size:.0f} MB, made in {made:.1f} s")  # fmt: skip
        print(
            f"verify: {verdict.summary()} in {took:.1f} s "
            f"({args.verify_records / took:,.0f} records/s); target < 60 s {within}"
        )
        figures = {"append_records_per_s": round(a), "plain_rows_per_s": round(p),
                   "verify_seconds": round(took, 1)}  # fmt: skip
        if args.postgres:
            shared = AuditLog(Database(args.postgres), home, ORIGIN)
            shared.record(entry())  # the key and the state exist before timing starts
            rates = []
            for repeat in range(args.repeats):
                rates.append(two_writers_per_second(shared, args.postgres, args.records))
                print(f"run {repeat + 1}: two writers on PostgreSQL {rates[-1]:,.0f} records/s")
            both = statistics.median(rates)
            met = "met" if both >= 2000 else "MISSED"
            ceiling = plain_postgres_per_second(args.postgres, args.records)
            print(f"two writers: {both:,.0f} records/s, gapless; target >= 2,000 {met}")
            print(f"(one writer's plain durable inserts there: {ceiling:,.0f} commits/s)")
            figures["postgres_two_writers_records_per_s"] = round(both)
            figures["postgres_plain_commits_per_s"] = round(ceiling)
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
