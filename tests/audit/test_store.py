"""The audit log's store on both databases: one gapless tree, its reads, and its one key.

Each test runs on a SQLite file and on a real PostgreSQL (``database_location``);
two processes append at once to one PostgreSQL as two control planes would,
and what they made verifies as one tree with the offline verifier.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from blackroad.audit.checkpoint import key_id, load_or_create_key, public_key_bytes
from blackroad.audit.log import AuditLog, Entry, KeyMismatch
from blackroad.audit.merkle import leaf_hash, verify_inclusion
from blackroad.audit.verify import verify_bundle
from blackroad.store.database import Database
from blackroad.store.schema import RequestRecord
from tests.support.postgres import Postgres
from tests.support.server import running_server

ORIGIN = "blackroad/test/audit"
# Appends by one process of the concurrency test (a child started with this file's path).
APPENDS = 150


def open_log(location: Path | str, home: Path, key_file: Path | None = None) -> AuditLog:
    return AuditLog(Database(location), home, ORIGIN, keep_texts=True, key_file=key_file)


@pytest.fixture
def log(database_location: Path | str, tmp_path: Path) -> AuditLog:
    return open_log(database_location, tmp_path)


def chained(texts: list[str]) -> None:
    """Records ``texts`` are the dense chain of one tree: indices from 0, each naming the last."""
    prev = ""
    for index, text in enumerate(texts):
        record = json.loads(text)
        assert (record["index"], record["prev"]) == (index, prev)
        prev = leaf_hash(text.encode()).hex()


def test_records_proofs_erasure_and_export_verify(log: AuditLog, tmp_path: Path) -> None:
    for number in range(5):
        kind, text = "inference" if number % 2 else "change", f"text {number}"
        digest = hashlib.sha256(text.encode()).hexdigest()
        log.record(Entry(kind, {"n": number}, input_sha256=digest, input=text))
    assert log.size() == 5
    assert [index for index, _, _ in log.records(kind="inference")] == [3, 1]
    chained([text for _, text, _ in reversed(log.records())])
    proof = log.inclusion(2, 5)
    assert verify_inclusion(log.leaves(5)[2], 2, 5, proof, log.root(5))
    assert log.root(3) != log.root(5)
    erased = log.erase(1, "admin", "a subject's request")
    assert erased.index == 5 and log.records(before=2, limit=1)[0][2] is False
    first = log.checkpoint()
    assert log.checkpoint() == first and log.signed_size() == 6
    records, notes = log.export(tmp_path / "bundle.zip")
    assert (records, notes) == (6, 1)
    assert verify_bundle(tmp_path / "bundle.zip", log.verifier).ok


def test_appended_in_the_request_records_transaction(log: AuditLog) -> None:
    def record(status: int) -> RequestRecord:
        return RequestRecord(
            created_at=datetime.now(UTC), method="POST", path="/v1/chat/completions",
            status=status, duration_ms=1.0,
        )  # fmt: skip

    log.database.record_request(record(200), lambda tx: log.append_to(tx, Entry("inference", {})))

    def refused(tx: Connection) -> None:
        log.append_to(tx, Entry("inference", {}))
        raise RuntimeError("the request's transaction fails after its audit")

    with pytest.raises(RuntimeError):
        log.database.record_request(record(500), refused)
    with log.database.session() as session:
        statuses = session.scalars(select(RequestRecord.status)).all()
    assert (statuses, log.size()) == ([200], 1)  # neither the record nor its audit of the second
    assert log.record(Entry("change", {})).index == 1


def test_two_processes_appending_at_once_make_one_gapless_tree(
    postgres: Postgres, tmp_path: Path
) -> None:
    url = postgres.new_database()
    open_log(url, tmp_path).record(Entry("start", {}))  # the schema and the state exist
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [
        subprocess.Popen(
            [sys.executable, __file__, url, str(tmp_path), name],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    for writer in writers:  # both connected: then they start together
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    outputs = [writer.communicate(timeout=300)[0] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], outputs
    log = open_log(url, tmp_path)
    assert log.size() == 1 + 2 * APPENDS
    texts = [text for _, text, _ in reversed(log.records(limit=log.size()))]
    chained(texts)
    writers_seen = [json.loads(text).get("writer") for text in texts[1:]]
    assert sorted(writers_seen) == ["a"] * APPENDS + ["b"] * APPENDS
    log.export(tmp_path / "both.zip")
    verdict = verify_bundle(tmp_path / "both.zip", log.verifier)
    assert verdict.ok, verdict.summary()


def test_a_key_other_than_the_logs_is_refused_with_both_key_ids(
    database_location: Path | str, tmp_path: Path
) -> None:
    first = open_log(database_location, tmp_path, tmp_path / "first.key")
    first.check_key()  # nothing signed yet: any key will do
    first.record(Entry("change", {}))
    first.checkpoint()
    first.check_key()
    load_or_create_key(tmp_path / "other.key")  # a replica's key of its own
    other = open_log(database_location, tmp_path, tmp_path / "other.key")
    ids = [key_id(ORIGIN, public_key_bytes(log.key)).hex() for log in (first, other)]
    with pytest.raises(KeyMismatch, match=rf"{ORIGIN}\+{ids[1]}.*{ORIGIN}\+{ids[0]}"):
        other.check_key()
    with pytest.raises(KeyMismatch, match=rf"no audit signing key .*{ORIGIN}\+{ids[0]}"):
        open_log(database_location, tmp_path, tmp_path / "missing.key").check_key()
    open_log(database_location, tmp_path, tmp_path / "first.key").check_key()


def test_a_server_with_another_key_refuses_to_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_server(home, audit_checkpoint_seconds="3600"):
        pass  # its last records are signed on the way out, with audit.key
    other = tmp_path / "other.key"
    load_or_create_key(other)
    refusal = "is not the key this audit log"
    with (
        pytest.raises(RuntimeError, match=refusal) as refused,
        running_server(home, audit_key_file=str(other)),
    ):
        pass
    assert str(other) in str(refused.value)
    with running_server(home, audit_key_file=str(home / "audit.key")):
        pass  # the log's own key, named by the setting


def _append_as(url: str, home: str, writer: str) -> None:
    """A second control plane's appends, each in its own transaction, as a request's are."""
    log = open_log(url, Path(home))
    log.size()  # connected
    print("ready", flush=True)
    sys.stdin.readline()
    for number in range(APPENDS):
        log.record(Entry("inference", {"writer": writer, "n": number}))


if __name__ == "__main__":
    _append_as(*sys.argv[1:4])
