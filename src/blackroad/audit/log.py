"""The audit log of an installation: records appended as Merkle tree leaves, checkpoints signed.

A record is canonical JSON (sorted keys, no spaces) holding its index, the
hash of the record before it, the time, its kind and its facts; texts (a
request's body, a reply) are committed to by their sha256 in the record and
kept beside it only where the policy says so, so erasing a text never
changes a leaf. Appending happens inside the caller's database transaction
(the request record's own, for a request): the record is durable exactly
when what it records is. The tree's state (size, compact range, last leaf)
lives in the database and is read under SQLite's write lock, so any process
may append and indices stay dense.

Checkpoints (C2SP tlog-checkpoint, signed with the installation's Ed25519
key, kept 0600 in ``$BLACKROAD_HOME/audit.key``) are made when asked: every
``checkpoint_records`` records or ``checkpoint_seconds`` seconds by the
server, on its shutdown, and by an export.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blackroad.audit.bundle import BundleLine, write_bundle
from blackroad.audit.checkpoint import (
    load_or_create_key,
    public_key_bytes,
    sign_checkpoint,
    verifier_key,
)
from blackroad.audit.merkle import Frontier, consistency_proof, inclusion_proof, leaf_hash
from blackroad.audit.merkle import root as merkle_root
from blackroad.config import Settings
from blackroad.errors import InvalidRequest, NotFound
from blackroad.store import sqlite
from blackroad.store.database import Database

KEY_FILE = "audit.key"


def canonical(value: Any) -> str:
    """The one byte-exact JSON form of a record (its leaf hash is computed over it), and of
    a request body as the log commits to it (``audit/capture.py``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def now_iso() -> str:
    return _iso(datetime.now(UTC))


@dataclass(frozen=True)
class Entry:
    """What is to be recorded: a kind, its facts, and digests of the texts it concerns.

    The texts themselves (``input``, ``output``) are kept beside the record
    where the policy says so; their digests are part of the leaf.
    """

    kind: str
    facts: Mapping[str, Any]
    input_sha256: str | None = None
    output_sha256: str | None = None
    input: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class Appended:
    index: int
    leaf: bytes


def append(connection: sqlite.Connection, entry: Entry, keep_texts: bool) -> Appended:
    """Append ``entry`` within the transaction open on ``connection``."""
    # A write first: it takes SQLite's write lock before the state is read,
    # so two writers (two processes, say) never read the same size.
    connection.execute(
        "INSERT OR IGNORE INTO audit_state (id, size, frontier, last_leaf) VALUES (1, 0, ?, NULL)",
        (json.dumps(Frontier().to_json()),),
    )
    size, frontier_json, last = connection.execute(
        "SELECT size, frontier, last_leaf FROM audit_state WHERE id = 1"
    ).fetchone()
    time = now_iso()
    record: dict[str, Any] = {
        **entry.facts,
        "index": size,
        "prev": "" if last is None else bytes(last).hex(),
        "time": time,
        "kind": entry.kind,
    }
    if entry.input_sha256 is not None:
        record["input_sha256"] = entry.input_sha256
    if entry.output_sha256 is not None:
        record["output_sha256"] = entry.output_sha256
    text = canonical(record)
    leaf = leaf_hash(text.encode("utf-8"))
    frontier = Frontier.from_json(json.loads(frontier_json))
    frontier.append(leaf)
    connection.execute(
        "INSERT INTO audit_records (idx, leaf_hash, record, time, input, output)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (size, leaf, text, time, *((entry.input, entry.output) if keep_texts else (None, None))),
    )
    connection.execute(
        "UPDATE audit_state SET size = ?, frontier = ?, last_leaf = ? WHERE id = 1",
        (size + 1, json.dumps(frontier.to_json()), leaf),
    )
    return Appended(size, leaf)


@dataclass
class AuditLog:
    database: Database
    home: Path
    origin: str
    keep_texts: bool = False
    retention_days: int = 183  # texts are kept at least this long
    _key: Any = field(default=None, init=False, repr=False)

    @classmethod
    def of(cls, settings: Settings, database: Database) -> AuditLog:
        """The audit log of the installation ``settings`` describe, in ``database``."""
        return cls(
            database,
            settings.home,
            settings.audit_origin,
            settings.audit_texts == "full",
            settings.audit_retention_days,
        )

    @property
    def key(self) -> Any:
        if self._key is None:
            self._key = load_or_create_key(self.home / KEY_FILE)
        return self._key

    @property
    def verifier(self) -> str:
        """The public key as a note verifier: what an inspector is given out of band."""
        return verifier_key(self.origin, public_key_bytes(self.key))

    def append_to(self, connection: sqlite.Connection, entry: Entry) -> Appended:
        return append(connection, entry, self.keep_texts)

    def record(self, entry: Entry) -> Appended:
        """Append ``entry`` in a transaction of its own (what has no request record)."""
        return self.database.write(lambda connection: self.append_to(connection, entry))

    # -- the tree ------------------------------------------------------------

    def size(self) -> int:
        row = self.database.reader().execute("SELECT size FROM audit_state WHERE id = 1")
        found = row.fetchone()
        return 0 if found is None else int(found[0])

    def leaves(self, size: int) -> list[bytes]:
        rows = self.database.reader().execute(
            "SELECT leaf_hash FROM audit_records WHERE idx < ? ORDER BY idx", (size,)
        )
        return [bytes(leaf) for (leaf,) in rows]

    def root(self, size: int) -> bytes:
        """The root of the tree's first ``size`` leaves.

        The whole tree's is its stored compact range's (what a checkpoint
        usually signs): reading every leaf is needed only for an older size.
        """
        found = (
            self.database.reader()
            .execute("SELECT size, frontier FROM audit_state WHERE id = 1")
            .fetchone()
        )
        if found is not None and found[0] == size:
            return Frontier.from_json(json.loads(found[1])).root()
        return merkle_root(self.leaves(size))

    def checkpoint(self, size: int | None = None) -> str:
        """A signed checkpoint of the tree of ``size`` records (default: all), made if new."""
        size = self.size() if size is None else size
        found = (
            self.database.reader()
            .execute("SELECT note FROM audit_checkpoints WHERE size = ?", (size,))
            .fetchone()
        )
        if found is not None:
            return str(found[0])
        note = sign_checkpoint(self.origin, size, self.root(size), self.key, self.origin)
        self.database.write(
            lambda connection: connection.execute(
                "INSERT OR IGNORE INTO audit_checkpoints (size, note, time) VALUES (?, ?, ?)",
                (size, note, now_iso()),
            )
        )
        return note

    def signed_size(self) -> int:
        """The size of the latest checkpoint (0 before the first)."""
        found = self.database.reader().execute("SELECT max(size) FROM audit_checkpoints")
        size = found.fetchone()[0]
        return 0 if size is None else int(size)

    def checkpoints(self) -> list[tuple[int, str]]:
        rows = self.database.reader().execute(
            "SELECT size, note FROM audit_checkpoints ORDER BY size"
        )
        return [(int(size), str(note)) for size, note in rows]

    def records(
        self, before: int | None = None, limit: int = 50, kind: str | None = None
    ) -> list[tuple[int, str, bool]]:
        """Records newest first, below index ``before`` (default: all), optionally of one kind.

        Each is ``(index, the record's exact text, whether texts are kept beside it)``.
        """
        where = ["idx < ?"]
        values: list[int | str] = [self.size() if before is None else before]
        if kind is not None:
            where.append("json_extract(record, '$.kind') = ?")
            values.append(kind)
        rows = self.database.reader().execute(
            "SELECT idx, record, input IS NOT NULL OR output IS NOT NULL FROM audit_records"  # noqa: S608 (constants)
            f" WHERE {' AND '.join(where)} ORDER BY idx DESC LIMIT ?",
            (*values, limit),
        )
        return [(int(index), str(record), bool(kept)) for index, record, kept in rows]

    def inclusion(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        if not 0 <= index < size:
            raise InvalidRequest(f"index must be from 0 to {size - 1}", "index")
        return inclusion_proof(self.leaves(size), index)

    def consistency(self, old: int, new: int) -> list[bytes]:
        self._check_size(new)
        if not 0 < old <= new:
            raise InvalidRequest(f"from must be from 1 to {new}", "from")
        return consistency_proof(self.leaves(new), old)

    def _check_size(self, size: int) -> None:
        if not 0 < size <= self.size():
            raise InvalidRequest(f"size must be from 1 to {self.size()}", "size")

    # -- erasure and export -------------------------------------------------

    def erase(self, index: int, actor: str, reason: str) -> Appended:
        """Erase a record's texts (their hashes stay in its leaf); the erasure is a record."""

        def work(connection: sqlite.Connection) -> Appended:
            found = connection.execute(
                "SELECT input IS NOT NULL OR output IS NOT NULL FROM audit_records WHERE idx = ?",
                (index,),
            ).fetchone()
            if found is None:
                raise NotFound(f"no audit record {index}")
            connection.execute(
                "UPDATE audit_records SET input = NULL, output = NULL WHERE idx = ?", (index,)
            )
            facts = {"erases": index, "actor": actor, "reason": reason, "had_text": bool(found[0])}
            return self.append_to(connection, Entry("erasure", facts))

        return self.database.write(work)

    def lines(self, end: int, texts_from: str) -> Iterator[BundleLine]:
        """Records ``0..end-1``; the kept texts only of those at ``texts_from`` or later."""
        rows = self.database.reader().execute(
            "SELECT idx, record, input, output, time >= ? FROM audit_records"
            " WHERE idx < ? ORDER BY idx",
            (texts_from, end),
        )
        for index, record, text_in, text_out, wanted in rows:
            content = None
            if wanted and (text_in is not None or text_out is not None):
                content = {"input": text_in, "output": text_out}
            yield BundleLine(int(index), str(record), content)

    def export(
        self, out: Path, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[int, int]:
        """Write the records up to ``until`` to a bundle at ``out``: (records, checkpoints).

        The tree is only verifiable from its first leaf, so records before
        ``since`` are in the bundle too, without their texts. A checkpoint
        of exactly the records exported is signed for it.
        """
        size = self.size()
        if until is not None:
            found = self.database.reader().execute(
                "SELECT count(*) FROM audit_records WHERE time <= ?", (_iso(until),)
            )
            size = int(found.fetchone()[0])
        self.checkpoint(size)
        notes = [note for signed, note in self.checkpoints() if signed <= size]
        texts_from = "" if since is None else _iso(since)
        write_bundle(out, self.lines(size, texts_from), notes, self.verifier)
        return size, len(notes)

    def prune_texts(self, older_than_days: int, actor: str) -> Appended:
        """Delete kept texts older than the retention; their digests stay, and this is recorded."""
        if older_than_days < self.retention_days:
            raise InvalidRequest(
                f"texts are kept at least {self.retention_days} days (the retention setting)",
                "days",
            )
        cutoff = _iso(datetime.now(UTC) - timedelta(days=older_than_days))

        def work(connection: sqlite.Connection) -> Appended:
            pruned = connection.execute(
                "UPDATE audit_records SET input = NULL, output = NULL"
                " WHERE time < ? AND (input IS NOT NULL OR output IS NOT NULL)",
                (cutoff,),
            ).rowcount
            facts = {"before": cutoff, "texts": pruned, "actor": actor}
            return self.append_to(connection, Entry("prune", facts))

        return self.database.write(work)


def _iso(moment: datetime) -> str:
    """As records carry their time, so that times compare as text."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def checkpoints(log: AuditLog, every_records: int, every_seconds: float) -> None:
    """Sign a checkpoint whenever ``every_records`` came, or ``every_seconds`` passed with some."""
    signed, since = await asyncio.to_thread(log.signed_size), time.monotonic()
    while True:
        await asyncio.sleep(min(1.0, every_seconds))
        size = await asyncio.to_thread(log.size)
        due = size - signed >= every_records or time.monotonic() - since >= every_seconds
        if size > signed and due:
            await asyncio.to_thread(log.checkpoint)
            signed, since = size, time.monotonic()
