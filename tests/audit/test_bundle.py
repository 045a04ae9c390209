"""The inspector's bundle: an honest one verifies, and each tampering is found and located."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blackroad.audit.bundle import (
    CHECKPOINTS,
    CONSISTENCY,
    KEY,
    README,
    RECORDS,
    SEPARATOR,
    BundleLine,
    write_bundle,
)
from blackroad.audit.checkpoint import public_key_bytes, sign_checkpoint, verifier_key
from blackroad.audit.merkle import Frontier, Tree, leaf_hash
from blackroad.audit.verify import Verdict, main, verify_bundle

ROOT = Path(__file__).resolve().parents[2]
NAME = "audit.example/log"
TIME = "2026-03-01T12:00:00.000000Z"


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Log:
    """A log made the way the audit log makes one: chained records, checkpoints every k."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    lines: list[BundleLine] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verifier(self) -> str:
        return verifier_key(NAME, public_key_bytes(self.key))

    def record(
        self, kind: str, facts: dict[str, object], texts: tuple[str, str] | None, keep: bool = True
    ) -> None:
        index = len(self.lines)
        body: dict[str, object] = {
            **facts,
            "index": index,
            "prev": self.leaves[-1].hex() if self.leaves else "",
            "time": TIME,
            "kind": kind,
        }
        if texts is not None:
            body["input_sha256"], body["output_sha256"] = sha(texts[0]), sha(texts[1])
        text = canonical(body)
        content = {"input": texts[0], "output": texts[1]} if texts and keep else None
        self.lines.append(BundleLine(index, text, content))
        self.leaves.append(leaf_hash(text.encode("utf-8")))

    def sign(
        self,
        size: int | None = None,
        leaves: list[bytes] | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> str:
        chosen = self.leaves if leaves is None else leaves
        size = len(chosen) if size is None else size
        frontier = Frontier()
        frontier.extend(chosen[:size])
        return sign_checkpoint(NAME, size, frontier.root(), key or self.key, NAME)


def make_log(n: int = 65, every: int = 10, erasures: dict[int, int] | None = None) -> Log:
    """n records, checkpoints every `every` and one at the end; record 5 is erased at 40."""
    erasures = {40: 5} if erasures is None else erasures
    erased = set(erasures.values())
    log = Log()
    for i in range(n):
        if i in erasures:
            log.record("erasure", {"erases": erasures[i], "actor": "admin"}, None)
        elif i % 7 == 6:
            log.record("admin", {"action": "key created", "user": "ëlise"}, None)
        else:
            texts = (f"question {i}: ünïcode ✓", f"answer {i}")
            log.record(
                "inference",
                {"model": "smollm2:135m", "tokens": i},
                texts,
                keep=i not in erased and i % 5 != 4,
            )
        if (i + 1) % every == 0 and i + 1 < n:
            log.notes.append(log.sign())
    log.notes.append(log.sign())
    return log


@pytest.fixture(scope="module")
def log() -> Log:
    return make_log()


@pytest.fixture
def bundle(log: Log, tmp_path: Path) -> Path:
    path = tmp_path / "audit.zip"
    write_bundle(path, log.lines, log.notes, log.verifier)
    return path


def rewrite(path: Path, member: str, change: Callable[[bytes], bytes]) -> Path:
    """A copy of the bundle with one member changed (the zip itself stays well-formed)."""
    out = path.with_name("tampered.zip")
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            data = old.read(name)
            new.writestr(name, change(data) if name == member else data)
    return out


def edit_lines(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> Path:
    return rewrite(path, RECORDS, lambda data: b"\n".join(change(data.splitlines())) + b"\n")


def replace_line(index: int, new: bytes) -> Callable[[list[bytes]], list[bytes]]:
    return lambda lines: [*lines[:index], new, *lines[index + 1 :]]


def line_of(log: Log, index: int, record: str | None = None, content: object = "same") -> bytes:
    original = log.lines[index]
    value = {
        "index": original.index,
        "record": original.record if record is None else record,
        "content": original.content if content == "same" else content,
    }
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def edit_checkpoints(path: Path, change: Callable[[list[str]], list[str]]) -> Path:
    def apply(data: bytes) -> bytes:
        notes = data.decode("utf-8").split(f"{SEPARATOR}\n")
        return f"{SEPARATOR}\n".join(change(notes)).encode("utf-8")

    return rewrite(path, CHECKPOINTS, apply)


def problems(path: Path, log: Log) -> list[str]:
    verdict = verify_bundle(path, log.verifier)
    assert not verdict.ok
    assert verdict.summary().startswith("NOT verified")
    return verdict.problems


# -- the honest bundle ------------------------------------------------------


def test_an_honest_bundle_verifies(bundle: Path, log: Log) -> None:
    verdict = verify_bundle(bundle, log.verifier)
    assert verdict.problems == []
    assert verdict.ok
    assert verdict.summary() == "verified: 65 records, 7 checkpoints"
    with zipfile.ZipFile(bundle) as z:
        assert sorted(z.namelist()) == sorted([RECORDS, CHECKPOINTS, CONSISTENCY, KEY, README])
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
        assert z.read(KEY).decode().strip() == log.verifier
        assert "blackroad audit verify BUNDLE --key KEY" in z.read(README).decode()
        assert (
            "out of band" in z.read(README).decode() or "another channel" in z.read(README).decode()
        )
        first = json.loads(z.read(RECORDS).splitlines()[0])
        assert first == {"index": 0, "record": log.lines[0].record, "content": log.lines[0].content}
    assert list(bundle.parent.iterdir()) == [bundle]  # no temporary file left behind


def test_the_key_from_the_bundle_itself_is_flagged(bundle: Path) -> None:
    verdict = verify_bundle(bundle)
    assert verdict.ok
    assert verdict.key_from_bundle
    assert verdict.summary().startswith("verified: 65 records, 7 checkpoints\n")
    assert "key.pub from the bundle itself" in verdict.summary()


def test_the_consistency_proofs_are_the_trees(bundle: Path, log: Log) -> None:
    with zipfile.ZipFile(bundle) as z:
        proofs = [json.loads(line) for line in z.read(CONSISTENCY).splitlines()]
    tree = Tree(log.leaves)
    sizes = [10, 20, 30, 40, 50, 60, 65]
    assert [(p["from"], p["to"]) for p in proofs] == list(itertools.pairwise(sizes))
    for proof in proofs:
        assert proof["proof"] == [
            h.hex() for h in tree.consistency_proof(proof["from"], proof["to"])
        ]


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    log = Log()
    path = tmp_path / "empty.zip"
    write_bundle(path, [], [log.sign()], log.verifier)
    assert verify_bundle(path, log.verifier).summary() == "verified: 0 records, 1 checkpoints"


# -- records ------------------------------------------------------------------


def test_an_edited_record_is_located(bundle: Path, log: Log) -> None:
    edited = log.lines[17].record.replace(TIME, TIME.replace("12:00", "12:01"))
    tampered = edit_lines(bundle, replace_line(17, line_of(log, 17, edited)))
    found = problems(tampered, log)
    # The tree rebuilt with the hash record 18 commits to matches every signed root.
    assert found == ["record 17 was edited: record 18's prev is not its hash"]


def test_an_edited_prev_is_located(bundle: Path, log: Log) -> None:
    record = json.loads(log.lines[17].record)
    record["prev"] = "0" * 64
    tampered = edit_lines(bundle, replace_line(17, line_of(log, 17, canonical(record))))
    found = problems(tampered, log)
    assert len(found) == 1
    assert found[0].startswith("record 17 was edited: its prev is not the hash of record 16")


@pytest.mark.parametrize("replacement", [b"x", b"7"])
def test_every_single_byte_edit_of_a_line_is_located(
    bundle: Path, log: Log, replacement: bytes
) -> None:
    with zipfile.ZipFile(bundle) as z:
        lines = z.read(RECORDS).splitlines()
    target = lines[17]
    for at in range(len(target)):
        if target[at : at + 1] == replacement:
            continue
        changed = target[:at] + replacement + target[at + 1 :]
        tampered = edit_lines(bundle, replace_line(17, changed))
        verdict = verify_bundle(tampered, log.verifier)
        assert not verdict.ok, (at, changed)
        assert all(re.search(r"\brecords? 17\b", p) for p in verdict.problems), (
            at,
            verdict.problems,
        )


@pytest.mark.parametrize("garbage", [b"", b"not json", b"[" * 100_000, b'{"index": 17}'])
def test_an_unreadable_line_is_located(bundle: Path, log: Log, garbage: bytes) -> None:
    found = problems(edit_lines(bundle, replace_line(17, garbage)), log)
    assert len(found) == 1
    assert found[0].startswith("record 17 was edited: line 18 ")


def test_the_last_record_edited_is_named(bundle: Path, log: Log) -> None:
    edited = log.lines[64].record.replace('"tokens":64', '"tokens":65')
    tampered = edit_lines(bundle, lambda ls: [*ls[:64], line_of(log, 64, edited)])
    assert problems(tampered, log) == [
        "records 60..64 do not match checkpoint 7 (size 65), though their hash chain is "
        "intact: they were rewritten (or only record 64, the last, was edited)"
    ]


def test_a_deleted_record_is_located(bundle: Path, log: Log) -> None:
    tampered = edit_lines(bundle, lambda ls: [*ls[:17], *ls[18:]])
    # Record 18's prev gives back record 17's hash, so every signed root still checks.
    assert problems(tampered, log) == ["record 17 is missing"]


def test_deleted_records_are_located(bundle: Path, log: Log) -> None:
    tampered = edit_lines(bundle, lambda ls: [*ls[:17], *ls[20:]])
    assert problems(tampered, log) == ["records 17..19 are missing"]


def test_reordered_records_are_located(bundle: Path, log: Log) -> None:
    tampered = edit_lines(bundle, lambda ls: [*ls[:17], ls[18], ls[17], *ls[19:]])
    assert problems(tampered, log) == ["records 17 and 18 are out of order"]


def test_a_record_moved_to_the_end_is_located(bundle: Path, log: Log) -> None:
    tampered = edit_lines(bundle, lambda ls: [*ls[:17], *ls[18:], ls[17]])
    assert problems(tampered, log) == ["records 17 and 18 are out of order"]


def test_a_duplicated_record_is_located(bundle: Path, log: Log) -> None:
    tampered = edit_lines(bundle, lambda ls: [*ls[:18], ls[17], *ls[18:]])
    assert problems(tampered, log) == ["record 17 appears twice"]


def test_a_cut_tail_is_located(bundle: Path, log: Log) -> None:
    tampered = edit_lines(bundle, lambda ls: ls[:58])
    assert problems(tampered, log) == [
        "records 58..64 are missing (the log was cut short): checkpoint 7 (size 65) covers them"
    ]


def test_a_record_appended_after_the_last_checkpoint_is_not_covered(bundle: Path, log: Log) -> None:
    forged = {"index": 65, "prev": log.leaves[64].hex(), "time": TIME, "kind": "admin"}
    line = json.dumps({"index": 65, "record": canonical(forged), "content": None}).encode()
    tampered = edit_lines(bundle, lambda ls: [*ls, line])
    assert problems(tampered, log) == ["record 65 is not covered by any signed checkpoint"]


def test_rewritten_records_are_found(bundle: Path, log: Log) -> None:
    # Records 20..29 replaced by others chained from record 19: only record 30's prev breaks.
    chained = Log(key=log.key, lines=log.lines[:20], leaves=log.leaves[:20])
    for _ in range(10):
        chained.record("admin", {"action": "rewritten"}, None)
    replaced = [line_of(chained, i) for i in range(20, 30)]
    tampered = edit_lines(bundle, lambda ls: [*ls[:20], *replaced, *ls[30:]])
    assert problems(tampered, log) == [
        "record 29 was edited: record 30's prev is not its hash",
        "records 20..29 do not match checkpoint 3 (size 30) even with the located edits "
        "undone: more of them were changed",
    ]


def test_edited_content_is_located(bundle: Path, log: Log) -> None:
    content = {**(log.lines[17].content or {}), "output": "a different answer"}
    tampered = edit_lines(bundle, replace_line(17, line_of(log, 17, content=content)))
    assert problems(tampered, log) == [
        "content of record 17 does not match its digest (output_sha256)"
    ]


def test_erased_content_still_present_is_found(bundle: Path, log: Log) -> None:
    restored = {"input": "question 5: ünïcode ✓", "output": "answer 5"}
    tampered = edit_lines(bundle, replace_line(5, line_of(log, 5, content=restored)))
    assert problems(tampered, log) == [
        "content of record 5 is still present though erasure record 40 erased it"
    ]


def test_an_erasure_of_no_record_is_found(tmp_path: Path) -> None:
    bad = make_log(n=30, erasures={12: 999})
    path = tmp_path / "bad.zip"
    write_bundle(path, bad.lines, bad.notes, bad.verifier)
    assert problems(path, bad) == [
        "erasure record 12 erases record 999, which does not exist before it"
    ]


# -- checkpoints --------------------------------------------------------------


def test_an_edited_checkpoint_fails_its_signature(bundle: Path, log: Log) -> None:
    def edit(notes: list[str]) -> list[str]:
        origin, size, root, rest = notes[2].split("\n", 3)
        flipped = ("B" if root[0] != "B" else "C") + root[1:]
        return [*notes[:2], "\n".join([origin, size, flipped, rest]), *notes[3:]]

    found = problems(edit_checkpoints(bundle, edit), log)
    assert len(found) == 1
    assert found[0].startswith("checkpoint 3 (size 30): signature does not verify")


def test_a_checkpoint_signed_by_another_key_is_unknown(bundle: Path, log: Log) -> None:
    other = Ed25519PrivateKey.generate()
    note = log.sign(30, key=other)
    found = problems(edit_checkpoints(bundle, lambda ns: [*ns[:2], note, *ns[3:]]), log)
    other_id = verifier_key(NAME, public_key_bytes(other)).split("+")[1]
    assert len(found) == 1
    assert found[0].startswith(f"checkpoint 3: signed by an unknown key {NAME}+{other_id}")


def test_a_malformed_checkpoint_is_reported(bundle: Path, log: Log) -> None:
    found = problems(edit_checkpoints(bundle, lambda ns: [*ns[:2], "garbage\n", *ns[3:]]), log)
    assert found == [
        "checkpoint 3: malformed note: no blank line between the text and the signatures"
    ]


def forked(log: Log) -> list[bytes]:
    """The log's leaves with record 25 replaced: the tree of another history."""
    leaves = list(log.leaves)
    leaves[25] = leaf_hash(b"another history")
    return leaves


def test_a_forked_checkpoint_is_found(bundle: Path, log: Log) -> None:
    note = log.sign(30, leaves=forked(log))  # validly signed by the log's own key
    found = problems(edit_checkpoints(bundle, lambda ns: [*ns[:2], note, *ns[3:]]), log)
    assert len(found) == 2, found
    assert found[0].startswith("checkpoints 2 and 3 fork: the consistency proof")
    assert found[1].startswith("checkpoints 3 and 4 fork: checkpoint 4 matches the records")


def test_a_forked_last_checkpoint_is_a_fork_not_an_edit(bundle: Path, log: Log) -> None:
    leaves = list(log.leaves)
    leaves[62] = leaf_hash(b"another history")
    note = log.sign(65, leaves=leaves)
    found = problems(edit_checkpoints(bundle, lambda ns: [*ns[:6], note]), log)
    assert len(found) == 1, found
    assert found[0].startswith("checkpoints 6 and 7 fork")


def test_two_checkpoints_of_one_size_with_other_roots_fork(bundle: Path, log: Log) -> None:
    note = log.sign(30, leaves=forked(log))
    found = problems(edit_checkpoints(bundle, lambda ns: [*ns[:3], note, *ns[3:]]), log)
    assert any(p.startswith("checkpoints 3 and 4 fork: both sign size 30") for p in found), found


def test_a_wrong_key_fails_every_checkpoint(bundle: Path) -> None:
    stranger = verifier_key(NAME, public_key_bytes(Ed25519PrivateKey.generate()))
    verdict = verify_bundle(bundle, stranger)
    assert not verdict.ok
    assert sum("signed by an unknown key" in p for p in verdict.problems) == 7
    assert "records 0..64 are not covered by any signed checkpoint" in verdict.problems


def test_a_damaged_zip_is_reported(bundle: Path, log: Log) -> None:
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    verdict = verify_bundle(bundle, log.verifier)
    assert not verdict.ok
    assert verdict.problems[0].startswith("the bundle is damaged")
    assert not verify_bundle(bundle.with_name("absent.zip"), log.verifier).ok


# Fields of each central directory entry (APPNOTE 4.3.12): what the zip says about a member.
VERSION_NEEDED, FLAGS, METHOD = 6, 8, 10


def patched(path: Path, field: int, value: int) -> Path:
    """The bundle with one field of every member's central directory entry set to ``value``."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        data[at + field : at + field + 2] = value.to_bytes(2, "little")
        at = data.find(b"PK\x01\x02", at + 1)
    out = path.with_name("patched.zip")
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(VERSION_NEEDED, 0xFF, id="version-25.5"),  # NotImplementedError
        pytest.param(METHOD, 99, id="aes-compression"),  # NotImplementedError
        pytest.param(FLAGS, 0x1, id="encrypted"),  # RuntimeError: password required
    ],
)
def test_a_zip_the_verifier_cannot_read_is_reported(
    bundle: Path, log: Log, field: int, value: int
) -> None:
    # zipfile's other exceptions went up through verify_bundle as they were.
    verdict = verify_bundle(patched(bundle, field, value), log.verifier)
    assert not verdict.ok
    assert verdict.problems[0].startswith("the bundle is damaged or not a bundle:")


def test_a_record_claiming_a_far_index_costs_no_more_than_its_line(bundle: Path, log: Log) -> None:
    # Every index below it was put in a set of missing records: 10^7 took 13 s and
    # gigabytes, 10^12 would never finish.
    far = 10**12
    record = json.loads(log.lines[64].record) | {"index": far}
    line = json.dumps({"index": far, "record": canonical(record), "content": None}).encode()
    verdict = verify_bundle(edit_lines(bundle, replace_line(64, line)), log.verifier)
    assert f"records 64..{far - 1} are missing" in verdict.problems


@pytest.mark.parametrize(
    "line",
    [b"[" * 100_000, b'{"from": Infinity, "to": 2, "proof": []}', b'{"from": 1e999, "to": 2}'],
    ids=["nested", "infinity", "huge"],
)
def test_a_malformed_proof_line_is_reported(bundle: Path, log: Log, line: bytes) -> None:
    # A RecursionError and an OverflowError (int(inf)) went up as they were.
    verdict = verify_bundle(rewrite(bundle, CONSISTENCY, lambda data: line), log.verifier)
    assert f"{CONSISTENCY} holds a malformed line" in verdict.problems


def members_of(log: Log) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bundle.zip"
        write_bundle(path, log.lines, log.notes, log.verifier)
        with zipfile.ZipFile(path) as archive:
            return {name: archive.read(name) for name in archive.namelist()}


SMALL = make_log(12, 4, {9: 2})
INSERTS = [b"\n", b'"', b"[", b"-1", b"99999999999", b"null", b"\\udcff", f"{SEPARATOR}\n".encode()]


@st.composite
def tampered_members(draw: st.DrawFn, members: dict[str, bytes]) -> dict[str, bytes]:
    """A bundle's members, a few of their bytes changed or lines broken."""
    members = dict(members)
    for _ in range(draw(st.integers(1, 5))):
        name = draw(st.sampled_from(sorted(members)))
        data = bytearray(members[name])
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if draw(st.booleans()) and data:
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.sampled_from(INSERTS))
        members[name] = bytes(data)
    return members


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(members=tampered_members(members_of(SMALL)))
def test_a_tampered_bundle_gets_a_verdict_never_an_exception(
    tmp_path: Path, members: dict[str, bytes]
) -> None:
    path = tmp_path / "tampered.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    for key in (SMALL.verifier, None):
        assert isinstance(verify_bundle(path, key), Verdict)


def test_a_bad_key_string_is_reported(bundle: Path) -> None:
    verdict = verify_bundle(bundle, "not-a-key")
    assert not verdict.ok
    assert verdict.problems[0].startswith("the key given: a verifier key is")


def test_write_bundle_refuses_a_note_holding_the_separator(tmp_path: Path, log: Log) -> None:
    with pytest.raises(ValueError, match="separator"):
        write_bundle(tmp_path / "x.zip", [], [f"{SEPARATOR}\n0\nAAAA\n\n— x y\n"], log.verifier)
    assert list(tmp_path.iterdir()) == []


# -- the command and the machine it runs on -----------------------------------


def test_the_command_exits_0_only_when_verified(
    bundle: Path, log: Log, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(log.verifier + "\n")
    assert main(["verify", str(bundle), "--key", str(key_file)]) == 0
    assert capsys.readouterr().out == "verified: 65 records, 7 checkpoints\n"
    assert main(["verify", str(bundle), "--key", log.verifier]) == 0
    capsys.readouterr()
    tampered = edit_lines(bundle, lambda ls: [*ls[:17], *ls[18:]])
    assert main(["verify", str(tampered), "--key", log.verifier]) == 1
    assert "record 17 is missing" in capsys.readouterr().out


def test_the_verifier_needs_no_network_and_no_server(bundle: Path, log: Log) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to create a network namespace")
    # Also proves the verifier loads nothing of BlackRoad beyond blackroad.audit.
    probe = """
import runpy, sys
sys.argv = ["bundle", "verify", sys.argv[1], "--key", sys.argv[2]]
try:
    runpy.run_module("blackroad.audit.verify", run_name="__main__")
except SystemExit:
    other = [m for m in sys.modules
             if m.startswith("blackroad.") and not m.startswith("blackroad.audit")]
    # /proc/net/dev lists the interfaces of this process's own network namespace.
    with open("/proc/self/net/dev") as dev:
        interfaces = sorted(line.split(":")[0].strip() for line in dev.readlines()[2:])
    print("loaded", other, "interfaces", interfaces)
    raise
"""
    result = subprocess.run(
        [unshare, "--net", sys.executable, "-c", probe, str(bundle), log.verifier],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip(f"network namespaces are not permitted here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert "verified: 65 records, 7 checkpoints" in result.stdout
    assert "loaded [] interfaces ['lo']" in result.stdout


def test_verifying_100k_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = make_log(n=100_000, every=1000)
    path = tmp_path / "big.zip"
    write_bundle(path, log.lines, log.notes, log.verifier)
    start = time.perf_counter()
    verdict = verify_bundle(path, log.verifier)
    took = time.perf_counter() - start
    assert verdict.summary() == "verified: 100000 records, 100 checkpoints"
    with capsys.disabled():
        print(f"\nverified 100,000 records in {took:.2f} s ({100_000 / took:,.0f} records/s)")
