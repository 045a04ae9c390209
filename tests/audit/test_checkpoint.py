"""C2SP checkpoints in signed notes: Go's known answer, round trips, forgeries, the key file."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackroad.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    key_id,
    load_or_create_key,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    public_key_bytes,
    sign_checkpoint,
    sign_note,
    verifier_key,
)

# golang.org/x/mod/sumdb/note's documented example: the key pair and the note it signs.
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

ORIGIN = "audit.example/log"
ROOT = hashlib.sha256(b"a root").digest()


def go_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SIGNER.split("+", 4)[4])
    assert seed[0] == 1  # the Ed25519 signature type
    return Ed25519PrivateKey.from_private_bytes(seed[1:])


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def verifier(key: Ed25519PrivateKey) -> str:
    return verifier_key(ORIGIN, public_key_bytes(key))


def test_go_known_answer() -> None:
    key = go_key()
    assert verifier_key("PeterNeumann", public_key_bytes(key)) == GO_VERIFIER
    assert sign_note(GO_TEXT, key, "PeterNeumann") == GO_NOTE  # Ed25519 is deterministic
    assert open_note(GO_NOTE, GO_VERIFIER) == GO_TEXT
    name, ident, _ = parse_verifier_key(GO_VERIFIER)
    assert (name, ident.hex()) == ("PeterNeumann", "c74f20a3")
    assert key_id(name, public_key_bytes(key)) == ident
    with pytest.raises(CheckpointError, match="signature does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), GO_VERIFIER)


def test_round_trip(key: Ed25519PrivateKey, verifier: str) -> None:
    note = sign_checkpoint(ORIGIN, 17, ROOT, key, ORIGIN)
    body = f"{ORIGIN}\n17\n{base64.b64encode(ROOT).decode()}\n"
    assert note.startswith(body + "\n— " + ORIGIN + " ")
    assert note.endswith("\n") and note.count("\n") == 5
    signature = base64.b64decode(note.splitlines()[-1].split(" ")[2])
    raw = public_key_bytes(key)
    assert signature[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw).digest()[:4]
    key.public_key().verify(signature[4:], body.encode())  # the signature is over the body
    assert len(signature) == 68
    assert open_checkpoint(note, verifier) == Checkpoint(ORIGIN, 17, ROOT)
    assert open_checkpoint(sign_checkpoint(ORIGIN, 0, ROOT, key, ORIGIN), verifier).size == 0


def test_an_edited_byte_fails_the_signature(key: Ed25519PrivateKey, verifier: str) -> None:
    note = sign_checkpoint(ORIGIN, 17, ROOT, key, ORIGIN)
    body_length = note.index("\n\n") + 1
    for at in range(body_length):
        if note[at] == "\n":
            continue
        replacement = "7" if note[at] != "7" else "8"
        edited = note[:at] + replacement + note[at + 1 :]
        with pytest.raises(CheckpointError, match=r"^signature does not verify"):
            open_checkpoint(edited, verifier)


def test_another_key_is_unknown(key: Ed25519PrivateKey, verifier: str) -> None:
    other = Ed25519PrivateKey.generate()
    other_id = key_id(ORIGIN, public_key_bytes(other)).hex()
    note = sign_checkpoint(ORIGIN, 3, ROOT, other, ORIGIN)
    with pytest.raises(CheckpointError, match=f"^signed by an unknown key {ORIGIN}\\+{other_id}"):
        open_checkpoint(note, verifier)
    # Signed by the right key under another name: another key, to the spec.
    renamed = sign_checkpoint(ORIGIN, 3, ROOT, key, "other.example/log")
    with pytest.raises(CheckpointError, match=r"unknown key other\.example/log"):
        open_checkpoint(renamed, verifier)


def test_the_right_name_with_a_wrong_key_id_is_unknown(
    key: Ed25519PrivateKey, verifier: str
) -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, key, ORIGIN)
    text, signature_line = note.split("\n\n")
    blob = bytearray(base64.b64decode(signature_line.split(" ")[2]))
    blob[0] ^= 0xFF
    forged = f"{text}\n\n— {ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(CheckpointError, match="unknown key"):
        open_checkpoint(forged, verifier)


def test_a_bad_signature_by_the_key_rejects_the_note(key: Ed25519PrivateKey, verifier: str) -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, key, ORIGIN)
    other = sign_checkpoint(ORIGIN, 4, ROOT, key, ORIGIN)
    # Checkpoint 3's text with the signature of checkpoint 4 appended: one good, one bad.
    both = note + other.split("\n\n")[1]
    with pytest.raises(CheckpointError, match="signature does not verify"):
        open_checkpoint(both, verifier)
    # A valid signature by an unknown key beside ours is ignored.
    extra = sign_checkpoint(ORIGIN, 3, ROOT, Ed25519PrivateKey.generate(), "witness.example")
    assert open_checkpoint(note + extra.split("\n\n")[1], verifier).size == 3


def signed(key: Ed25519PrivateKey, text: str) -> str:
    return sign_note(text, key, ORIGIN)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{ORIGIN}\nseventeen\n{base64.b64encode(ROOT).decode()}\n", "not a decimal number"),
        (f"{ORIGIN}\n017\n{base64.b64encode(ROOT).decode()}\n", "not a decimal number"),
        (f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n", "not a decimal number"),
        (f"{ORIGIN}\n17\n{base64.b64encode(ROOT).decode()[:-1]}!\n", "not valid base64"),
        (f"{ORIGIN}\n17\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"{ORIGIN}\n17\n{base64.b64encode(ROOT).decode()}\nextension\n", "4 lines, not 3"),
        (f"{ORIGIN}\n17\n", "2 lines, not 3"),
        (f"\n17\n{base64.b64encode(ROOT).decode()}\n", "origin line is empty"),
    ],
)
def test_a_malformed_body_is_refused_even_when_signed(
    key: Ed25519PrivateKey, verifier: str, text: str, message: str
) -> None:
    with pytest.raises(CheckpointError, match=f"^malformed checkpoint: .*{message}"):
        open_checkpoint(signed(key, text), verifier)


def test_malformed_notes_are_refused(key: Ed25519PrivateKey, verifier: str) -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, key, ORIGIN)
    text, line = note.split("\n\n")
    cases = [
        ("no blank line", note.replace("\n\n", "\n")),
        ("does not end with a newline", note[:-1]),
        ("em dash", f"{text}\n\n- {line[2:]}"),
        ("not valid base64", f"{text}\n\n{line[:-3]}!!\n"),
        ("not valid base64", f"{text}\n\n— {ORIGIN}  {line.split(' ')[2]}"),
        ("control character", note.replace(ORIGIN, ORIGIN + "\r", 1)),
        ("no signature lines", text + "\n\n"),
        ("must not contain spaces", f"{text}\n\n— {chr(0x2003)}x {line.split(' ')[2]}"),
    ]
    for message, bad in cases:
        with pytest.raises(CheckpointError, match=f"malformed note: .*{message}"):
            open_checkpoint(bad, verifier)


def test_verifier_keys_are_checked(key: Ed25519PrivateKey, verifier: str) -> None:
    name, ident, public = parse_verifier_key(verifier)
    assert (name, ident) == (ORIGIN, key_id(ORIGIN, public_key_bytes(key)))
    assert verifier_key(name, public) == verifier
    plus = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"  # '+' in its base64
    assert parse_verifier_key(plus).name == "TEST"
    bad = {
        r"<name>\+<key ID>\+<base64 key>": "no-plus-signs",
        "8 lowercase hex": verifier.replace(f"+{ident.hex()}+", "+XYZ+"),
        "does not match": verifier.replace(f"+{ident.hex()}+", "+00000000+"),
        "not valid base64": verifier[:-2] + "!!",
        "not Ed25519": f"{name}+{ident.hex()}+" + base64.b64encode(b"\x02" + bytes(32)).decode(),
        "got 31": f"{name}+{ident.hex()}+" + base64.b64encode(b"\x01" + bytes(31)).decode(),
        "must not contain spaces": "a b+00000000+AA==",
    }
    for message, text in bad.items():
        with pytest.raises(ValueError, match=message):
            parse_verifier_key(text)


def test_the_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "home" / "audit.key"
    first = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_bytes(load_or_create_key(path)) == public_key_bytes(first)
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]  # no temporary left


def test_the_key_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path / "audit.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "audit.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "audit.key"
    load_or_create_key(path)
    path.chmod(mode)
    with pytest.raises(PermissionError, match=f"mode is {mode:04o}"):
        load_or_create_key(path)


def test_a_key_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        load_or_create_key(path)
