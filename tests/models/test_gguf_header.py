"""A GGUF header is untrusted: read within bounds, anything unsound refused with InvalidRequest.

``fuzz/gguf_header.py`` fuzzes the same reader for longer (see ``fuzz/README.md``).
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from gguf import GGUFReader, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blackroad.errors import InvalidRequest
from blackroad.models.gguf_header import read_header
from tests.support.gguf_files import TOKENS, tiny_gguf, tiny_gguf_bytes

ALL = (1 << 64) - 1  # the largest count a header can declare


def text(value: bytes) -> bytes:
    return struct.pack("<Q", len(value)) + value


def entry(key: str, kind: GGUFValueType, payload: bytes) -> bytes:
    return text(key.encode()) + struct.pack("<I", kind) + payload


def gguf(
    *entries: bytes, tensors: tuple[bytes, ...] = (), counts: tuple[int, int] | None = None
) -> bytes:
    tensor_count, kv_count = counts or (len(tensors), len(entries))
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + b"".join(entries + tensors)


def tensor(name: bytes, dims: tuple[int, ...], kind: int = 0, offset: int = 0) -> bytes:
    shape = struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
    return text(name) + shape + struct.pack("<IQ", kind, offset)


def refused(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(data)
    with pytest.raises(InvalidRequest) as error:
        read_header(path)
    return str(error.value)


@pytest.mark.parametrize(
    "item", [GGUFValueType.UINT8, GGUFValueType.FLOAT32, GGUFValueType.STRING], ids=lambda t: t.name
)
def test_an_array_declaring_more_items_than_the_file_holds_is_refused(
    tmp_path: Path, item: GGUFValueType
) -> None:
    # gguf.GGUFReader looped over the declared length past the end of the file,
    # one numpy object per item: the server hung, its memory growing.
    array = struct.pack("<IQ", item, ALL) + b"\x00" * 64
    message = refused(tmp_path, gguf(entry("tokenizer.ggml.tokens", GGUFValueType.ARRAY, array)))
    assert "hostile.gguf is not a readable GGUF file" in message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(gguf(counts=(0, ALL)), id="key-value count"),
        pytest.param(gguf(counts=(ALL, 0)), id="tensor count"),
        pytest.param(gguf(text(b"k") + struct.pack("<I", 99)), id="unknown value type"),
        pytest.param(gguf(struct.pack("<Q", ALL) + b"general.name"), id="key length"),
        pytest.param(
            gguf(entry("general.name", GGUFValueType.STRING, struct.pack("<Q", ALL) + b"x")),
            id="string length",
        ),
        pytest.param(
            gguf(entry("a", GGUFValueType.ARRAY, struct.pack("<IQ", GGUFValueType.ARRAY, 1))),
            id="nested arrays",
        ),
        pytest.param(
            gguf(
                entry("a", GGUFValueType.UINT8, b"\x01"), entry("a", GGUFValueType.UINT8, b"\x01")
            ),
            id="duplicate key",
        ),
        pytest.param(gguf(tensors=(tensor(b"t", (1,) * 5),)), id="five dimensions"),
        pytest.param(gguf(tensors=(tensor(b"t" * 64, (1,)),)), id="tensor name length"),
        pytest.param(gguf(tensors=(tensor(b"t", (1,), kind=1234),)), id="unknown tensor type"),
        pytest.param(gguf(tensors=(tensor(b"t", (1,)), tensor(b"t", (1,)))), id="duplicate tensor"),
        pytest.param(gguf(tensors=(tensor(b"t", (1 << 40,)),)), id="data past the end"),
        pytest.param(gguf(tensors=(tensor(b"t", (7,), kind=2),)), id="partial block"),
        pytest.param(b"GGUF" + struct.pack("<I", 99), id="version"),
        pytest.param(b"GGML" + b"\x00" * 64, id="magic"),
        pytest.param(b"", id="empty"),
    ],
)
def test_an_unsound_header_is_refused(tmp_path: Path, data: bytes) -> None:
    refused(tmp_path, data)


@pytest.mark.parametrize(
    ("key", "kind", "payload"),
    [
        pytest.param("llama.context_length", GGUFValueType.STRING, text(b"4096"), id="string"),
        pytest.param(
            "llama.context_length", GGUFValueType.INT32, struct.pack("<i", -1), id="negative"
        ),
        pytest.param(
            "general.file_type", GGUFValueType.ARRAY, struct.pack("<IQB", 0, 1, 1), id="array"
        ),
        pytest.param(
            "tokenizer.ggml.bos_token_id", GGUFValueType.FLOAT32, struct.pack("<f", 1.5), id="float"
        ),
        pytest.param(
            "tokenizer.chat_template", GGUFValueType.UINT32, struct.pack("<I", 7), id="integer"
        ),
        pytest.param("general.architecture", GGUFValueType.BOOL, b"\x01", id="bool"),
    ],
)
def test_a_field_of_another_type_than_the_format_gives_it_is_refused(
    tmp_path: Path, key: str, kind: GGUFValueType, payload: bytes
) -> None:
    # The gguf package's reader handed these on: int("4096"-like strings) raised
    # ValueError, a list as a file type TypeError, and an integer became the
    # chat template.
    architecture = entry("general.architecture", GGUFValueType.STRING, text(b"llama"))
    fields = (entry(key, kind, payload),) if key == "general.architecture" else (architecture,
              entry(key, kind, payload))  # fmt: skip
    assert key in refused(tmp_path, gguf(*fields))


@pytest.mark.parametrize(
    "variant", [{}, {"big_endian": True}, {"architecture": "bert", "pooling": 1}]
)
def test_reads_what_the_gguf_package_reads(tmp_path: Path, variant: dict[str, object]) -> None:
    path = tiny_gguf(tmp_path / "tiny.gguf", **variant)  # type: ignore[arg-type]
    theirs = GGUFReader(str(path))
    ours = read_header(path)
    arch = theirs.fields["general.architecture"].contents()
    assert ours.architecture == arch
    assert ours.general_name == theirs.fields["general.name"].contents()
    assert ours.context_length == theirs.fields[f"{arch}.context_length"].contents()
    assert ours.chat_template == theirs.fields["tokenizer.chat_template"].contents()
    assert ours.parameter_count == sum(int(t.n_elements) for t in theirs.tensors)
    assert (ours.bos_token, ours.eos_token) == (TOKENS[1], TOKENS[2])
    assert ours.pooling_type == variant.get("pooling")


SEEDS = [tiny_gguf_bytes(), tiny_gguf_bytes("bert", pooling=1), tiny_gguf_bytes(big_endian=True)]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A small valid GGUF with a few of its bytes overwritten, cut, or a count made huge."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["byte", "count", "cut"]))
        if action == "byte":
            data[at] = draw(st.integers(0, 255))
        elif action == "count":
            data[at : at + 8] = struct.pack("<Q", draw(st.sampled_from([ALL, 1 << 32, 1 << 20, 0])))
        else:
            del data[at:]
            break
    return bytes(data)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=damaged())
def test_a_damaged_header_is_read_or_refused_never_a_crash(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "damaged.gguf"
    path.write_bytes(data)
    with contextlib.suppress(InvalidRequest):
        read_header(path)
