"""The inspector's bundle: one zip file holding the audit log, and its format.

This module owns the bundle's format: `write_bundle`, and the members, each
documented once, in `README_TEXT`, which every bundle carries. Records are
numbered by index, from 0; checkpoints from 1, in file order. Its verifier
is `audit/verify.py`. Standard library and `cryptography` only: no server,
no network.
"""

from __future__ import annotations

import itertools
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from blackroad.audit.checkpoint import (
    parse_body,
    parse_note,
    parse_verifier_key,
    write_atomically,
)
from blackroad.audit.merkle import Tree, leaf_hash

RECORDS = "records.jsonl"
CHECKPOINTS = "checkpoints.txt"
CONSISTENCY = "consistency.jsonl"
KEY = "key.pub"
README = "README.txt"
SEPARATOR = "-----"

README_TEXT = f"""\
BlackRoad audit bundle: a BlackRoad installation's audit log, its signed
checkpoints and the proofs linking them. Check it offline with

    blackroad audit verify BUNDLE --key KEY
    (or: python -m blackroad.audit.bundle verify BUNDLE --key KEY)

KEY is the log's verifier key (or a file holding it): get it from the operator
through another channel. {KEY} is a convenience; checked against its own key,
a bundle proves only that it is self-consistent. The verifier checks each
checkpoint's signature, that the records are all there and in order, each
holding the hash of the one before, that their Merkle tree (RFC 9162) has each
signed root, that the checkpoints are one history, that every record is
covered, that kept texts match their digests and that erased texts are gone.
Problems name their record (numbered from 0) or checkpoint (from 1).

{RECORDS}: per line, in index order, {{"index": i, "record": "<text>",
  "content": {{"input": ..., "output": ...}} or null}}. The text is canonical
  JSON (sorted keys, no spaces) with "index", "prev" (hex leaf hash of record
  i-1, "" for record 0), "time" (ISO-8601 UTC), "kind", and optionally
  "input_sha256"/"output_sha256" (SHA-256 of the texts in "content"; null:
  not kept, or erased by an "erasure" record whose "erases" is i).
  Leaf i is SHA-256(0x00 || text).
{CHECKPOINTS}: C2SP signed notes (Ed25519) of C2SP tlog-checkpoints (origin,
  size, base64 root), by size, separated by lines "{SEPARATOR}".
{CONSISTENCY}: per two consecutive checkpoints, {{"from": size, "to": size,
  "proof": ["<hex>", ...]}}, the RFC 9162 consistency proof.
{KEY}: <name>+<hex key ID>+<base64(0x01 || Ed25519 public key)>.
"""


@dataclass(frozen=True)
class BundleLine:
    """One record as exported: its index, its exact text, its kept texts (or None)."""

    index: int
    record: str
    content: dict[str, Any] | None


# -- writing -------------------------------------------------------------------


def _json_line(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _write_records(member: IO[bytes], lines: Iterable[BundleLine], tree: Tree) -> None:
    chunk: list[bytes] = []
    for line in lines:
        tree.append(leaf_hash(line.record.encode("utf-8")))
        chunk.append(
            _json_line({"index": line.index, "record": line.record, "content": line.content})
        )
        # Each write runs the deflater: batch lines into writes of a few hundred kB.
        if len(chunk) >= 1000:
            member.write(b"".join(chunk))
            chunk.clear()
    member.write(b"".join(chunk))


def _consistency_line(tree: Tree, old: int, new: int) -> bytes:
    proof = tree.consistency_proof(old, new)
    return _json_line({"from": old, "to": new, "proof": [h.hex() for h in proof]})


def write_bundle(
    path: Path, lines: Iterable[BundleLine], checkpoints: Sequence[str], verifier: str
) -> None:
    """Write a bundle atomically: a temporary file beside `path`, fsynced, then renamed.

    `lines` are streamed (the log may be large); the checkpoints must be in order
    of size; the consistency proof between each two is computed from the records.
    """
    parse_verifier_key(verifier)
    sizes = []
    for note in checkpoints:
        if SEPARATOR in note.split("\n"):
            raise ValueError(f"a checkpoint holds the separator line {SEPARATOR!r}")
        sizes.append(parse_body(parse_note(note).text).size)

    def write(file: IO[bytes]) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            tree = Tree()
            with bundle.open(RECORDS, "w", force_zip64=True) as member:
                _write_records(member, lines, tree)
            pairs = [pair for pair in itertools.pairwise(sizes) if pair[0] <= pair[1] <= tree.size]
            bundle.writestr(CONSISTENCY, b"".join(_consistency_line(tree, *p) for p in pairs))
            bundle.writestr(CHECKPOINTS, f"{SEPARATOR}\n".join(checkpoints))
            bundle.writestr(KEY, verifier.strip() + "\n")
            bundle.writestr(README, README_TEXT)

    # The bundle holds what the log kept of prompts and replies: 0600, like the log's files.
    write_atomically(path, write)


# -- reading the records ----------------------------------------------------------
