"""Small GGUF files written with the ``gguf`` package: what a model's header looks like.

A header only: the tensors are a few bytes each. Used to seed the GGUF fuzzer
(``fuzz/gguf_header.py``) and by the tests of ``models/metadata.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFEndian, GGUFWriter, LlamaFileType, PoolingType

TOKENS = ["<unk>", "<s>", "</s>", "hello", "world"]
TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"


def tiny_gguf(
    path: Path, architecture: str = "llama", *, pooling: int | None = None, big_endian: bool = False
) -> Path:
    """A valid GGUF at ``path``: a chat model's header (an embedding model's with ``pooling``)."""
    order = GGUFEndian.BIG if big_endian else GGUFEndian.LITTLE
    writer = GGUFWriter(str(path), architecture, endianess=order)
    writer.add_name("tiny")
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_context_length(256)
    writer.add_embedding_length(8)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(TOKENS)
    writer.add_token_scores([0.0] * len(TOKENS))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(TEMPLATE)
    if pooling is not None:
        writer.add_pooling_type(PoolingType(pooling))
    writer.add_tensor("token_embd.weight", np.zeros((len(TOKENS), 8), dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_gguf_bytes(
    architecture: str = "llama", *, pooling: int | None = None, big_endian: bool = False
) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = tiny_gguf(Path(folder) / "tiny.gguf", architecture, pooling=pooling,
                         big_endian=big_endian)  # fmt: skip
        return path.read_bytes()
