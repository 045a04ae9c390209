"""GGUF headers' metadata (``gguf_header.py`` reads them), behind a small disk cache.

Reading a header walks every string of its tokenizer arrays, a fraction of a
second for a 256k-token vocabulary. The facts BlackRoad needs are tiny, so
they are cached as JSON keyed by the file's path, size and mtime; a changed
file is simply read again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path

from blackroad.models.gguf_header import read_header
from blackroad.models.types import GGUFMetadata

_CACHE_VERSION = 2  # 2: headers read within bounds (a type the format does not give is refused)
_memory_cache: dict[tuple[str, int, int], GGUFMetadata] = {}
# One parse per file at a time: a 100 MB GGUF takes seconds to read, and every
# caller that asks meanwhile (each probe of a node listing its models) waits for it.
_parsing: dict[tuple[str, int, int], threading.Lock] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blackroad" / "gguf-metadata"


def read_metadata(path: Path) -> GGUFMetadata:
    """Metadata of the GGUF file at ``path``; raises InvalidRequest if it is not one."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        cached = _memory_cache.get(key)
        if cached is not None:
            return cached
        parsing = _parsing.setdefault(key, threading.Lock())
    with parsing:
        with _lock:
            cached = _memory_cache.get(key)
        if cached is not None:  # parsed while this caller waited
            return cached
        digest = hashlib.sha256(json.dumps([_CACHE_VERSION, *key]).encode()).hexdigest()
        cache_file = cache_dir() / f"{digest}.json"
        try:
            metadata = _load_cached(cache_file)
            if metadata is None:
                metadata = read_header(path)
                _store_cached(cache_file, metadata)
            with _lock:
                _memory_cache[key] = metadata
        finally:
            with _lock:
                _parsing.pop(key, None)  # a file that is no GGUF leaves nothing behind either
    return metadata


def _load_cached(cache_file: Path) -> GGUFMetadata | None:
    try:
        return GGUFMetadata(**json.loads(cache_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _store_cached(cache_file: Path, metadata: GGUFMetadata) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(metadata)))
        tmp.replace(cache_file)
    except OSError:
        pass  # a read-only cache only costs speed
