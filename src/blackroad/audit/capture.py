"""What the audit takes from one HTTP request: its kind, and what came in and went out.

Every inference request is audited, and every request that may change
something (any method but GET and HEAD: admin routes, model management,
keys, fleet changes), refused ones included, since attempts matter to an
inspector too. Reads are not. The body received and the text generated are
hashed as they pass; the texts themselves are kept only where the
installation's policy says so (``BLACKROAD_AUDIT_TEXTS=full``), and never
beyond ``limit`` bytes (a model upload is hashed, not kept).
"""

from __future__ import annotations

import hashlib

from blackroad.audit.log import Entry

INFERENCE_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
    }
)
READS = frozenset({"GET", "HEAD", "OPTIONS"})


def kind_of(method: str, path: str) -> str | None:
    """``inference``, ``change``, or None for a read, which is not audited."""
    if path in INFERENCE_PATHS:
        return "inference"
    return None if method in READS else "change"


class Text:
    """A text that arrives in pieces: its sha256 always, itself only if kept."""

    def __init__(self, keep: bool, limit: int) -> None:
        self._hash = hashlib.sha256()
        self._parts: list[bytes] | None = [] if keep else None
        self._size = 0
        self._limit = limit
        self.seen = False

    def add(self, piece: bytes | str) -> None:
        data = piece.encode("utf-8") if isinstance(piece, str) else piece
        self.seen = True
        self._hash.update(data)
        self._size += len(data)
        if self._parts is not None:
            if self._size > self._limit:
                self._parts = None  # too large to keep: its digest stands for it
            else:
                self._parts.append(data)

    @property
    def digest(self) -> str | None:
        return self._hash.hexdigest() if self.seen else None

    @property
    def text(self) -> str | None:
        if not self.seen or self._parts is None:
            return None
        return b"".join(self._parts).decode("utf-8", errors="replace")


def entry(kind: str, facts: dict[str, object], received: Text, generated: Text) -> Entry:
    return Entry(
        kind,
        facts,
        input_sha256=received.digest,
        output_sha256=generated.digest,
        input=received.text,
        output=generated.text,
    )
