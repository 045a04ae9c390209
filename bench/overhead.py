"""How much the server costs over calling llama-cpp-python directly.

One run measures the same model, prompt, sampling and thread count two ways:

- **in-process**: a ``llama_cpp.Llama`` built in this process with the engine's
  parameters (``n_ctx`` capped by the model, ``n_batch``, ``n_threads`` and
  ``n_threads_batch``, ``verbose=False``), fed the prompt the engine would
  feed it: the chat template of ``blackroad.models.templates`` rendered to
  text, tokenized the engine's way, then ``Llama.generate()`` with the
  sampling the server uses for the request (``SamplingParams`` defaults plus
  temperature 0 and the seed). ``generate()`` rather than
  ``create_completion()`` because it is what the engine calls:
  ``create_completion()`` adds its own per-token Python work (stop-string
  scanning, logprob plumbing, dict building) that would flatter the server.
  Each token is turned into text (``detokenize`` plus an incremental UTF-8
  decoder), the least a streaming caller must do. The clock starts before
  tokenization, the template having been rendered outside it.
- **server**: a ``blackroad up`` process on 127.0.0.1 with a temporary
  ``BLACKROAD_HOME`` and ``BLACKROAD_NUM_THREADS``, asked with the official
  ``openai`` client for a streamed ``/v1/chat/completions`` with the same
  messages, ``max_tokens``, temperature 0 and seed. The clock starts before
  the request is sent.

TTFT runs from the start to the first non-empty piece of text. Decode speed
is (completion tokens - 1) / (end - first token), where the end is the end of
generation: the generator closed in-process, the chunk carrying
``finish_reason`` over HTTP; the server's count is the ``usage`` it reports
(``stream_options.include_usage``).

Prefix cache: llama-cpp-python reuses the KV cache for the part of a prompt
that matches the previous one, on both sides. Every generation (warm-ups
included) gets its own prompt, whose first message starts with a counter, and
both sides are given the same sequence of prompts, so each side's cache holds
the previous prompt of the same sequence and reuses the same few template
tokens before the counter: prompt evaluation is (almost) cold and equal on
both sides.

Runs alternate in ABBA order (in-process first on even repetitions, server
first on odd ones) so that drift in machine speed cancels out, and never
overlap: the server's model stays loaded but idle while the in-process
baseline runs, and the in-process model is idle while the server works.

Usage, from the repository root::

    .venv/bin/python -m bench.overhead [--model smollm2:135m] [--threads 2]
        [--max-tokens 128] [--repeats 5] [--warmup 1]
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from blackroad.models.templates import ChatTemplate

ROOT = Path(__file__).resolve().parents[1]

SEED = 1234
DECODE_TARGET = 0.97  # server decode speed / in-process decode speed, at least
TTFT_TARGET_MS = 10.0  # server TTFT - in-process TTFT, at most
OTHER_LOAD_WARNING = 0.05  # cores used by other processes that make a run suspect

SYSTEM = "You are a novelist who writes long, detailed stories and never stops early."
USER = (
    "Write a very long story, at least two thousand words, about a lighthouse keeper "
    "who finds a mysterious map inside a bottle. Describe every place, every person "
    "and every conversation in great detail."
)


@dataclass(frozen=True)
class Sample:
    """One generation, timed."""

    ttft_s: float
    decode_s: float  # from the first token to the end of generation
    completion_tokens: int
    prompt_tokens: int | None
    finish_reason: str | None

    @property
    def ttft_ms(self) -> float:
        return self.ttft_s * 1000

    @property
    def decode_tps(self) -> float:
        if self.completion_tokens < 2 or self.decode_s <= 0:
            return float("nan")
        return (self.completion_tokens - 1) / self.decode_s


def messages_for(run: str) -> list[dict[str, str]]:
    """The conversation of one generation; ``run`` leads it to defeat prefix caching."""
    return [
        {"role": "system", "content": f"[{run}] {SYSTEM}"},
        {"role": "user", "content": USER},
    ]


class Baseline:
    """llama-cpp-python called directly, as the embedded engine calls it."""

    def __init__(self, path: Path, template: ChatTemplate, threads: int) -> None:
        from llama_cpp import Llama

        from blackroad.config import Settings
        from blackroad.models.metadata import read_metadata

        settings = Settings()
        context_length = read_metadata(path).context_length
        self.template = template
        self.llama: Any = Llama(
            str(path),
            n_ctx=min(settings.num_ctx, context_length or settings.num_ctx),
            n_batch=settings.num_batch,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    def close(self) -> None:
        self.llama.close()

    def run(self, messages: list[dict[str, str]], max_tokens: int) -> Sample:
        import llama_cpp

        from blackroad.engines.base import SamplingParams
        from blackroad.engines.llamacpp import generate_options, tokenize_prompt

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=SEED)
        llama = self.llama
        vocab = llama._model.vocab
        prompt = self.template.render(messages)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        produced = 0
        reason = "length"
        first: float | None = None

        started = time.perf_counter()
        tokens = tokenize_prompt(llama._model, prompt)
        llama.set_seed(SEED)
        generator = llama.generate(tokens, **generate_options(params))
        try:
            for token in generator:
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    reason = "stop"
                    break
                produced += 1
                text = decoder.decode(llama.detokenize([token]))
                if first is None and text:
                    first = time.perf_counter()
                if produced >= max_tokens:
                    break
        finally:
            generator.close()
        decoder.decode(b"", final=True)
        end = time.perf_counter()
        first = end if first is None else first
        return Sample(first - started, end - first, produced, len(tokens), reason)


Runner = Callable[[str, list[dict[str, str]], int], Sample]


@contextlib.contextmanager
def openai_runner(base_url: str) -> Iterator[Runner]:
    """Streamed ``/v1/chat/completions`` with the official ``openai`` client."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=600)

    def run(model: str, messages: list[dict[str, str]], max_tokens: int) -> Sample:
        chat: list[ChatCompletionMessageParam] = messages  # type: ignore[assignment]
        first: float | None = None
        end: float | None = None
        reason: str | None = None
        completion_tokens = 0
        prompt_tokens: int | None = None

        started = time.perf_counter()
        stream = client.chat.completions.create(
            model=model,
            messages=chat,
            max_tokens=max_tokens,
            temperature=0,
            seed=SEED,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                now = time.perf_counter()
                for choice in chunk.choices:
                    if first is None and choice.delta.content:
                        first = now
                    if choice.finish_reason is not None:
                        reason, end = choice.finish_reason, now
                if chunk.usage is not None:
                    completion_tokens = chunk.usage.completion_tokens
                    prompt_tokens = chunk.usage.prompt_tokens
        done = time.perf_counter()
        end = done if end is None else end
        first = end if first is None else first
        return Sample(first - started, end - first, completion_tokens, prompt_tokens, reason)

    try:
        yield run
    finally:
        client.close()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds used so far: the whole machine (busy), this process, the server."""

    wall: float
    machine: float | None
    bench: float
    server: float | None


class CpuMeter:
    """CPU accounting from /proc (Linux); the machine and server figures are None elsewhere."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _machine(self) -> float | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
            # cpu user nice system idle iowait irq softirq steal ...
            user, nice, system, _, _, irq, softirq, steal = map(int, fields[1:9])
            return (user + nice + system + irq + softirq + steal) / self.tick
        return None

    def _server(self) -> float | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{self.server_pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            return (int(fields[11]) + int(fields[12])) / self.tick
        return None

    def now(self) -> CpuTimes:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return CpuTimes(
            time.perf_counter(), self._machine(), usage.ru_utime + usage.ru_stime, self._server()
        )


@dataclass(frozen=True)
class Measured:
    """A sample plus the CPU time spent while it ran."""

    side: str
    sample: Sample
    bench_cpu_s: float
    server_cpu_s: float | None
    other_cores: float | None  # CPU used by other processes, in cores, on average

    @classmethod
    def between(cls, side: str, sample: Sample, before: CpuTimes, after: CpuTimes) -> Measured:
        bench = after.bench - before.bench
        server = None
        if after.server is not None and before.server is not None:
            server = after.server - before.server
        other = None
        if after.machine is not None and before.machine is not None and server is not None:
            # /proc figures tick at 1/CLK_TCK s, so small negatives are rounding.
            busy = after.machine - before.machine
            other = max(0.0, busy - bench - server) / (after.wall - before.wall)
        return cls(side, sample, bench, server, other)

    @property
    def cpu_ms_per_token(self) -> float:
        """CPU time of this process and the server per generated token."""
        total = self.bench_cpu_s + (self.server_cpu_s or 0.0)
        return total * 1000 / max(1, self.sample.completion_tokens)

    def line(self, label: str) -> str:
        s = self.sample
        other = "n/a" if self.other_cores is None else f"{self.other_cores:.2f}"
        return (
            f"  {label:<10} {self.side:<10}  TTFT {s.ttft_ms:7.1f} ms  "
            f"decode {s.decode_tps:6.1f} tok/s  {s.prompt_tokens}+{s.completion_tokens} tokens  "
            f"cpu {self.cpu_ms_per_token:5.2f} ms/token  other load {other} cores"
        )


@contextlib.contextmanager
def server_process(threads: int) -> Iterator[tuple[str, int]]:
    """A fresh server on 127.0.0.1 with a temporary home: its URL and pid."""
    if str(ROOT) not in sys.path:  # run as a script rather than with -m
        sys.path.insert(0, str(ROOT))
    from tests.support.server import running_server

    with (
        tempfile.TemporaryDirectory(prefix="blackroad-bench-") as home,
        running_server(Path(home), num_threads=str(threads)) as server,
    ):
        yield server.url, server.process.pid


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def check(side: str, label: str, sample: Sample, max_tokens: int) -> None:
    if sample.finish_reason != "length" or sample.completion_tokens != max_tokens:
        print(
            f"warning: {side} {label} ended with finish_reason={sample.finish_reason!r} after "
            f"{sample.completion_tokens} of {max_tokens} tokens; decode figures cover fewer tokens",
            file=sys.stderr,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="smollm2:135m", help="a bundled model name")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads, both sides")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per generation")
    parser.add_argument("--repeats", type=int, default=5, help="measured runs per side")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured runs per side first (the server loads its model on the first request)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.max_tokens < 2 or args.repeats < 1 or args.warmup < 0:
        parser.error("need --threads >= 1, --max-tokens >= 2, --repeats >= 1, --warmup >= 0")
    return args


def spread(values: list[float], digits: int) -> str:
    """Median and range, e.g. ``103.3 [102.8..104.2]``."""
    return f"{median(values):.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def report(local: list[Measured], remote: list[Measured], repeats: int) -> None:
    print()
    title = f"{repeats} runs"
    print(f"{title:<11} {'TTFT ms median [range]':>24} {'decode tok/s':>22} {'cpu ms/token':>13}")
    for name, runs in (("in-process", local), ("server", remote)):
        ttft = spread([m.sample.ttft_ms for m in runs], 1)
        tps = spread([m.sample.decode_tps for m in runs], 1)
        cpu = median([m.cpu_ms_per_token for m in runs])
        print(f"{name:<11} {ttft:>24} {tps:>22} {cpu:>13.2f}")
    client_cpu = median([m.bench_cpu_s * 1000 / max(1, m.sample.completion_tokens) for m in remote])
    print(
        f"  (cpu: this process + the server process, per generated token; the "
        f"client's share: {client_cpu:.2f})"
    )
    local_tps, remote_tps = (median([m.sample.decode_tps for m in r]) for r in (local, remote))
    local_ttft, remote_ttft = (median([m.sample.ttft_ms for m in r]) for r in (local, remote))
    ratio = remote_tps / local_tps
    overhead = remote_ttft - local_ttft
    print()
    verdict = "ok" if ratio >= DECODE_TARGET else "MISSED"
    print(f"decode ratio   server/in-process: {ratio:.3f}  (target >= {DECODE_TARGET}) {verdict}")
    verdict = "ok" if overhead <= TTFT_TARGET_MS else "MISSED"
    print(
        f"TTFT overhead  server-in-process: {overhead:+.1f} ms  "
        f"(target <= {TTFT_TARGET_MS:g} ms) {verdict}"
    )
    others = [m.other_cores for m in (*local, *remote) if m.other_cores is not None]
    if others and max(others) > OTHER_LOAD_WARNING:
        print(
            f"warning: other processes used up to {max(others):.2f} cores during measured runs "
            f"(median {median(others):.2f}); the figures are disturbed, rerun on a quiet machine",
            file=sys.stderr,
        )


def main(
    argv: list[str] | None = None,
    runner: Callable[[str], contextlib.AbstractContextManager[Runner]] = openai_runner,
    module: str = "bench.overhead",
) -> int:
    """Run the comparison; ``runner`` drives the server side (OpenAI API by default)."""
    args = parse_args(argv)
    from blackroad.models.bundled import bundled_models
    from blackroad.models.metadata import read_metadata
    from blackroad.models.templates import ChatTemplate

    models = bundled_models()
    if args.model not in models:
        known = ", ".join(sorted(models))
        print(f"unknown model {args.model!r}; bundled: {known}", file=sys.stderr)
        return 2
    path = models[args.model]
    template = ChatTemplate.for_model(read_metadata(path))

    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    entry = ["-m", module] if __spec__ is not None else [sys.argv[0]]
    command = shlex.join([str(python), *entry, *sys.argv[1:]])
    print(f"command: {command}")
    print(f"cpu:     {cpu_model()} ({cpu_count()} usable cores)")
    print(f"threads: {args.threads} (in-process n_threads/n_threads_batch, BLACKROAD_NUM_THREADS)")
    print(f"model:   {args.model} ({path.name})")
    print(
        f"runs:    {args.warmup} warm-up + {args.repeats} measured per side, ABBA order, "
        f"max_tokens {args.max_tokens}, temperature 0, seed {SEED}"
    )

    baseline = Baseline(path, template, args.threads)
    local: list[Measured] = []
    remote: list[Measured] = []
    with server_process(args.threads) as (url, server_pid), runner(url) as run_server:
        meter = CpuMeter(server_pid)
        for index in range(args.warmup + args.repeats):
            warm = index < args.warmup
            label = f"warm-up {index + 1}" if warm else f"run {index - args.warmup + 1}"
            messages = messages_for(label)
            sides = ["in-process", "server"] if index % 2 == 0 else ["server", "in-process"]
            for side in sides:
                before = meter.now()
                if side == "server":
                    sample = run_server(args.model, messages, args.max_tokens)
                else:
                    sample = baseline.run(messages, args.max_tokens)
                measured = Measured.between(side, sample, before, meter.now())
                check(side, label, sample, args.max_tokens)
                print(measured.line(label), flush=True)
                if not warm:
                    (remote if side == "server" else local).append(measured)
    baseline.close()
    report(local, remote, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
