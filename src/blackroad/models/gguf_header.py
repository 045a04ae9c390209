"""A GGUF file's header, read within bounds: a model file is untrusted input.

A GGUF header declares counts and lengths (key-value pairs, tensors, strings,
arrays) that a reader must not believe: ``gguf.GGUFReader`` loops over a
declared array length even past the end of the file, one numpy object per
element, so a 100-byte file declaring 2^63 elements hung the server and grew
without limit. This reader walks the header once and checks every count
against the bytes left in the file before it moves on, skips numeric arrays
without reading them, keeps only the fields BlackRoad uses, and refuses with
``InvalidRequest`` anything the GGUF format (and llama.cpp's loader) would:
a truncated header, an unknown type, nested arrays, a tensor with more than
four dimensions or a name over 64 bytes, a duplicate key or tensor, a
tensor's data past the end of the file. Its work is bounded by the header's
size and by ``MAX_ITEMS``; its memory by ``MAX_TEXT`` per kept string.
The ``gguf`` package supplies the format's constants.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gguf import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
    LlamaFileType,
)

from blackroad.errors import InvalidRequest
from blackroad.models.types import GGUFMetadata

# Key-value pairs, tensors and string-array elements walked one by one, all
# together: the largest vocabularies (262,144 tokens, with their scores and
# types) take under a million.
MAX_ITEMS = 1 << 22
MAX_TEXT = 1 << 20  # a string value kept (a chat template): real ones are a few KiB
MAX_KEY = (1 << 16) - 1  # the GGUF specification's limit
MAX_TENSOR_NAME = 63  # llama.cpp's GGML_MAX_NAME, less its terminating NUL
MAX_DIMS = 4  # GGML_MAX_DIMS
VERSIONS = (2, 3)

_SCALARS = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_INTEGERS = frozenset(_SCALARS) - {GGUFValueType.FLOAT32, GGUFValueType.FLOAT64, GGUFValueType.BOOL}
# The keys read, whole or (after the architecture's name) by their ending.
_KEYS = frozenset(
    {
        b"general.architecture",
        b"general.name",
        b"general.file_type",
        b"general.alignment",
        b"tokenizer.chat_template",
        b"tokenizer.ggml.tokens",
        b"tokenizer.ggml.bos_token_id",
        b"tokenizer.ggml.eos_token_id",
    }
)
_ARCH_KEYS = (b".context_length", b".embedding_length", b".pooling_type")
_MAX_ARCH_KEY = 256

T = TypeVar("T")


@dataclass(frozen=True)
class _Field:
    """Where a kept key's value is: its type, its offset, and an array's item type and length."""

    type: GGUFValueType
    offset: int
    item_type: GGUFValueType | None = None
    length: int = 0


class _Header:
    """A cursor over the file's bytes that refuses to read past their end."""

    def __init__(self, data: mmap.mmap | bytes, name: str) -> None:
        self.data, self.name, self.at = data, name, 0
        self.order = "<"
        self.items = 0

    def fail(self, why: str) -> InvalidRequest:
        return InvalidRequest(f"{self.name} is not a readable GGUF file: {why}")

    def need(self, size: int, what: str) -> None:
        if size < 0 or self.at + size > len(self.data):
            raise self.fail(f"{what} runs past the end of the file (offset {self.at})")

    def unpack(self, code: str, what: str) -> int | float | bool:
        size = struct.calcsize(code)
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + code, self.data, self.at)
        self.at += size
        result: int | float | bool = value
        return result

    def count(self, code: str, what: str) -> int:
        value = self.unpack(code, what)
        assert isinstance(value, int)
        return value

    def string(self, what: str, limit: int | None = None) -> bytes:
        """A string's bytes (``limit``: refused if longer), the cursor after it."""
        length = self.count("Q", what)
        if limit is not None and length > limit:
            raise self.fail(f"{what} is {length} bytes long, more than {limit}")
        self.need(length, what)
        start, self.at = self.at, self.at + length
        return bytes(self.data[start : self.at])

    def skip_string(self, what: str) -> None:
        length = self.count("Q", what)
        self.need(length, what)
        self.at += length

    def walked(self, items: int, what: str) -> None:
        """Counts ``items`` more against ``MAX_ITEMS``."""
        self.items += items
        if self.items > MAX_ITEMS:
            raise self.fail(f"{what}: more than {MAX_ITEMS} keys, tensors and strings in all")

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.count("I", what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.fail(f"{what} has an unknown type {raw}") from None

    def skip_value(self, kind: GGUFValueType, what: str) -> _Field:
        """Past one value of type ``kind``; where it was."""
        start = self.at
        if kind == GGUFValueType.STRING:
            self.skip_string(what)
            return _Field(kind, start)
        if kind != GGUFValueType.ARRAY:
            self.need(struct.calcsize(_SCALARS[kind]), what)
            self.at += struct.calcsize(_SCALARS[kind])
            return _Field(kind, start)
        item_type = self.value_type(what)
        length = self.count("Q", what)
        first = self.at
        if item_type == GGUFValueType.ARRAY:
            raise self.fail(f"{what} is an array of arrays, which GGUF does not allow")
        if item_type == GGUFValueType.STRING:
            self.walked(length, what)  # checked before the walk: its length may be 2^64-1
            for _ in range(length):
                self.skip_string(what)
        else:
            size = struct.calcsize(_SCALARS[item_type])
            if length > (len(self.data) - self.at) // size:
                raise self.fail(f"{what} declares {length} items, more than the file holds")
            self.at += length * size
        return _Field(kind, first, item_type, length)


def read_header(path: Path) -> GGUFMetadata:
    """The metadata of the GGUF file at ``path``; ``InvalidRequest`` if it is not a sound one."""
    try:
        with path.open("rb") as file:
            size = path.stat().st_size
            if size == 0:
                return _read(b"", path.name)
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _read(data, path.name)
    except OSError as error:
        raise InvalidRequest(f"{path.name} cannot be read: {error.strerror or error}") from error


def _read(data: mmap.mmap | bytes, name: str) -> GGUFMetadata:
    header = _Header(data, name)
    if len(data) < 8 or struct.unpack_from("<I", data)[0] != GGUF_MAGIC:
        raise header.fail("it does not start with GGUF")
    header.at = 4
    version = header.count("I", "the version")
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        header.order, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in VERSIONS:
        raise header.fail(f"version {version} (this reader knows {VERSIONS})")
    tensor_count = header.count("Q", "the tensor count")
    kv_count = header.count("Q", "the key-value count")
    header.walked(kv_count, "the key-value count")
    header.walked(tensor_count, "the tensor count")

    fields: dict[bytes, _Field] = {}
    seen: set[bytes] = set()
    for number in range(kv_count):
        key = header.string(f"key {number}", MAX_KEY)
        what = f"key {key.decode('utf-8', 'replace')!r}"
        digest = hashlib.blake2b(key, digest_size=16).digest()
        if digest in seen:
            raise header.fail(f"{what} appears twice")
        seen.add(digest)
        where = header.skip_value(header.value_type(what), what)
        if key in _KEYS or (len(key) <= _MAX_ARCH_KEY and key.endswith(_ARCH_KEYS)):
            fields[key] = where

    reader = _Fields(header, fields)
    alignment = reader.integer(b"general.alignment") or GGUF_DEFAULT_ALIGNMENT
    if alignment <= 0 or alignment & (alignment - 1):
        raise header.fail(f"general.alignment {alignment} is not a power of two")
    tensors = [_tensor(header, number) for number in range(tensor_count)]
    names = {name for name, _, _ in tensors}
    if len(names) != len(tensors):
        raise header.fail("two tensors have the same name")
    data_start = -(-header.at // alignment) * alignment
    for tensor_name, _, (offset, size) in tensors:
        if data_start + offset + size > len(data):
            raise header.fail(f"tensor {tensor_name!r}'s data runs past the end of the file")
    return reader.metadata(sum(elements for _, elements, _ in tensors))


def _tensor(header: _Header, number: int) -> tuple[str, int, tuple[int, int]]:
    """A tensor's name, its number of elements, and its data's offset and size in bytes."""
    name = header.string(f"tensor {number}'s name", MAX_TENSOR_NAME)
    what = f"tensor {name.decode('utf-8', 'replace')!r}"
    n_dims = header.count("I", what)
    if n_dims > MAX_DIMS:
        raise header.fail(f"{what} has {n_dims} dimensions, more than {MAX_DIMS}")
    dims = [header.count("Q", what) for _ in range(n_dims)]
    raw_type = header.count("I", what)
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(raw_type)]
    except (ValueError, KeyError):
        raise header.fail(f"{what} has an unknown type {raw_type}") from None
    offset = header.count("Q", what)
    elements = 1
    for dim in dims:
        elements *= dim
    if dims and dims[0] % block:
        raise header.fail(f"{what}'s rows are not whole blocks of {block}")
    return name.decode("utf-8", "replace"), elements, (offset, elements // block * type_size)


class _Fields:
    """The kept fields' values, each of the type the format gives it."""

    def __init__(self, header: _Header, fields: dict[bytes, _Field]) -> None:
        self.header, self.fields = header, fields

    def _typed(self, key: bytes, kinds: frozenset[GGUFValueType], kind: str) -> _Field | None:
        found = self.fields.get(key)
        if found is not None and found.type not in kinds:
            name = key.decode("utf-8", "replace")
            raise self.header.fail(f"{name} is of type {found.type.name}, not {kind}")
        return found

    def _at(self, offset: int, read: Callable[[], T]) -> T:
        self.header.at = offset
        return read()

    def integer(self, key: bytes) -> int | None:
        found = self._typed(key, _INTEGERS, "an integer")
        if found is None:
            return None
        return int(self._at(found.offset, lambda: self.header.unpack(_SCALARS[found.type], "")))

    def size(self, key: bytes) -> int:
        """An integer that counts something (0 when absent): never negative."""
        value = self.integer(key) or 0
        if value < 0:
            raise self.header.fail(f"{key.decode('utf-8', 'replace')} is negative")
        return value

    def text(self, key: bytes) -> str | None:
        found = self._typed(key, frozenset({GGUFValueType.STRING}), "a string")
        if found is None:
            return None
        name = key.decode("utf-8", "replace")
        raw = self._at(found.offset, lambda: self.header.string(name, MAX_TEXT))
        return raw.decode("utf-8", "replace")

    def token(self, key: bytes) -> str:
        """The text of the token whose id is ``key``'s value ('' without one)."""
        token_id = self.integer(key)
        tokens = self._typed(b"tokenizer.ggml.tokens", frozenset({GGUFValueType.ARRAY}), "an array")
        if token_id is None or tokens is None or tokens.item_type != GGUFValueType.STRING:
            return ""
        if not 0 <= token_id < tokens.length:
            return ""
        self.header.at = tokens.offset
        for _ in range(token_id):
            self.header.skip_string("a token")
        return self.header.string("a token", MAX_TEXT).decode("utf-8", "replace")

    def metadata(self, parameter_count: int) -> GGUFMetadata:
        arch = self.text(b"general.architecture") or "unknown"
        prefix = arch.encode()
        file_type = self.integer(b"general.file_type")
        if file_type is None:
            quantization = "unknown"
        elif file_type in LlamaFileType._value2member_map_:
            quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        else:
            quantization = f"type{file_type}"
        return GGUFMetadata(
            architecture=arch,
            general_name=self.text(b"general.name"),
            parameter_count=parameter_count,
            quantization=quantization,
            context_length=self.size(prefix + b".context_length"),
            embedding_length=self.size(prefix + b".embedding_length"),
            chat_template=self.text(b"tokenizer.chat_template"),
            bos_token=self.token(b"tokenizer.ggml.bos_token_id"),
            eos_token=self.token(b"tokenizer.ggml.eos_token_id"),
            pooling_type=self.integer(prefix + b".pooling_type"),
        )
