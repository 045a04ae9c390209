"""The offline verifier of an inspector's bundle (``audit/bundle.py`` owns its format).

``verify_bundle``, and ``python -m blackroad.audit.verify verify BUNDLE --key KEY``.
The verifier streams the records once, keeping 32 bytes per record (its leaf
hash) and whatever is irregular. Where the hash chain breaks it names the
edited record and rebuilds the tree with the hash that the next record's
``prev`` commits to, so the signed roots confirm the diagnosis (or refute it,
and say so). The consistency proofs the log wrote tell a forked checkpoint (two
histories signed) from rewritten records: a checkpoint the records contradict
but that extends the one before it means the records changed, not the log.
Standard library and `cryptography` only: no server, no network.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import itertools
import json
import re
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from blackroad.audit.bundle import CHECKPOINTS, CONSISTENCY, KEY, RECORDS, SEPARATOR
from blackroad.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    VerifierKey,
    open_checkpoint,
    parse_body,
    parse_note,
    parse_verifier_key,
)
from blackroad.audit.merkle import EMPTY_ROOT, Frontier, leaf_hash, verify_consistency

_MAX_LINE = 64 << 20  # one record line, texts included
_MAX_MEMBER = 1 << 30  # checkpoints.txt, consistency.jsonl: read whole
_MAX_SHOWN = 100  # problems listed in a verdict; the rest are counted
_MAX_TRIALS = 8  # ambiguous chain breaks whose other reading is tried against the roots
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LINE_FIELDS = {"index", "record", "content"}
# Built once: json.loads and json.dumps build these on every call, a tenth of the scan.
_DECODE = json.JSONDecoder().decode
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

_FROM_BUNDLE = (
    f"\nwarning: checked against {KEY} from the bundle itself, which proves only that the "
    "bundle is self-consistent; get the log's key from its operator"
)


@dataclass
class Verdict:
    ok: bool
    records: int
    checkpoints: int
    problems: list[str] = field(default_factory=list)
    key_from_bundle: bool = False

    def summary(self) -> str:
        if not self.ok:
            return "\n".join(
                [f"NOT verified: {len(self.problems)} problem(s)"]
                + [f"- {problem}" for problem in self.problems]
            )
        text = f"verified: {self.records} records, {self.checkpoints} checkpoints"
        return text + (_FROM_BUNDLE if self.key_from_bundle else "")


def _span(first: int, last: int, one: str, many: str) -> str:
    """'record 17 is missing' or 'records 17..19 are missing'."""
    return f"record {first} {one}" if first == last else f"records {first}..{last} {many}"


class _Damaged(Exception):
    """A bundle the verifier cannot read at all."""


@dataclass
class _Scan:
    """What one pass over records.jsonl keeps: 32 bytes per line, and what is irregular."""

    lines: int = 0
    hashes: bytearray = field(default_factory=bytearray)  # the leaf hash of line p at 32*p
    unreadable: set[int] = field(default_factory=set)  # lines with no record text
    # Lines whose prev is not the hash of the line before: (index read, prev or None).
    breaks: dict[int, tuple[int, bytes | None]] = field(default_factory=dict)
    segments: list[list[int]] = field(default_factory=list)  # [line, index, count] runs
    kept: bytearray = field(default_factory=bytearray)  # 1 where a line holds texts
    malformed: dict[int, list[str]] = field(default_factory=dict)  # reasons, by index
    content: list[tuple[int, str]] = field(default_factory=list)  # (index, problem)
    erasures: list[tuple[int, int]] = field(default_factory=list)  # (erasure, erased)

    def hash_at(self, line: int) -> bytes | None:
        return None if line in self.unreadable else bytes(self.hashes[32 * line : 32 * line + 32])

    def prev_at(self, line: int) -> bytes | None:
        if line in self.breaks:
            return self.breaks[line][1]
        return self.hash_at(line - 1) if line else b""


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Any failure to read the zip is damage: zipfile and its codecs raise a dozen kinds
    (a bad header, an unknown compression or version, a password, a corrupt stream)."""
    try:
        yield
    except _Damaged:
        raise
    except Exception as error:
        raise _Damaged(f"{what} cannot be read: {error}") from error


def _member(bundle: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes, read whole; KeyError if there is none."""
    # zipfile stops at the size the header declares, so this bounds the memory used.
    if bundle.getinfo(name).file_size > _MAX_MEMBER:
        raise _Damaged(f"{name} is larger than {_MAX_MEMBER >> 20} MiB")
    with _reading(name):
        return bundle.read(name)


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """A member's lines, read in large chunks (ZipExtFile.readline is slow per call)."""
    rest = b""
    while True:
        with _reading(RECORDS):
            chunk = stream.read(1 << 22)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if len(rest) > _MAX_LINE:
            raise _Damaged(f"{RECORDS} holds a line longer than {_MAX_LINE} bytes")
        yield from lines
    if rest:
        yield rest


def _index(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _is_utc(time: Any) -> bool:
    try:
        return isinstance(time, str) and datetime.fromisoformat(time).utcoffset() == timedelta(0)
    except ValueError:
        return False


def _check_record(record: dict[str, Any], why: list[str]) -> bytes | None:
    """Check a record's fields into `why`; return its prev (None if it is not a hash)."""
    if not _is_utc(record.get("time")):
        why.append("its time is not an ISO-8601 UTC time")
    if not isinstance(record.get("kind"), str) or not record["kind"]:
        why.append("it has no kind")
    for name in ("input_sha256", "output_sha256"):
        if name in record and not _HEX64.fullmatch(str(record[name])):
            why.append(f"its {name} is not a hex SHA-256")
    prev = record.get("prev")
    if prev == "":
        return b""
    if isinstance(prev, str) and _HEX64.fullmatch(prev):
        return bytes.fromhex(prev)
    why.append("its prev is not a hex SHA-256")
    return None


def _check_content(index: int, record: Any, content: Any, scan: _Scan) -> bool:
    """Check kept texts against the record's digests; return whether any text is kept."""
    if content is None:
        return False
    where = f"content of record {index}"
    if not isinstance(content, dict) or not content.keys() <= {"input", "output"}:
        scan.content.append((index, f"{where} is not input and output texts"))
        return False
    texts = {part: text for part, text in content.items() if text is not None}
    for part, text in texts.items() if isinstance(record, dict) else ():
        digest = record.get(f"{part}_sha256")
        if not isinstance(text, str) or digest is None:
            scan.content.append((index, f"{where}: its {part} is not text with a digest"))
        elif hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest() != digest:
            scan.content.append((index, f"{where} does not match its digest ({part}_sha256)"))
    return bool(texts)


def _scan(stream: IO[bytes]) -> _Scan:
    scan = _Scan()
    last: bytes | None = b""  # the hash the next line's prev should be
    expected = 0
    for p, raw in enumerate(_lines(stream)):
        why: list[str] = []
        text = record = content = None
        given = own = None  # the index on the line, and in the record text
        prev: bytes | None = None
        # RecursionError: a line of nested brackets, which must not crash the verifier.
        with contextlib.suppress(ValueError, RecursionError):
            line = _DECODE(raw.decode("utf-8", "replace"))
            if isinstance(line, dict):
                given, text, content = (
                    _index(line.get("index")),
                    line.get("record"),
                    line.get("content"),
                )
                # Strict: a renamed field would pass as a record whose texts were not kept.
                if line.keys() != _LINE_FIELDS or given is None:
                    why.append(f"line {p + 1} is not index, record and content")
        if not isinstance(text, str):
            why.append(f"line {p + 1} holds no record text")
            text = None
        else:
            with contextlib.suppress(ValueError, RecursionError):
                record = _DECODE(text)
            if not isinstance(record, dict):
                why.append("its text is not a JSON object")
                record = None
            else:
                own = _index(record.get("index"))
                prev = _check_record(record, why)
                if _CANONICAL(record) != text:
                    why.append("its text is not canonical JSON")
        if given is not None and own is not None and given != own:
            why.append(f"its line says index {given} but its text says {own}")
        # An edit may hit either index: the one that continues the sequence is the record's.
        if expected in (given, own):
            index = expected
        else:
            index = own if own is not None else given if given is not None else expected
        digest = None if text is None else leaf_hash(text.encode("utf-8", "surrogatepass"))
        if digest is None:
            scan.unreadable.add(p)
        scan.hashes += digest or bytes(32)
        if prev is None or prev != last:
            scan.breaks[p] = (index, prev)
        last = digest
        segment = scan.segments[-1] if scan.segments else [0, -2, 0]
        if index == segment[1] + segment[2]:
            segment[2] += 1
        else:
            scan.segments.append([p, index, 1])
        expected = index + 1
        if why:
            scan.malformed.setdefault(index, []).extend(why)
        scan.kept.append(_check_content(index, record, content, scan))
        if record is not None and record.get("kind") == "erasure":
            erased = _index(record.get("erases"))
            if erased is None or erased >= index:
                message = f"erasure record {index} erases record {record.get('erases')!r}"
                scan.content.append((index, f"{message}, which does not exist before it"))
            else:
                scan.erasures.append((index, erased))
        scan.lines = p + 1
    return scan


# -- verifying ------------------------------------------------------------------


@dataclass
class _Reading:
    """One explanation of a run of broken links: the records edited, the leaves restored."""

    edited: list[int]
    repairs: dict[int, bytes]
    other: _Reading | None = None


class _Verification:
    def __init__(self, bundle: zipfile.ZipFile, key: VerifierKey) -> None:
        self.bundle, self.key = bundle, key
        self.problems: list[tuple[tuple[int, int], str]] = []
        self.notes = 0
        self.checkpoints: list[tuple[int, Checkpoint]] = []  # (number, checkpoint) by size
        self.proofs: dict[tuple[int, int], list[bytes]] = {}
        self.scan = _Scan()
        self.placements: list[tuple[int, int, int]] = []  # (first index, first line, count)
        self.end = 0  # one past the highest index present
        # Missing records as [start, stop) runs, in order: a line may claim any index,
        # so a run's length is not bounded by the bundle's size and is never expanded.
        self.gaps: list[tuple[int, int]] = []
        self.broken: set[int] = set()  # indices i whose link (i-1 -> i) fails
        self.recovered: dict[int, bytes] = {}  # missing records' hashes, from their successors
        self.edited: dict[int, list[str]] = {}

    def problem(self, group: int, where: int, message: str) -> None:
        self.problems.append(((group, where), message))

    def run(self) -> Verdict:
        self.read_checkpoints()
        self.read_proofs()
        with _reading(RECORDS):
            member = self.bundle.open(RECORDS)
        with member:
            self.scan = _scan(member)
        self.place()
        roots = self.choose(self.chain())
        self.report_records()
        self.report_checkpoints(roots)
        problems = [message for _, message in sorted(self.problems, key=lambda p: p[0])]
        if len(problems) > _MAX_SHOWN:
            problems[_MAX_SHOWN:] = [f"... and {len(problems) - _MAX_SHOWN} more problems"]
        return Verdict(not problems, self.scan.lines, self.notes, problems)

    def read_checkpoints(self) -> None:
        text = _member(self.bundle, CHECKPOINTS).decode("utf-8", "replace")
        notes = re.split(f"(?m)^{SEPARATOR}\n", text) if text else []
        self.notes = len(notes)
        found = []
        for number, note in enumerate(notes, 1):
            try:
                found.append((number, open_checkpoint(note, self.key)))
            except CheckpointError as error:
                where = f"checkpoint {number}"
                if str(error).startswith("signature does not verify"):
                    # The size it claims, read without trusting it, to say which one failed.
                    with contextlib.suppress(CheckpointError):
                        where += f" (size {parse_body(parse_note(note).text).size})"
                self.problem(1, number, f"{where}: {error}")
        if len(origins := {checkpoint.origin for _, checkpoint in found}) > 1:
            self.problem(1, 0, f"the checkpoints are of different logs: {sorted(origins)}")
        self.checkpoints = sorted(found, key=lambda item: (item[1].size, item[0]))

    def read_proofs(self) -> None:
        with contextlib.suppress(KeyError):
            for line in _member(self.bundle, CONSISTENCY).splitlines():
                try:
                    entry = json.loads(line)
                    sizes = (int(entry["from"]), int(entry["to"]))
                    self.proofs[sizes] = [bytes.fromhex(h) for h in entry["proof"]]
                # OverflowError: int(Infinity); RecursionError: a line of nested brackets.
                except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
                    self.problem(0, 0, f"{CONSISTENCY} holds a malformed line")

    # -- where each record is -------------------------------------------------

    def place(self) -> None:
        """Lay the lines out by index: gaps are missing records, overlaps repeated ones."""
        cursor = 0
        for line, index, count in sorted(self.scan.segments, key=lambda s: (s[1], s[0])):
            if index > cursor:
                self.gaps.append((cursor, index))
                self.problem(2, cursor, _span(cursor, index - 1, "is missing", "are missing"))
            elif index < cursor:
                seen = min(cursor, index + count) - index
                self.problem(
                    2, index, _span(index, index + seen - 1, "appears twice", "appear twice")
                )
                line, index, count = line + seen, index + seen, count - seen
                if count <= 0:
                    continue
            self.placements.append((index, line, count))
            cursor = index + count
        self.end = cursor
        for (_, line, _), (index, later, _) in itertools.pairwise(self.placements):
            if later < line:
                self.problem(2, index - 1, f"records {index - 1} and {index} are out of order")

    def missing(self, index: int) -> bool:
        at = bisect.bisect_right(self.gaps, (index, sys.maxsize)) - 1
        return at >= 0 and index < self.gaps[at][1]

    def line_of(self, index: int) -> int | None:
        at = bisect.bisect_right(self.placements, (index, sys.maxsize, 0)) - 1
        if at >= 0:
            first, line, count = self.placements[at]
            if index < first + count:
                return line + index - first
        return None

    def prev_of(self, index: int) -> bytes | None:
        line = self.line_of(index)
        return None if line is None else self.scan.prev_at(line)

    # -- the hash chain -------------------------------------------------------

    def chain(self) -> list[_Reading]:
        """Find the broken links (i-1 -> i) by index, and read each run of them as edits."""
        for line, (index, _) in self.scan.breaks.items():
            if self.line_of(index) == line and self.line_of(index - 1) == line - 1:
                self.broken.add(index)
        # Links between placements (a reordering, a repeat) were not next to each other.
        for index, line, _ in self.placements:
            if self.missing(index - 1):
                continue
            before = self.line_of(index - 1)
            expected = b"" if index == 0 else None if before is None else self.scan.hash_at(before)
            if self.scan.prev_at(line) is None or self.scan.prev_at(line) != expected:
                self.broken.add(index)
        # A missing record's hash is its successor's prev: the tree can still be rebuilt
        # (only a run's last record has a successor that is present).
        self.recovered = {stop - 1: prev for _, stop in self.gaps if (prev := self.prev_of(stop))}
        readings = []
        for first in sorted(i for i in self.broken if i - 1 not in self.broken):
            last = first
            while last + 1 in self.broken:
                last += 1
            readings.append(self.read_run(first, last))
        return readings

    def read_run(self, first: int, last: int) -> _Reading:
        """Links first..last broken: records first..last-1 were edited (the first one's prev
        among them), or record first-1 was too; the roots decide between the two."""
        # A prev of b"" (a record claiming to be the first) is no hash to restore.
        fixes = {i - 1: prev for i in range(first + 1, last + 1) if (prev := self.prev_of(i))}
        head = self.prev_of(first)
        wider = None
        if first > 0 and head and not self.missing(first - 1):
            wider = _Reading(list(range(first - 1, last)), {first - 1: head, **fixes})
        if first < last:
            return _Reading(list(range(first, last)), fixes, wider)
        if wider is None:
            return _Reading([first], {})
        # One broken link: record first-1 changed, unless nothing follows record first,
        # which then may have had its prev edited.
        alone = None if self.line_of(first + 1) is not None else _Reading([first], {})
        wider.other = alone
        return wider

    def leaves(self, repairs: dict[int, bytes]) -> Iterator[bytes | None]:
        """The leaf hashes by index, repaired; None where a record is gone for good."""
        hashes, unreadable = memoryview(self.scan.hashes), self.scan.unreadable
        index = 0
        for first, line, count in self.placements:
            yield from (self.recovered.get(gap) for gap in range(index, first))
            for i, p in zip(range(first, first + count), range(line, line + count), strict=True):
                if i in repairs:
                    yield repairs[i]
                elif p in unreadable:
                    yield None  # its hash comes only from a repair
                else:
                    yield hashes[32 * p : 32 * p + 32].tobytes()
            index = first + count

    def roots(self, repairs: dict[int, bytes]) -> dict[int, bytes | None]:
        """The root, at each checkpoint's size, of the tree of the (repaired) records."""
        sizes = sorted({checkpoint.size for _, checkpoint in self.checkpoints})
        found: dict[int, bytes | None] = dict.fromkeys(sizes)
        wanted = iter(sizes)
        target = next(wanted, None)
        if target == 0:
            found[0], target = EMPTY_ROOT, next(wanted, None)
        frontier = Frontier()
        for leaf in self.leaves(repairs):
            if target is None or leaf is None:
                break
            frontier.append(leaf)
            if frontier.size == target:
                found[target], target = frontier.root(), next(wanted, None)
        return found

    def choose(self, readings: list[_Reading]) -> dict[int, bytes | None]:
        """Take, per ambiguous run, the reading under which more signed roots match."""

        def score(chosen: list[_Reading]) -> tuple[int, dict[int, bytes | None]]:
            roots = self.roots({i: h for reading in chosen for i, h in reading.repairs.items()})
            return sum(roots[c.size] == c.root for _, c in self.checkpoints), roots

        best, roots = score(readings)
        ambiguous = [n for n, reading in enumerate(readings) if reading.other is not None]
        for n in ambiguous[:_MAX_TRIALS]:
            other = readings[n].other
            if best == len(self.checkpoints) or other is None:
                break
            trial = [*readings[:n], other, *readings[n + 1 :]]
            matched, trial_roots = score(trial)
            if matched > best:
                best, roots, readings = matched, trial_roots, trial
        for index in sorted({i for reading in readings for i in reading.edited}):
            facts = self.edited.setdefault(index, [])
            if index in self.broken:
                facts.append(
                    "its prev is not empty, as the first record's is"
                    if index == 0
                    else f"its prev is not the hash of record {index - 1}"
                )
            if index + 1 in self.broken:
                facts.append(f"record {index + 1}'s prev is not its hash")
        return roots

    # -- reports ----------------------------------------------------------------

    def report_records(self) -> None:
        scan = self.scan
        for index in sorted(self.edited.keys() | scan.malformed.keys()):
            facts = scan.malformed.get(index, []) + self.edited.get(index, [])
            verb = "was edited" if index in self.edited else "is malformed"
            self.problem(2, index, f"record {index} {verb}: {'; '.join(facts)}")
        for index, message in scan.content:
            self.problem(2, index, message)
        for index, erased in scan.erasures:
            line = self.line_of(erased)
            if line is not None and scan.kept[line]:
                message = f"content of record {erased} is still present though erasure record"
                self.problem(2, erased, f"{message} {index} erased it")

    def report_checkpoints(self, roots: dict[int, bytes | None]) -> None:
        ordered = self.checkpoints
        signed = max((c.size for _, c in ordered), default=0)
        if self.end < signed:
            number = next(n for n, c in ordered if c.size == signed)
            them = "it" if self.end == signed - 1 else "them"
            cut = _span(self.end, signed - 1, "is missing", "are missing")
            cut += f" (the log was cut short): checkpoint {number} (size {signed}) covers {them}"
            self.problem(3, self.end, cut)
        if self.end > signed:
            uncovered = _span(signed, self.end - 1, "is not", "are not")
            self.problem(3, signed, f"{uncovered} covered by any signed checkpoint")
        status = {n: None if roots[c.size] is None else roots[c.size] == c.root for n, c in ordered}
        explained = set()
        for (a, old), (b, new) in itertools.pairwise(ordered):
            if why := self.fork(a, old, b, new, status):
                self.problem(4, b, f"checkpoints {min(a, b)} and {max(a, b)} fork: {why}")
                explained.add(a if status[b] else b)
        matched, previous = 0, None
        for number, checkpoint in ordered:
            if status[number]:
                matched = checkpoint.size
            # Once a root is wrong every later one is: report where the records stop matching.
            elif status[number] is False and previous is not False and number not in explained:
                self.problem(4, number, self.mismatch(number, checkpoint, matched))
            if number not in explained:
                previous = status[number]

    def fork(self, a: int, old: Checkpoint, b: int, new: Checkpoint, ok: dict[int, Any]) -> str:
        """Why consecutive checkpoints a and b cannot be one history ('' when they can be)."""
        old_ok, new_ok = ok[a], ok[b]
        if old.size == new.size:
            return "" if old.root == new.root else f"both sign size {old.size}, with other roots"
        if old_ok and new_ok:
            return ""
        if new_ok:
            # The records are checkpoint b's tree, so theirs is its only tree of size old.size.
            return (
                f"checkpoint {b} matches the records, and its tree at size {old.size} "
                f"is not checkpoint {a}'s"
            )
        proof = self.proofs.get((old.size, new.size))
        if proof is None or verify_consistency(old.size, new.size, old.root, new.root, proof):
            return ""
        side = " (the records match the earlier one)" if old_ok else ""
        return (
            f"the consistency proof from size {old.size} to {new.size} does not verify: "
            f"they sign two different histories{side}"
        )

    def mismatch(self, number: int, checkpoint: Checkpoint, matched: int) -> str:
        first, last = matched, checkpoint.size - 1
        where = f"records {first}..{last} do not match checkpoint {number} (size {checkpoint.size})"
        if any(first <= i <= last for i in self.edited) or any(
            start <= last and first < stop for start, stop in self.gaps
        ):
            return f"{where} even with the located edits undone: more of them were changed"
        tail = f" (or only record {last}, the last, was edited)" if last == self.end - 1 else ""
        return f"{where}, though their hash chain is intact: they were rewritten{tail}"


def verify_bundle(path: Path, verifier: str | None = None) -> Verdict:
    """Verify a bundle offline against `verifier` (None: the bundle's own key.pub, flagged)."""
    from_bundle = verifier is None
    try:
        with _reading("the zip file"):
            bundle = zipfile.ZipFile(path)
        with bundle:
            needed = {RECORDS, CHECKPOINTS} | ({KEY} if verifier is None else set())
            if absent := sorted(needed - set(bundle.namelist())):
                return Verdict(False, 0, 0, [f"the bundle has no {', '.join(absent)}"])
            if verifier is None:
                verifier = _member(bundle, KEY).decode("utf-8", "replace")
            try:
                key = parse_verifier_key(verifier)
            except ValueError as error:
                source = KEY if from_bundle else "the key given"
                return Verdict(False, 0, 0, [f"{source}: {error}"], from_bundle)
            verdict = _Verification(bundle, key).run()
    except _Damaged as error:
        return Verdict(False, 0, 0, [f"the bundle is damaged or not a bundle: {error}"])
    verdict.key_from_bundle = from_bundle
    return verdict


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m blackroad.audit.verify", description="Verify an audit bundle offline."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="verify a bundle against the log's key")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--key", help="the log's verifier key, or a file holding it")
    arguments = parser.parse_args(argv)
    key = arguments.key
    if key is not None and Path(key).is_file():
        key = Path(key).read_text(encoding="utf-8").strip()
    verdict = verify_bundle(arguments.bundle, key)
    print(verdict.summary())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
