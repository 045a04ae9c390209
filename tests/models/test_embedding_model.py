"""The bundled embedding model, all-minilm:l6-v2: its conversion, and its vectors over HTTP.

The reference vectors (``tests/data/minilm_reference.json``) were computed
once by the real sentence-transformers library (``scripts/minilm_reference.py``);
BlackRoad's, from the GGUF ``scripts/dev.py`` converted, must point the same way.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ollama
import openai
import pytest

from blackroad.models.bert_gguf import (
    PHANTOM_SPACE,
    pooling_type,
    read_safetensors,
    wordpiece_vocabulary,
)
from blackroad.models.bundled import bundled_models
from blackroad.models.metadata import read_metadata
from tests.conftest import MINILM
from tests.support.server import Server

REFERENCE_FILE = Path(__file__).parent.parent / "data" / "minilm_reference.json"
REFERENCE = json.loads(REFERENCE_FILE.read_text())
SENTENCES: list[dict[str, Any]] = REFERENCE["sentences"]
TEXTS = [s["text"] for s in SENTENCES]
WINDOW = REFERENCE["max_seq_length"]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def assert_same_up_to_rounding(batched: Sequence[float], alone: Sequence[float]) -> None:
    """A text's vector from a batch against its vector alone: equal up to rounding.

    A batch multiplies the f16 weights in other shapes (other kernels, other
    summation orders): measured 8.8e-6 apart at most on a CPU with AVX-512,
    7.3e-5 without, cosine 0.9999999 either way. The bounds leave room for other
    CPUs and still catch another text's vector (two reference sentences: 0.76 at most).
    """
    assert cosine(batched, alone) >= 0.99999
    assert list(batched) == pytest.approx(list(alone), abs=1e-3)


def assert_matches_reference(vectors: Sequence[Sequence[float]]) -> None:
    assert len(vectors) == len(SENTENCES)
    for vector, sentence in zip(vectors, SENTENCES, strict=True):
        assert len(vector) == 384
        assert cosine(vector, sentence["vector"]) >= 0.99, sentence["text"]


@pytest.fixture(scope="module")
def ol(server: Server) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url, timeout=300) as client:
        yield client


# -- the conversion ----------------------------------------------------------------


def _tokenizer(vocab: dict[str, int], special: Sequence[str]) -> dict[str, Any]:
    return {
        "model": {"type": "WordPiece", "continuing_subword_prefix": "##", "vocab": vocab},
        "added_tokens": [{"content": t, "id": vocab[t], "special": True} for t in special],
    }


def test_wordpiece_pieces_become_phantom_space_words_and_bare_continuations() -> None:
    import gguf

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "de": 3, "##ja": 4, "vu": 5, "##": 6, "[x]": 7}
    converted = wordpiece_vocabulary(_tokenizer(vocab, ["[PAD]", "[CLS]", "[SEP]"]))
    assert converted.tokens == [
        "[PAD]", "[CLS]", "[SEP]", f"{PHANTOM_SPACE}de", "ja", f"{PHANTOM_SPACE}vu",
        f"{PHANTOM_SPACE}##", f"{PHANTOM_SPACE}[x]",
    ]  # fmt: skip
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    assert converted.types == [control] * 3 + [normal] * 5  # "[x]" is no added special token
    assert converted.special == {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2}


@pytest.mark.parametrize(
    ("tokenizer", "why"),
    [
        pytest.param({"model": {"type": "BPE", "vocab": {}}}, "not WordPiece", id="bpe"),
        pytest.param(_tokenizer({"a": 0, "b": 2}, []), "0..n-1", id="gap-in-ids"),
        # "▁x" as a word and as a continuation "##▁x" would be one text in llama.cpp.
        pytest.param(_tokenizer({"x": 0, f"##{PHANTOM_SPACE}x": 1}, []), "same text", id="clash"),
    ],
)
def test_vocabularies_llama_cpp_cannot_serve_are_refused(tokenizer: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        wordpiece_vocabulary(tokenizer)


def test_pooling_modes() -> None:
    import gguf

    assert pooling_type({"pooling_mode_mean_tokens": True}) == gguf.PoolingType.MEAN
    assert pooling_type({"pooling_mode_cls_token": True, "include_prompt": True}) == (
        gguf.PoolingType.CLS
    )
    with pytest.raises(ValueError, match=r"no llama\.cpp equivalent"):
        pooling_type({"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match=r"no llama\.cpp equivalent"):
        pooling_type({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True})


def test_read_safetensors() -> None:
    matrix = np.arange(6, dtype="<f4").reshape(2, 3)
    ids = np.array([[7, 8]], dtype="<i8")
    header: dict[str, dict[str, Any]] = {
        "__metadata__": {"format": "pt"},
        "m": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "ids": {"dtype": "I64", "shape": [1, 2], "data_offsets": [24, 40]},
    }
    encoded = json.dumps(header).encode()
    data = struct.pack("<Q", len(encoded)) + encoded + matrix.tobytes() + ids.tobytes()
    tensors = read_safetensors(data)
    assert set(tensors) == {"m", "ids"}
    assert tensors["m"].tolist() == matrix.tolist() and tensors["ids"].tolist() == [[7, 8]]
    header["m"]["dtype"] = "BF16"
    encoded = json.dumps(header).encode()
    with pytest.raises(ValueError, match="BF16"):
        read_safetensors(struct.pack("<Q", len(encoded)) + encoded + bytes(40))


def test_the_bundled_gguf_declares_what_llama_cpp_needs() -> None:
    meta = read_metadata(bundled_models()[MINILM])
    assert (meta.architecture, meta.general_name) == ("bert", "all-MiniLM-L6-v2")
    assert (meta.context_length, meta.embedding_length) == (WINDOW, 384)
    assert meta.pooling_type == 1 and meta.embedding_only  # mean, as 1_Pooling/config.json says
    assert meta.quantization == "F16"


def test_llama_cpp_tokenizes_like_the_reference_tokenizer() -> None:
    from llama_cpp import Llama

    vocab = Llama(str(bundled_models()[MINILM]), vocab_only=True, verbose=False)
    try:
        for sentence in [*SENTENCES, REFERENCE["truncated"]]:
            ids = vocab.tokenize(sentence["text"].encode())
            assert ids == sentence["token_ids"], sentence["text"]
    finally:
        vocab.close()


# -- served --------------------------------------------------------------------------


def test_openai_embeddings_match_sentence_transformers(server: Server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
    singles = [client.embeddings.create(model=MINILM, input=text) for text in TEXTS]
    assert_matches_reference([single.data[0].embedding for single in singles])
    assert [s.usage.prompt_tokens for s in singles] == [len(s["token_ids"]) for s in SENTENCES]

    batch = client.embeddings.create(model=MINILM, input=TEXTS)
    assert [d.index for d in batch.data] == list(range(len(TEXTS)))
    for together, alone in zip(batch.data, singles, strict=True):
        assert_same_up_to_rounding(together.embedding, alone.data[0].embedding)


def test_ollama_embed_matches_sentence_transformers(ol: ollama.Client) -> None:
    result = ol.embed(model=MINILM, input=TEXTS)
    assert_matches_reference(result.embeddings)
    assert result.prompt_eval_count == sum(len(s["token_ids"]) for s in SENTENCES)
    legacy = ol.embeddings(model=MINILM, prompt=TEXTS[0])
    # The legacy route and /api/embed read one text in the same shape: the same vector.
    assert list(legacy.embedding) == ol.embed(model=MINILM, input=TEXTS[0]).embeddings[0]
    assert_same_up_to_rounding(result.embeddings[0], legacy.embedding)


def test_longer_than_the_window_is_truncated_or_refused(server: Server, ol: ollama.Client) -> None:
    long = REFERENCE["truncated"]
    assert len(long["token_ids"]) > WINDOW
    cut = ol.embed(model=MINILM, input=long["text"])  # Ollama truncates by default
    assert cut.prompt_eval_count == WINDOW
    assert cosine(cut.embeddings[0], long["vector"]) >= 0.99
    with pytest.raises(ollama.ResponseError) as refused:
        ol.embed(model=MINILM, input=long["text"], truncate=False)
    assert refused.value.status_code == 400 and str(WINDOW) in refused.value.error
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model=MINILM, input=long["text"])
    assert str(WINDOW) in too_long.value.message


def test_text_generation_is_refused_with_400(server: Server, ol: ollama.Client) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
    hello = [{"role": "user", "content": "Hello"}]
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model=MINILM, messages=hello)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as completion:
        client.completions.create(model=MINILM, prompt="Hello")
    for refused in (chat.value, completion.value):
        assert refused.status_code == 400 and "is an embedding model" in refused.message
        assert isinstance(refused.body, dict) and refused.body["param"] == "model"
    for generate in (
        lambda: ol.chat(model=MINILM, messages=hello),
        lambda: ol.generate(model=MINILM, prompt="Hello"),
    ):
        with pytest.raises(ollama.ResponseError) as ollama_refused:
            generate()
        assert ollama_refused.value.status_code == 400
        assert ollama_refused.value.error.startswith(f'"{MINILM}" does not support generate')
    # An empty prompt only loads the model, as placement asks a node to (Ollama refuses this too).
    assert ol.generate(model=MINILM, prompt="").done_reason == "load"
    assert server.alive()


def test_listed_and_shown_as_an_embedding_model(server: Server, ol: ollama.Client) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
    assert MINILM in {m.id for m in client.models.list()}
    tags = {m.model: m for m in ol.list().models}
    details = tags[MINILM].details
    assert details is not None and (details.family, details.format) == ("bert", "gguf")
    shown = httpx.post(f"{server.url}/api/show", json={"model": MINILM}, timeout=60).json()
    assert shown["capabilities"] == ["embedding"]
    assert shown["template"] == "" and "stop" not in shown["parameters"]
    info = shown["model_info"]
    assert info["general.architecture"] == "bert"
    assert (info["bert.context_length"], info["bert.embedding_length"]) == (WINDOW, 384)
    assert info["bert.pooling_type"] == 1
