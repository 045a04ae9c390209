"""The audit log of an installation: records appended as Merkle tree leaves, checkpoints signed.

A record is canonical JSON (sorted keys, no spaces) holding its index, the
hash of the record before it, the time, its kind and its facts; texts (a
request's body, a reply) are committed to by their sha256 in the record and
kept beside it only where the policy says so, so erasing a text never
changes a leaf. Appending happens inside the caller's database transaction
(the request record's own, for a request): the record is durable exactly
when what it records is. The tree's state (size, compact range, last leaf)
lives in the database and is read under a lock (``audit/records.py``), so any
process, any control plane on one PostgreSQL, may append and indices stay dense.

Checkpoints (C2SP tlog-checkpoint, signed with the installation's Ed25519
key, kept 0600 in ``BLACKROAD_AUDIT_KEY_FILE``, by default
``$BLACKROAD_HOME/audit.key``; every control plane of one database holds the
same key, and a server with another refuses to start) are made when asked: every
``checkpoint_records`` records or ``checkpoint_seconds`` seconds by the
server, on its shutdown, and by an export.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select

from blackroad.audit.bundle import BundleLine, write_bundle
from blackroad.audit.checkpoint import (
    key_id,
    load_or_create_key,
    parse_note,
    public_key_bytes,
    sign_checkpoint,
    verifier_key,
)
from blackroad.audit.merkle import Frontier, consistency_proof, inclusion_proof, leaf_hash
from blackroad.audit.merkle import root as merkle_root
from blackroad.audit.records import Appender, Transaction, checkpoint_insert, record_kind
from blackroad.config import Settings
from blackroad.errors import InvalidRequest, NotFound
from blackroad.store.database import Database
from blackroad.store.schema import audit_checkpoints, audit_records, audit_state


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


class KeyMismatch(RuntimeError):
    """The signing key is not the one the log's checkpoints were signed with."""


@dataclass(frozen=True)
class Appended:
    index: int
    leaf: bytes


def _row(entry: Entry, size: int, last: bytes | None, keep_texts: bool) -> dict[str, Any]:
    """The row of ``entry`` as leaf ``size`` after ``last``: its record's text, hash and texts."""
    time = now_iso()
    record: dict[str, Any] = {
        **entry.facts,
        "index": size,
        "prev": "" if last is None else last.hex(),
        "time": time,
        "kind": entry.kind,
    }
    if entry.input_sha256 is not None:
        record["input_sha256"] = entry.input_sha256
    if entry.output_sha256 is not None:
        record["output_sha256"] = entry.output_sha256
    text = canonical(record)
    texts = (entry.input, entry.output) if keep_texts else (None, None)
    return {
        "idx": size,
        "leaf_hash": leaf_hash(text.encode("utf-8")),
        "record": text,
        "time": time,
        "input": texts[0],
        "output": texts[1],
    }


@dataclass
class AuditLog:
    database: Database
    home: Path
    origin: str
    keep_texts: bool = False
    retention_days: int = 183  # texts are kept at least this long
    key_file: Path | None = None  # the signing key; None: audit.key under home
    _key: Any = field(default=None, init=False, repr=False)
    _appender: Appender | None = field(default=None, init=False, repr=False)

    @classmethod
    def of(cls, settings: Settings, database: Database) -> AuditLog:
        """The audit log of the installation ``settings`` describe, in ``database``."""
        return cls(
            database,
            settings.home,
            settings.audit_origin,
            settings.audit_texts == "full",
            settings.audit_retention_days,
            settings.audit_key_path,
        )

    @property
    def key(self) -> Any:
        if self._key is None:
            self._key = load_or_create_key(self.key_path)
        return self._key

    @property
    def key_path(self) -> Path:
        return self.home / "audit.key" if self.key_file is None else self.key_file

    @property
    def verifier(self) -> str:
        """The public key as a note verifier: what an inspector is given out of band."""
        return verifier_key(self.origin, public_key_bytes(self.key))

    def check_key(self) -> None:
        """Refuse a signing key other than the one the log's latest checkpoint was signed with.

        Control planes sharing one database must share one key: a checkpoint
        signed by another would not verify against the key an inspector has.
        """
        with self.database.engine.connect() as connection:
            note = connection.scalar(
                select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.size.desc()).limit(1)
            )
        if note is None:
            return
        signatures = parse_note(str(note)).signatures
        theirs = ", ".join(sorted({f"{s.name}+{s.key_id.hex()}" for s in signatures}))
        if not self.key_path.exists():  # not made here: it would be another key
            raise KeyMismatch(
                f"there is no audit signing key at {self.key_path}, and this audit log's"
                f" checkpoints were signed with {theirs}; set BLACKROAD_AUDIT_KEY_FILE to"
                " that key's file"
            )
        ours = public_key_bytes(self.key)
        if any(s.key_id == key_id(s.name, ours) for s in signatures):
            return
        raise KeyMismatch(
            f"the audit signing key {self.key_path} ({self.origin}+"
            f"{key_id(self.origin, ours).hex()}) is not the key this audit log's checkpoints"
            f" were signed with ({theirs}); set BLACKROAD_AUDIT_KEY_FILE to that key's file"
        )

    def append_to(self, connection: Transaction, entry: Entry) -> Appended:
        """Append ``entry`` within the transaction open on ``connection``."""
        if self._appender is None:
            self._appender = Appender(self.database.engine.dialect)
        dbapi, size, frontier, last = self._appender.state(connection)
        row = _row(entry, size, last, self.keep_texts)
        frontier.append(row["leaf_hash"])
        self._appender.add(dbapi, row, frontier, row["leaf_hash"])
        return Appended(size, row["leaf_hash"])

    def record(self, entry: Entry) -> Appended:
        """Append ``entry`` in a transaction of its own (what has no request record)."""
        with self.database.engine.begin() as connection:
            return self.append_to(connection, entry)

    # -- the tree ------------------------------------------------------------

    def _state(self) -> tuple[int, Any] | None:
        state = audit_state.c
        with self.database.engine.connect() as connection:
            found = connection.execute(
                select(state.size, state.frontier).where(state.id == 1)
            ).first()
        return None if found is None else (int(found[0]), found[1])

    def size(self) -> int:
        found = self._state()
        return 0 if found is None else found[0]

    def leaves(self, size: int) -> list[bytes]:
        r = audit_records.c
        with self.database.engine.connect() as connection:
            rows = connection.execute(select(r.leaf_hash).where(r.idx < size).order_by(r.idx))
            return [bytes(leaf) for (leaf,) in rows]

    def root(self, size: int) -> bytes:
        """The root of the tree's first ``size`` leaves.

        The whole tree's is its stored compact range's (what a checkpoint
        usually signs): reading every leaf is needed only for an older size.
        """
        found = self._state()
        if found is not None and found[0] == size:
            return Frontier.from_json(found[1]).root()
        return merkle_root(self.leaves(size))

    def checkpoint(self, size: int | None = None) -> str:
        """A signed checkpoint of the tree of ``size`` records (default: all), made if new."""
        size = self.size() if size is None else size
        c = audit_checkpoints.c
        with self.database.engine.connect() as connection:
            found = connection.scalar(select(c.note).where(c.size == size))
        if found is not None:
            return str(found)
        note = sign_checkpoint(self.origin, size, self.root(size), self.key, self.origin)
        with self.database.engine.begin() as connection:
            connection.execute(
                checkpoint_insert(self.database.dialect).values(
                    size=size, note=note, time=now_iso()
                )
            )
        return note

    def signed_size(self) -> int:
        """The size of the latest checkpoint (0 before the first)."""
        with self.database.engine.connect() as connection:
            size = connection.scalar(select(func.max(audit_checkpoints.c.size)))
        return 0 if size is None else int(size)

    def checkpoints(self) -> list[tuple[int, str]]:
        c = audit_checkpoints.c
        with self.database.engine.connect() as connection:
            rows = connection.execute(select(c.size, c.note).order_by(c.size))
            return [(int(size), str(note)) for size, note in rows]

    def records(
        self, before: int | None = None, limit: int = 50, kind: str | None = None
    ) -> list[tuple[int, str, bool]]:
        """Records newest first, below index ``before`` (default: all), optionally of one kind.

        Each is ``(index, the record's exact text, whether texts are kept beside it)``.
        """
        r = audit_records.c
        query = (
            select(r.idx, r.record, _kept())
            .where(r.idx < (self.size() if before is None else before))
            .order_by(r.idx.desc())
            .limit(limit)
        )
        if kind is not None:
            query = query.where(record_kind(self.database.dialect) == kind)
        with self.database.engine.connect() as connection:
            rows = connection.execute(query)
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
        r = audit_records.c
        with self.database.engine.begin() as connection:
            found = connection.execute(select(_kept()).where(r.idx == index)).first()
            if found is None:
                raise NotFound(f"no audit record {index}")
            connection.execute(
                audit_records.update().where(r.idx == index).values(input=None, output=None)
            )
            facts = {"erases": index, "actor": actor, "reason": reason, "had_text": bool(found[0])}
            return self.append_to(connection, Entry("erasure", facts))

    def lines(self, end: int, texts_from: str) -> Iterator[BundleLine]:
        """Records ``0..end-1``; the kept texts only of those at ``texts_from`` or later."""
        r = audit_records.c
        query = (
            select(r.idx, r.record, r.input, r.output, (r.time >= texts_from).label("wanted"))
            .where(r.idx < end)
            .order_by(r.idx)
            .execution_options(yield_per=1000)  # a server-side cursor on PostgreSQL
        )
        with self.database.engine.connect() as connection:
            for index, record, text_in, text_out, wanted in connection.execute(query):
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
            with self.database.engine.connect() as connection:
                found = connection.scalar(
                    select(func.count()).where(audit_records.c.time <= _iso(until))
                )
            size = int(found or 0)
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
        r = audit_records.c
        with self.database.engine.begin() as connection:
            pruned = connection.execute(
                audit_records.update()
                .where(r.time < cutoff, _kept())
                .values(input=None, output=None)
            ).rowcount
            facts = {"before": cutoff, "texts": pruned, "actor": actor}
            return self.append_to(connection, Entry("prune", facts))


def _kept() -> ColumnElement[bool]:
    """Whether a record's texts are kept beside it."""
    return or_(audit_records.c.input.is_not(None), audit_records.c.output.is_not(None))


def _iso(moment: datetime) -> str:
    """As records carry their time, so that times compare as text."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def checkpoints(
    log: AuditLog, every_records: int, every_seconds: float, signs: Callable[[], bool]
) -> None:
    """Sign a checkpoint whenever ``every_records`` came, or ``every_seconds`` passed with some,
    while ``signs()`` (this replica leads the signing)."""
    signed, since = await asyncio.to_thread(log.signed_size), time.monotonic()
    while True:
        await asyncio.sleep(min(1.0, every_seconds))
        if not signs():
            continue
        size = await asyncio.to_thread(log.size)
        due = size - signed >= every_records or time.monotonic() - since >= every_seconds
        if size > signed and due:
            await asyncio.to_thread(log.checkpoint)
            signed, since = size, time.monotonic()
