"""Two greedy generations compared token for token: the server reads their prompt first.

llama.cpp's logits for a prompt depend on the batch shapes that read it: whole,
in chunks after a cached prefix, or (once the server's prefix cache holds all of
it) its last token alone. Between those shapes the logits of smollm2 and gemma3
(llama-cpp-python 0.3.36, CPUs with and without AVX-512) move by up to 0.6 among
the 50 likeliest tokens, so at temperature 0 a small model now and then takes
the other of two near-tied tokens: a first request and a second with the same
prompt may differ (llama-server documents the same of its prompt cache). Once
one request has read the prompt, each later one reads only its last token after
the cached rest, in the same shape, and their texts must match.
"""

from __future__ import annotations

from typing import Any

import ollama
import openai


def read_prompt(client: openai.OpenAI, **request: Any) -> None:
    """Has the server read the prompt of chat completion ``request`` (one token generated)."""
    client.chat.completions.create(**{**request, "stream": False, "max_tokens": 1})


def read_ollama_prompt(client: ollama.Client, endpoint: str, **request: Any) -> None:
    """Has the server read the prompt of an Ollama ``generate`` or ``chat`` ``request``."""
    options = {**(request.get("options") or {}), "num_predict": 1}
    getattr(client, endpoint)(**{**request, "options": options, "stream": False})
