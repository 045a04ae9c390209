"""How much the Ollama API costs over calling llama-cpp-python directly.

The same comparison as ``bench/overhead.py`` (same in-process baseline,
prompts, sampling, thread count, ABBA order; see its docstring), with the
server side driven through streamed ``POST /api/chat`` by the official
``ollama`` client: TTFT to the first non-empty ``message.content``, decode
speed from the final object's ``eval_count`` over the time from the first
token to the ``done`` line.

Usage, from the repository root::

    .venv/bin/python -m bench.ollama_overhead [--model smollm2:135m] [--threads 2]
        [--max-tokens 128] [--repeats 5] [--warmup 1]
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import ollama

from bench.overhead import SEED, Runner, Sample, main


@contextlib.contextmanager
def ollama_runner(base_url: str) -> Iterator[Runner]:
    client = ollama.Client(host=base_url, timeout=600)

    def run(model: str, messages: list[dict[str, str]], max_tokens: int) -> Sample:
        first: float | None = None
        end: float | None = None
        reason: str | None = None
        completion_tokens = 0
        prompt_tokens: int | None = None
        started = time.perf_counter()
        stream = client.chat(
            model=model,
            messages=messages,
            stream=True,
            options={"num_predict": max_tokens, "temperature": 0, "seed": SEED},
        )
        for chunk in stream:
            now = time.perf_counter()
            if first is None and chunk.message.content:
                first = now
            if chunk.done:
                end, reason = now, chunk.done_reason
                completion_tokens = chunk.eval_count or 0
                prompt_tokens = chunk.prompt_eval_count
        end = time.perf_counter() if end is None else end
        first = end if first is None else first
        return Sample(first - started, end - first, completion_tokens, prompt_tokens, reason)

    yield run


if __name__ == "__main__":
    sys.exit(main(runner=ollama_runner, module="bench.ollama_overhead"))
