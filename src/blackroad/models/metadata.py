"""Reading GGUF headers with the ``gguf`` package, behind a small disk cache.

``gguf.GGUFReader`` parses every tokenizer array in Python, which takes
seconds for a 256k-token vocabulary. The facts BlackRoad needs are tiny, so
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
from typing import Any

from blackroad.errors import InvalidRequest
from blackroad.models.types import GGUFMetadata

_CACHE_VERSION = 1
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
        metadata = _load_cached(cache_file)
        if metadata is None:
            metadata = _parse(path)
            _store_cached(cache_file, metadata)
        with _lock:
            _memory_cache[key] = metadata
            _parsing.pop(key, None)
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


def _parse(path: Path) -> GGUFMetadata:
    from gguf import GGUFReader, LlamaFileType  # imported lazily: it pulls in numpy

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the gguf package raises bare ValueErrors and more
        raise InvalidRequest(f"{path.name} is not a readable GGUF file: {exc}") from exc

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = str(field("general.architecture") or "unknown")
    tokens = field("tokenizer.ggml.tokens") or []

    def token_text(key: str) -> str:
        token_id = field(key)
        return str(tokens[token_id]) if token_id is not None and token_id < len(tokens) else ""

    file_type = field("general.file_type")
    if file_type is None:
        quantization = "unknown"
    elif file_type in LlamaFileType._value2member_map_:
        quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    else:
        quantization = f"type{file_type}"
    pooling = field(f"{arch}.pooling_type")
    return GGUFMetadata(
        architecture=arch,
        general_name=field("general.name"),
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        quantization=quantization,
        context_length=int(field(f"{arch}.context_length") or 0),
        embedding_length=int(field(f"{arch}.embedding_length") or 0),
        chat_template=field("tokenizer.chat_template"),
        bos_token=token_text("tokenizer.ggml.bos_token_id"),
        eos_token=token_text("tokenizer.ggml.eos_token_id"),
        pooling_type=None if pooling is None else int(pooling),
    )
