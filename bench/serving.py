"""Serving under load: BlackRoad against llama-server and llama-cpp-python's server.

One run measures three servers with the same model (a bundled GGUF), the same
thread count and the same requests, one server at a time, never two at once
(see ``bench/peers.py`` for how each is built and started):

- **BlackRoad**: ``blackroad up``, temporary home, ``BLACKROAD_NUM_THREADS``
  ``--threads``, ``BLACKROAD_NUM_PARALLEL`` and ``BLACKROAD_NUM_CACHED``
  ``--parallel``, ``BLACKROAD_NUM_CTX`` ``--ctx`` (per sequence);
- **llama-server** (llama.cpp, the version llama-cpp-python vendors):
  ``-t``/``-tb`` ``--threads``, ``-np`` ``--parallel``, ``-c`` ``--ctx``
  times ``--parallel`` (its slots share one context), its defaults otherwise
  (continuous batching and prompt caching on);
- **llama-cpp-python**: ``python -m llama_cpp.server`` with ``--n_ctx``
  ``--ctx``, ``--n_threads``/``--n_threads_batch`` ``--threads`` and
  ``--interrupt_requests False`` (by default a new request cuts the stream
  being served short, which would leave concurrent streams empty), its
  defaults otherwise: one ``Llama``, one request at a time, the others
  waiting their turn; its state (the previous prompt's KV cache) is reused
  when the next prompt starts the same.

Each repetition starts every server fresh, in the order BlackRoad,
llama-server, llama-cpp-python (reversed on odd repetitions, so drift in the
machine's speed spreads over all), sends it one unmeasured warm-up request
(it loads the model), then these workloads, all streamed
``/v1/chat/completions`` read with the official ``openai`` ``AsyncOpenAI``
client (``max_retries=0``; a new connection per request, as llama-server
closes idle ones after 5 s and a request racing that close fails), with
temperature 0, ``stream_options.include_usage`` and ``repeat_penalty`` 1.0
(a llama.cpp extension all three accept: llama-cpp-python's server would
otherwise apply 1.1, which derails counting and makes its streams stop
early; the others apply none by default):

- **1, 4 and 8 concurrent streams**, all sent at once: stream *i* asks
  "List the numbers from *a* to *a* + 300, separated by commas." with its
  own *a* (100 times the number of streams, plus 11 times the stream's
  index, plus 1), so that no two prompts of a run are the same past the
  template's header; every server gets the same prompts in the same order,
  ``max_tokens`` ``--max-tokens``.
  Per stream: TTFT, from just before the request is sent to the first chunk
  with text; decode tok/s, (completion tokens - 1) / (time of the last chunk
  with text - time of the first). Completion tokens are the ``usage`` the
  server reports, or, where it reports none, the number of chunks with text.
  Per workload: **aggregate decode tok/s** = the sum over streams of
  (completion tokens - 1), over the wall time from the earliest first token
  to the latest last token (so 1 stream's aggregate is its own decode rate;
  a server that serves streams one after another is charged for the waits in
  between); per-stream decode tok/s min and max and their ratio; TTFT p50
  and p95 over the streams (linear interpolation).
- **Interleaved multi-turn**: four two-turn chats A, B, C, D, each with its
  own system prompt of about 1,000 tokens (sentences drawn at random from
  fixed word lists, seeded by the conversation and the repetition, counted
  with the model's own tokenizer), sent one at a time, each after the
  previous one has finished, in the order A1 B1 C1 D1 A2 B2 C2 D2, with
  ``max_tokens`` 16. A second turn is the first turn's messages, the
  assistant's reply and a new user message. Reported: the median TTFT of
  the second turns, of the first turns, and their ratio. A server that keeps
  only its last state must reprocess A's system prompt for A2, since B1, C1
  and D1 came in between; one that keeps several conversations does not.

With ``--repeats`` above 1 every figure is the median of the repetitions'
figures. The ratios printed last compare BlackRoad with the peers against the
targets of issue 6: 1 stream decode >= 0.97x llama-server; 8 streams
aggregate >= 1.0x llama-server and >= 2x llama-cpp-python; per-stream
max/min <= 1.5 (4 and 8 streams); second-turn TTFT <= 0.15x first-turn.

Every stream is checked: an error makes the run INVALID (exit status 1, the
tail of that server's log printed), and a stream that ends before
``--max-tokens`` is reported, as its decode figure covers fewer tokens. The
counting streams' texts are compared across servers (temperature 0: they
should agree, though batching may change a rounding here and there). The
load from other processes (``/proc``, as in ``bench/overhead.py``) is
printed per server and workload; above 0.05 cores the figures are disturbed.

Usage, from the repository root::

    .venv/bin/python -m bench.serving [--model smollm2:135m] [--threads 2]
        [--parallel 8] [--ctx 4096] [--max-tokens 128] [--repeats 2]
        [--skip-llama-server] [--skip-llama-cpp-python]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import openai

from bench import peers
from bench.overhead import OTHER_LOAD_WARNING, CpuMeter, CpuTimes, cpu_count, cpu_model, median
from bench.serving_report import (
    STREAMS,
    Concurrent,
    Interleaved,
    ServerRun,
    Stream,
    agreement,
    ratios,
    report,
    run_lines,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

CONVERSATIONS = "ABCD"
SYSTEM_TOKENS = 1000  # the least each interleaved conversation's system prompt has
TURN_TOKENS = 16  # max_tokens of the interleaved chats
WARMUP = "Say hello."
FIRST_TURN = "Summarize your notes in one sentence."
SECOND_TURN = "Now give your notes a short title."

WORDS = {
    "adjective": "quiet narrow golden ancient busy patient crooked silver careful distant "
    "gentle stubborn hollow bright heavy tiny northern wooden restless curious",
    "noun": "lantern harbour map letter window garden bridge river market tower compass "
    "ledger kettle orchard anchor workshop archive meadow signal ferry",
    "verb": "repairs measures carries paints follows counts guards sketches polishes "
    "describes lifts records hides opens studies",
    "place": "near the old pier|behind the school|under the station clock|beside the mill|"
    "across the valley|at the edge of town|inside the museum|along the canal",
    "clause": "because the season is changing|while the tide goes out|before anyone wakes up|"
    "as the rain begins|after the long winter|whenever the bell rings|as it did last year",
}
TOPICS = {
    "A": "a lighthouse on a northern island",
    "B": "a bakery in a harbour town",
    "C": "a bridge being built over a wide river",
    "D": "the plants of a high mountain pass",
}


def count_prompt(streams: int, index: int) -> str:
    """The counting prompt of one stream: its own start, the same on every server.

    Starts stay below 900: smollm2:135m counts three-digit numbers reliably but
    often stops after one four-digit one.
    """
    start = 100 * streams + 11 * index + 1
    return f"List the numbers from {start} to {start + 300}, separated by commas."


def system_prompt(name: str, repeat: int, count: Callable[[str], int]) -> str:
    """Conversation ``name``'s system prompt: distinct sentences, at least SYSTEM_TOKENS tokens."""
    rng = random.Random(f"{name} {repeat}")
    words = {kind: text.split("|" if "|" in text else None) for kind, text in WORDS.items()}
    sentences = [
        f"You are assistant {name}{repeat}, who keeps notes about {TOPICS[name]}. "
        "Answer every question from these notes."
    ]
    while count(" ".join(sentences)) < SYSTEM_TOKENS:
        pick = {kind: rng.choice(choices) for kind, choices in words.items()}
        other = rng.choice(words["noun"])
        sentences.append(
            f"The {pick['adjective']} {pick['noun']} {pick['verb']} the {other} "
            f"{pick['place']} {pick['clause']}."
        )
    return " ".join(sentences)


def messages(*turns: tuple[str, str]) -> list[ChatCompletionMessageParam]:
    """Chat messages from (role, content) pairs."""
    out: list[ChatCompletionMessageParam] = []
    for role, content in turns:
        if role == "system":
            out.append({"role": "system", "content": content})
        elif role == "assistant":
            out.append({"role": "assistant", "content": content})
        else:
            out.append({"role": "user", "content": content})
    return out


async def stream_chat(
    client: openai.AsyncOpenAI,
    model: str,
    chat: list[ChatCompletionMessageParam],
    max_tokens: int,
) -> Stream:
    """One streamed chat completion, timed from just before it is sent."""
    first: float | None = None
    last: float | None = None
    chunks = 0
    usage: int | None = None
    prompt_tokens: int | None = None
    reason: str | None = None
    text: list[str] = []
    sent = time.perf_counter()
    stream = await client.chat.completions.create(
        model=model,
        messages=chat,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"repeat_penalty": 1.0},
    )
    async with stream:
        async for chunk in stream:
            now = time.perf_counter()
            for choice in chunk.choices:
                if choice.delta.content:
                    chunks += 1
                    text.append(choice.delta.content)
                    first = now if first is None else first
                    last = now
                if choice.finish_reason is not None:
                    reason = choice.finish_reason
            if chunk.usage is not None:
                usage, prompt_tokens = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
    tokens = chunks if usage is None else usage
    return Stream(
        sent, first, last, tokens, usage is not None, prompt_tokens, reason, "".join(text)
    )


def failure(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    name = f"HTTP {status}" if status is not None else type(exc).__name__
    return f"{name}: {detail}" if detail else name


class Runner:
    """Runs the workloads against one server, recording results and problems in ``run``."""

    def __init__(self, peer: peers.Peer, model: str, args: argparse.Namespace) -> None:
        self.peer = peer
        self.model = model
        self.args = args
        self.run = ServerRun(peer.name)
        # A new connection per request: llama-server closes connections idle for 5 s,
        # and a request sent on one it is closing fails. The same for every server.
        self.client = openai.AsyncOpenAI(
            base_url=f"{peer.url}/v1",
            api_key="unused",
            max_retries=0,
            timeout=600,
            default_headers={"Connection": "close"},
        )

    def check(self, label: str, stream: Stream, max_tokens: int) -> None:
        self.run.usage = self.run.usage or stream.usage
        if stream.first is None:
            self.run.errors.append(
                f"{label}: no text at all (finish_reason {stream.finish_reason})"
            )
        elif stream.tokens < max_tokens:
            self.run.short.append(
                f"{label}: finish_reason {stream.finish_reason!r} after {stream.tokens} of "
                f"{max_tokens} tokens"
            )

    async def concurrent(self, n: int) -> Concurrent | None:
        chats = [messages(("user", count_prompt(n, i))) for i in range(n)]
        results = await asyncio.gather(
            *(stream_chat(self.client, self.model, c, self.args.max_tokens) for c in chats),
            return_exceptions=True,
        )
        streams: list[Stream] = []
        for index, result in enumerate(results):
            label = f"{n} streams, stream {index + 1}"
            if isinstance(result, BaseException):
                self.run.errors.append(f"{label}: {failure(result)}")
                continue
            self.check(label, result, self.args.max_tokens)
            streams.append(result)
        return Concurrent(streams) if len(streams) == n else None

    async def interleaved(self, repeat: int, count: Callable[[str], int]) -> Interleaved | None:
        chats = {
            name: messages(("system", system_prompt(name, repeat, count)), ("user", FIRST_TURN))
            for name in CONVERSATIONS
        }
        turns: dict[str, list[Stream]] = {"1": [], "2": []}
        for turn in ("1", "2"):
            for name in CONVERSATIONS:
                try:
                    stream = await stream_chat(self.client, self.model, chats[name], TURN_TOKENS)
                except openai.OpenAIError as exc:
                    self.run.errors.append(f"interleaved {name}{turn}: {failure(exc)}")
                    return None
                self.check(f"interleaved {name}{turn}", stream, 1)
                turns[turn].append(stream)
                if turn == "1":
                    reply = messages(("assistant", stream.text), ("user", SECOND_TURN))
                    chats[name] = [*chats[name], *reply]
        return Interleaved(turns["1"], turns["2"])

    async def all(self, repeat: int, count: Callable[[str], int]) -> ServerRun:
        """Warm-up, then every workload, in order; the figures and problems in ``self.run``."""
        meter = CpuMeter(self.peer.pid)
        try:
            try:
                warm = await stream_chat(self.client, self.model, messages(("user", WARMUP)), 8)
            except openai.OpenAIError as exc:
                self.run.errors.append(f"warm-up: {failure(exc)}")
                return self.run
            self.check("warm-up", warm, 1)
            for n in STREAMS:
                before = meter.now()
                result = await self.concurrent(n)
                self.note_load(str(n), before, meter.now())
                if result is not None:
                    self.run.concurrent[n] = result
            before = meter.now()
            self.run.interleaved = await self.interleaved(repeat, count)
            self.note_load("turns", before, meter.now())
        finally:
            await self.client.close()
        return self.run

    def note_load(self, workload: str, before: CpuTimes, after: CpuTimes) -> None:
        """Record the CPU used by processes other than the bench and this server, in cores."""
        machine = (before.machine, after.machine)
        server = (before.server, after.server)
        if machine[0] is None or machine[1] is None or server[0] is None or server[1] is None:
            return
        used = (after.bench - before.bench) + (server[1] - server[0])
        # /proc figures tick at 1/CLK_TCK s, so small negatives are rounding.
        busy = machine[1] - machine[0]
        self.run.other_cores[workload] = max(0.0, busy - used) / (after.wall - before.wall)


def tokenizer(model: Path) -> Callable[[str], int]:
    """Count tokens of a text with the model's own vocabulary (no weights loaded)."""
    from llama_cpp import Llama

    # llama.cpp logs its context setup to fd 2 even with verbose=False.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            vocab = Llama(str(model), vocab_only=True, verbose=False)
    finally:
        os.dup2(saved, 2)
        os.close(saved)

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=False))

    return count


def log_tail(log: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return f"(no log at {log})"


@contextlib.contextmanager
def started(
    name: str, args: argparse.Namespace, path: Path, binary: Path | None, logs: Path
) -> Iterator[peers.Peer]:
    if name == "BlackRoad":
        with peers.blackroad(args.threads, args.parallel, args.ctx) as peer:
            yield peer
    elif name == "llama-server":
        assert binary is not None
        with peers.llama_server(binary, path, args.threads, args.parallel, args.ctx, logs) as peer:
            yield peer
    else:
        with peers.llama_cpp_python(path, args.threads, args.ctx, logs) as peer:
            yield peer


def measure(
    names: list[str], args: argparse.Namespace, path: Path, binary: Path | None
) -> dict[str, list[ServerRun]]:
    count = tokenizer(path)
    lengths = [count(system_prompt(n, 0, count)) for n in CONVERSATIONS]
    print(f"interleaved system prompts (repetition 1): {lengths} tokens")
    results: dict[str, list[ServerRun]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="blackroad-serving-") as tmp:
        for repeat in range(args.repeats):
            order = names if repeat % 2 == 0 else names[::-1]
            for name in order:
                print(f"repetition {repeat + 1}: {name} ...", flush=True)
                with started(name, args, path, binary, Path(tmp)) as peer:
                    run = asyncio.run(Runner(peer, args.model, args).all(repeat, count))
                    if run.errors:
                        print(f"  end of {name}'s log ({peer.log}):\n{log_tail(peer.log)}")
                print(run_lines(run), flush=True)
                results[name].append(run)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="smollm2:135m", help="a bundled model name")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads, every server")
    parser.add_argument("--parallel", type=int, default=8, help="sequences decoded together")
    parser.add_argument("--ctx", type=int, default=4096, help="context per sequence")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per counting stream")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions (medians if > 1)")
    parser.add_argument("--skip-llama-server", action="store_true", help="do not build or run it")
    parser.add_argument(
        "--skip-llama-cpp-python", action="store_true", help="do not run llama_cpp.server"
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.parallel < max(STREAMS) or args.max_tokens < 2:
        parser.error(f"need --threads >= 1, --parallel >= {max(STREAMS)}, --max-tokens >= 2")
    if args.repeats < 1 or args.ctx < 2 * SYSTEM_TOKENS:
        parser.error(f"need --repeats >= 1, --ctx >= {2 * SYSTEM_TOKENS}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the comparison: 0 when every request succeeded, 1 otherwise, 2 on bad arguments."""
    args = parse_args(argv)
    from blackroad.models.bundled import bundled_models

    models = bundled_models()
    if args.model not in models:
        print(
            f"unknown model {args.model!r}; bundled: {', '.join(sorted(models))}", file=sys.stderr
        )
        return 2
    path = models[args.model]
    missing = [] if args.skip_llama_cpp_python else peers.missing_server_packages()
    if missing:
        print(
            f"llama_cpp.server needs {', '.join(missing)}: run  .venv/bin/pip install -e '.[bench]'"
            "  (or pass --skip-llama-cpp-python)",
            file=sys.stderr,
        )
        return 2

    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    entry = ["-m", "bench.serving"] if __spec__ is not None else [sys.argv[0]]
    command = shlex.join([str(python), *entry, *(sys.argv[1:] if argv is None else argv)])
    print(f"command:  {command}")
    print(f"cpu:      {cpu_model()} ({cpu_count()} usable cores)")
    print(f"model:    {args.model} ({path})")
    print(
        f"settings: {args.threads} threads, {args.parallel} parallel sequences "
        f"(BlackRoad: as many cached), {args.ctx} context per sequence, llama-cpp-python "
        f"{peers.llama_cpp_version()}"
    )
    print(
        f"load:     {'/'.join(map(str, STREAMS))} concurrent streams of {args.max_tokens} tokens; "
        f"interleaved turns A1..D1 A2..D2 of {TURN_TOKENS} tokens; {args.repeats} repetitions"
    )
    binary = None
    if not args.skip_llama_server:
        binary = peers.build_llama_server(cpu_count())
        print(f"llama-server: {binary}")
    names = ["BlackRoad"]
    names += [] if args.skip_llama_server else ["llama-server"]
    names += [] if args.skip_llama_cpp_python else ["llama-cpp-python"]

    results = measure(names, args, path, binary)
    table = report(results, args.repeats)
    ratios(table)
    agreement(results)
    runs = [run for server in results.values() for run in server]
    others = [c for run in runs for c in run.other_cores.values()]
    sys.stdout.flush()
    if others and max(others) > OTHER_LOAD_WARNING:
        print(
            f"warning: other processes used up to {max(others):.2f} cores during measured "
            f"workloads (median {median(others):.2f}); the figures are disturbed",
            file=sys.stderr,
        )
    errors = [f"{run.name}: {e}" for run in runs for e in run.errors]
    if errors:
        print(f"verdict: INVALID, {len(errors)} requests failed:", *errors, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
