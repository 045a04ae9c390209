"""Object storage on the filesystem: immutable blobs named by their sha256.

A blob is written to a temporary file, fsynced, renamed into place and its
directory fsynced, so once ``put`` returns it survives a crash; a database
row that names it is committed only after that. Blobs are content-addressed,
so writing the same bytes twice stores them once, and a blob left behind by a
crash between ``put`` and the commit is harmless (``orphans`` lists them).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from blackroad.errors import NotFound


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise NotFound(f"no object {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` durably; its sha256 (hex) names it."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
            partial.write(data)
            partial.flush()
            os.fsync(partial.fileno())
        Path(partial.name).replace(target)
        _fsync_directory(target.parent)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no object {digest}") from None

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for path in self.root.glob("??/*"):
            if len(path.name) == 64:
                yield path.name

    def orphans(self, referenced: Iterable[str]) -> list[str]:
        """Stored blobs no row names (left by a crash before their row was committed)."""
        keep = set(referenced)
        return sorted(d for d in self.digests() if d not in keep)
