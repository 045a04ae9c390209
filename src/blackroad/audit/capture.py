"""What the audit takes from one HTTP request: its kind, and what came in and went out.

Every inference request is audited, and every request that may change
something (any method but GET and HEAD: admin routes, model management,
keys, fleet changes), refused ones included, since attempts matter to an
inspector too. Reads are not.

No secret enters the log, in any form (``audit/redact.py`` says what a
secret is). The body received is therefore kept whole as it arrives (up to
``limit`` bytes) and judged once the request ends:

- a JSON body is parsed and its secrets replaced by ``<redacted>``; what the
  log commits to is that redacted body, written as canonical JSON (sorted
  keys, no spaces, UTF-8): ``input_sha256`` is the SHA-256 of that text, and
  the text itself is what ``BLACKROAD_AUDIT_TEXTS=full`` keeps. A digest of
  the bytes as sent would let whoever reads the log test guesses at a
  password offline, so it is never stored;
- a body that is content, on a route that takes raw bytes or a form upload
  (a model blob, documents for a knowledge base), is committed to as sent:
  its SHA-256, and the text where the policy keeps texts and it fits
  ``limit``;
- any other body (one that is not JSON, or too large to parse, on a route
  that takes JSON or on no route at all) might hold a secret that cannot be
  found in it: neither it nor a digest of it is kept, only its size
  (``input_bytes_withheld``).

The text generated is hashed as it passes, and kept by the same policy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from blackroad.audit.log import Entry, canonical
from blackroad.audit.redact import redact

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


@dataclass(frozen=True)
class Captured:
    """A request body as the log may hold it: never a secret, nor a digest of one."""

    digest: str | None = None
    text: str | None = None
    withheld: int | None = None  # bytes received of which nothing is kept
    # The secret texts taken out of the body: scrubbed from the request's error too.
    secrets: list[str] = field(default_factory=list)


class Received:
    """A request body as it arrives, whole up to ``limit`` bytes, judged by ``captured``."""

    def __init__(self, keep: bool, limit: int) -> None:
        self._raw = hashlib.sha256()  # stored only for content (see the module's docstring)
        self._parts: list[bytes] | None = []
        self._size = 0
        self._keep = keep
        self._limit = limit
        self.seen = False

    def add(self, piece: bytes) -> None:
        self.seen = True
        self._raw.update(piece)
        self._size += len(piece)
        if self._parts is not None:
            if self._size > self._limit:
                self._parts = None  # too large to parse or keep
            else:
                self._parts.append(piece)

    def captured(self, content: bool) -> Captured:
        """What the log keeps of the body; ``content``: the route takes raw bytes or a form.

        Parses the body: called off the event loop.
        """
        if not self.seen:
            return Captured()
        whole = None if self._parts is None else b"".join(self._parts)
        if whole is not None and whole.strip():
            try:
                redacted, secrets = redact(json.loads(whole))
                document = canonical(redacted)
                encoded = document.encode("utf-8")  # a lone surrogate ("\udcff") is no text
            except (ValueError, RecursionError):  # not JSON (nor UTF-8), or nested too deep
                pass
            else:
                digest = hashlib.sha256(encoded).hexdigest()
                return Captured(digest, document if self._keep else None, secrets=secrets)
        if content or not self._size:
            kept = None
            if self._keep and whole is not None:
                kept = whole.decode("utf-8", errors="replace")
            return Captured(self._raw.hexdigest(), kept)
        return Captured(withheld=self._size)


def entry(kind: str, facts: dict[str, object], received: Captured, generated: Text) -> Entry:
    if received.withheld is not None:
        facts = {**facts, "input_bytes_withheld": received.withheld}
    return Entry(
        kind,
        facts,
        input_sha256=received.digest,
        output_sha256=generated.digest,
        input=received.text,
        output=generated.text,
    )
