"""Signed tree heads: C2SP tlog-checkpoints in C2SP signed-note format, with Ed25519.

This module owns what the audit log signs and how a verifier checks it: the
checkpoint body (origin, tree size, root hash), signed notes (`sign_note`,
`open_note`, and their checkpoint forms), the verifier key string (the format
of Go's golang.org/x/mod/sumdb/note, so standard transparency-log tooling
reads the same keys and notes), and the log's signing key file, written with
`write_atomically`, which bundle.py shares.

    <origin>\\n<size in decimal>\\n<base64 of the 32-byte root>\\n
    \\n
    — <key name> <base64(4-byte key ID || 64-byte Ed25519 signature)>\\n

The key ID is SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4],
0x01 being the signed-note signature type of Ed25519. The signature is over
the body, final newline included. Standard library and `cryptography` only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519_TYPE = b"\x01"
KEY_ID_SIZE = 4
PUBLIC_KEY_SIZE = 32
ROOT_SIZE = 32

_DASH = "\u2014 "
# Signed-note verifiers must accept at least 16 signatures; more than this is not a note we made.
_MAX_SIGNATURES = 64
_MAX_NOTE_CHARS = 1 << 16
_SIZE = re.compile(r"(?:0|[1-9][0-9]*)")
_HEX_ID = re.compile(r"[0-9a-f]{8}")


class CheckpointError(ValueError):
    """A note or checkpoint that must not be trusted; the message says exactly why."""


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log `origin` had `size` leaves with Merkle root `root`."""

    origin: str
    size: int
    root: bytes


class NoteSignature(NamedTuple):
    name: str
    key_id: bytes
    signature: bytes


class SignedNote(NamedTuple):
    """A note split into its text (final newline included) and its signature lines, unverified."""

    text: str
    signatures: list[NoteSignature]


class VerifierKey(NamedTuple):
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    def label(self) -> str:
        return f"{self.name}+{self.key_id.hex()}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict standard base64: padded, no stray characters (binascii.Error otherwise)."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def _check_key_name(name: str) -> None:
    if not name:
        raise ValueError("a key name must not be empty")
    if any(c.isspace() or c == "+" or c < " " for c in name):
        raise ValueError(f"key name {name!r} must not contain spaces, '+' or control characters")


def key_id(name: str, public_key: bytes) -> bytes:
    """The signed-note key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + public_key).digest()
    return digest[:KEY_ID_SIZE]


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of `private_key`."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def verifier_key(name: str, public_key: bytes | Ed25519PublicKey) -> str:
    """`<name>+<8 hex key ID>+<base64(0x01 || public key)>`, as golang.org/x/mod/sumdb/note."""
    _check_key_name(name)
    raw = (
        public_key
        if isinstance(public_key, bytes)
        else public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    return f"{name}+{key_id(name, raw).hex()}+{_b64(ED25519_TYPE + raw)}"


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse a verifier key string; ValueError says which part is wrong."""
    text = text.strip()
    # The name holds no '+' but the base64 may: split at the first two only.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise ValueError(f"a verifier key is <name>+<key ID>+<base64 key>, got {text[:80]!r}")
    name, hex_id, encoded = parts
    _check_key_name(name)
    if not _HEX_ID.fullmatch(hex_id):
        raise ValueError(f"verifier key ID must be 8 lowercase hex digits, got {hex_id!r}")
    try:
        raw = _unb64(encoded)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("verifier key: the public key is not valid base64") from None
    if raw[:1] != ED25519_TYPE:
        kind = raw[0] if raw else None
        raise ValueError(f"verifier key: signature type {kind!r} is not Ed25519 (1)")
    if len(raw) != 1 + PUBLIC_KEY_SIZE:
        raise ValueError(
            f"verifier key: an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(raw) - 1}"
        )
    public = raw[1:]
    expected = key_id(name, public)
    if expected.hex() != hex_id:
        raise ValueError(
            f"verifier key: key ID {hex_id} does not match the name and key "
            f"(they give {expected.hex()}); the string was altered"
        )
    return VerifierKey(name, expected, Ed25519PublicKey.from_public_bytes(public))


def format_body(origin: str, size: int, root: bytes) -> str:
    """The checkpoint body: origin, size and base64 root, one per line."""
    if not origin or any(c < " " for c in origin):
        raise ValueError(f"origin {origin!r} must be non-empty and hold no control characters")
    if size < 0:
        raise ValueError(f"tree size must not be negative, got {size}")
    if len(root) != ROOT_SIZE:
        raise ValueError(f"a root hash is {ROOT_SIZE} bytes, got {len(root)}")
    return f"{origin}\n{size}\n{_b64(root)}\n"


def parse_body(text: str) -> Checkpoint:
    """Parse a checkpoint body (no signature check); CheckpointError says what is malformed."""
    if not text.endswith("\n"):
        raise CheckpointError("malformed checkpoint: the body does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise CheckpointError(
            f"malformed checkpoint: the body has {len(lines)} lines, not 3 "
            "(origin, size, root; extension lines are not used)"
        )
    origin, size_text, root_text = lines
    if not origin:
        raise CheckpointError("malformed checkpoint: the origin line is empty")
    if not _SIZE.fullmatch(size_text):
        raise CheckpointError(
            f"malformed checkpoint: tree size {size_text[:40]!r} is not a decimal number"
        )
    try:
        root = _unb64(root_text)
    except (binascii.Error, UnicodeEncodeError):
        raise CheckpointError(
            f"malformed checkpoint: root hash {root_text[:60]!r} is not valid base64"
        ) from None
    if len(root) != ROOT_SIZE or _b64(root) != root_text:
        raise CheckpointError(
            f"malformed checkpoint: the root hash is {len(root)} bytes, not {ROOT_SIZE}"
        )
    return Checkpoint(origin, int(size_text), root)


def parse_note(note: str) -> SignedNote:
    """Split a signed note into text and signature lines, checking only their form."""
    if len(note) > _MAX_NOTE_CHARS:
        raise CheckpointError(f"malformed note: longer than {_MAX_NOTE_CHARS} characters")
    bad = next((c for c in note if c < " " and c != "\n"), None)
    if bad is not None:
        raise CheckpointError(f"malformed note: it contains the control character {bad!r}")
    if not note.endswith("\n"):
        raise CheckpointError("malformed note: it does not end with a newline")
    # The text ends at the last blank line: the text may hold blank lines, signatures cannot.
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no blank line between the text and the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise CheckpointError("malformed note: it has no signature lines")
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise CheckpointError(f"malformed note: more than {_MAX_SIGNATURES} signatures")
    signatures = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(_DASH):
            raise CheckpointError(
                f"malformed note: signature line {number} does not start with an em dash"
            )
        name, _, encoded = line[len(_DASH) :].partition(" ")
        try:
            _check_key_name(name)
            raw = _unb64(encoded)
        except ValueError as error:
            invalid = isinstance(error, binascii.Error | UnicodeError)
            reason = "is not valid base64" if invalid else str(error)
            raise CheckpointError(f"malformed note: signature line {number} {reason}") from None
        if len(raw) <= KEY_ID_SIZE:
            raise CheckpointError(f"malformed note: signature line {number} is too short")
        signatures.append(NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:]))
    return SignedNote(text, signatures)


def sign_note(text: str, private_key: Ed25519PrivateKey, key_name: str) -> str:
    """The signed note of `text` (ending in a newline) with one Ed25519 signature."""
    _check_key_name(key_name)
    if not text.endswith("\n"):
        raise ValueError("a note's text must end with a newline")
    signature = private_key.sign(text.encode("utf-8"))
    tag = key_id(key_name, public_key_bytes(private_key))
    return f"{text}\n{_DASH}{key_name} {_b64(tag + signature)}\n"


def open_note(note: str, verifier: str | VerifierKey) -> str:
    """The text of `note` once its signature by `verifier` checks; CheckpointError if not.

    As the signed-note spec requires, signatures by other keys (another name or
    another key ID) are ignored, and a bad signature by the key rejects the note.
    """
    key = parse_verifier_key(verifier) if isinstance(verifier, str) else verifier
    parsed = parse_note(note)
    ours = [s for s in parsed.signatures if s.name == key.name and s.key_id == key.key_id]
    if not ours:
        seen = ", ".join(sorted({f"{s.name}+{s.key_id.hex()}" for s in parsed.signatures}))
        raise CheckpointError(f"signed by an unknown key {seen} (expected {key.label()})")
    message = parsed.text.encode("utf-8")
    for signature in ours:
        try:
            key.public_key.verify(signature.signature, message)
        except InvalidSignature:
            raise CheckpointError(
                f"signature does not verify (key {key.label()}): the note was altered or forged"
            ) from None
    return parsed.text


def sign_checkpoint(
    origin: str, size: int, root: bytes, private_key: Ed25519PrivateKey, key_name: str
) -> str:
    """The whole signed note of the checkpoint (origin, size, root) signed by `private_key`."""
    return sign_note(format_body(origin, size, root), private_key, key_name)


def open_checkpoint(note: str, verifier: str | VerifierKey) -> Checkpoint:
    """The checkpoint in `note`, parsed only once its signature by `verifier` has verified."""
    return parse_body(open_note(note, verifier))


def _check_private(path: Path, mode: int) -> None:
    if mode & 0o077:
        raise PermissionError(
            f"refusing the signing key {path}: its mode is {stat.S_IMODE(mode):04o}, so others "
            f"on this machine may read it; run `chmod 600 {path}` if it was never exposed, "
            "or rotate the key"
        )


def _read_key(path: Path) -> Ed25519PrivateKey:
    # Open first, then check the mode of what was opened, so a swapped file cannot slip by.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"signing key {path} is not a regular file")
        _check_private(path, info.st_mode)
        data = file.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise ValueError(f"signing key {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key {path} is not an Ed25519 key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The log's signing key at `path` (PKCS#8 PEM, mode 0600), created on first use.

    A new key is written to a temporary file created 0600, fsynced, then linked
    into place: linking fails if another process created the key meanwhile, so
    two first starts cannot end up signing with different keys. A key file that
    the group or others can access is refused: a leaked key forges the log.
    """
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not write_atomically(path, lambda file: file.write(pem), replace=False):
        return _read_key(path)  # another process created it first: sign with that one
    return key


def write_atomically(
    path: Path, write: Callable[[IO[bytes]], object], replace: bool = True
) -> bool:
    """Write `path` whole or not at all (shared with bundle.py).

    The data goes to a temporary file beside it, created 0600 from the start
    (mkstemp), and fsynced; it then replaces `path`, or with `replace` False is
    linked in only if `path` does not exist yet (False if it did). The directory
    is fsynced so the rename itself survives a power cut.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            temporary.replace(path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True
