"""What API keys and per-key/per-user limits cost a tiny completion.

Two ``blackroad up`` processes run side by side on 127.0.0.1, each with its own
temporary ``BLACKROAD_HOME``, the same ``BLACKROAD_NUM_THREADS`` and the same
bundled model; every other ``BLACKROAD_*`` variable is stripped from their
environment:

- **off**: default settings (loopback bind, no shared key, so auth is not
  required and every request runs as the local admin, with no limits).
- **on**: ``BLACKROAD_AUTH=on``. Before it starts, the CLI creates, against its
  home, a user ``bench`` and a key of hers (``blackroad users add bench``, then
  ``blackroad keys create bench`` with ``--rpm``, ``--tpm``, ``--concurrent``,
  ``--daily-tokens`` and ``--monthly-tokens``), and gives the user the same
  limits (``blackroad users limits bench ...``). The limits are far above
  anything the bench can reach, so every check runs on every request and none
  refuses. Where the CLI lacks the limit options or ``users limits``, the bench
  says so in its header and measures the key check alone.

The workload is a tiny, non-streamed completion: ``POST /v1/completions``
(``--api openai``, the official ``openai`` client, ``max_retries=0``) or
``POST /api/generate`` (``--api ollama``, the official ``ollama`` client, the
key in its ``Authorization`` header), with a short fixed prompt,
``max_tokens``/``num_predict`` 1 and temperature 0, so the model's work is as
small as it gets and the per-request cost of the server shows most. The
``openai`` client sends a dummy key to the **off** server, which it refuses
cheaply (not a ``br-`` key) and then serves as the local admin; the
``ollama`` client sends it no header at all, as Ollama clients do.

One run sends ``--requests`` requests from ``--concurrency`` asyncio tasks
sharing one async client (the server queues what it cannot serve at once),
and its rate is the successful requests over the wall time from the first
request sent to the last answer read. Every answer is checked: an HTTP error
or an empty answer counts as an error, and a 429 means a limit refused,
which makes the measurement invalid (it is reported loudly and the exit
status is 1). Runs alternate in ABBA order (off first on even repetitions,
on first on odd ones) so that drift in machine speed cancels out, and never
overlap: one server is idle while the other works. Warm-up runs (the first
request loads the model) are not counted.

Each run also reports the CPU time per request of the server that served it
and the load from other processes (from ``/proc``, as in ``bench/overhead.py``).
The server's CPU per request is the steadier figure on a noisy machine: the
difference between the two sides is what auth and limits cost.

Usage, from the repository root::

    .venv/bin/python -m bench.auth_overhead [--model smollm2:135m] [--threads 2]
        [--api openai] [--concurrency 4] [--requests 200] [--repeats 5] [--warmup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import ollama
import openai

from bench.overhead import (
    OTHER_LOAD_WARNING,
    ROOT,
    CpuMeter,
    CpuTimes,
    cpu_count,
    cpu_model,
    median,
    spread,
)

if TYPE_CHECKING:
    from tests.support.server import Server

RATIO_TARGET = 0.98  # requests/s with auth and limits on / off, at least
PROMPT = "The capital of France is"
DUMMY_KEY = "unused"  # what a client without a key sends to the "off" server
USER = "bench"
MAX_CONCURRENCY = 16  # the server's default BLACKROAD_MAX_QUEUE: more would answer 503

# Generous limits: every check runs, none refuses.
LIMITS = {
    "--rpm": "1000000",
    "--tpm": "1000000000",
    "--concurrent": "64",
    "--daily-tokens": "1000000000",
    "--monthly-tokens": "1000000000",
}
MISSING = ("No such option", "No such command")  # Typer's answer to an unknown flag or command

Call = Callable[[], Awaitable[None]]  # one request; raises on any failure


class BadAnswer(Exception):
    """A 200 answer without the completion asked for."""


@dataclass
class Side:
    """One server and the way the bench calls it."""

    name: str  # "off" or "on"
    url: str
    pid: int
    key: str | None  # the key to send; None: the client's default


@dataclass(frozen=True)
class Run:
    """One run of one side, timed."""

    side: str
    label: str
    ok: int
    errors: Counter[str]
    elapsed_s: float
    server_cpu_s: float | None
    other_cores: float | None  # CPU used by processes other than the bench and both servers

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    @property
    def server_ms_per_request(self) -> float:
        total = self.ok + sum(self.errors.values())
        if self.server_cpu_s is None or total == 0:
            return float("nan")
        return self.server_cpu_s * 1000 / total

    def line(self) -> str:
        other = "n/a" if self.other_cores is None else f"{self.other_cores:.2f}"
        errors = ", ".join(f"{n}x {kind}" for kind, n in sorted(self.errors.items())) or "none"
        return (
            f"  {self.label:<10} {self.side:<4} {self.rps:7.1f} req/s  "
            f"{self.ok} ok in {self.elapsed_s:6.2f} s  errors {errors}  "
            f"server cpu {self.server_ms_per_request:5.2f} ms/req  other load {other} cores"
        )


def failure(exc: Exception) -> str:
    """A short name for what went wrong with one request."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, openai.APIStatusError | ollama.ResponseError) and status is not None:
        return f"HTTP {status}"
    return type(exc).__name__


@contextlib.asynccontextmanager
async def openai_caller(side: Side, model: str) -> AsyncIterator[Call]:
    """``POST /v1/completions`` with the official ``openai`` client."""
    client = openai.AsyncOpenAI(
        base_url=f"{side.url}/v1", api_key=side.key or DUMMY_KEY, max_retries=0, timeout=600
    )

    async def call() -> None:
        completion = await client.completions.create(
            model=model, prompt=PROMPT, max_tokens=1, temperature=0
        )
        if not completion.choices or completion.choices[0].finish_reason is None:
            raise BadAnswer(completion.model_dump_json())

    try:
        yield call
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def ollama_caller(side: Side, model: str) -> AsyncIterator[Call]:
    """``POST /api/generate`` with the official ``ollama`` client."""
    headers = None if side.key is None else {"Authorization": f"Bearer {side.key}"}
    async with ollama.AsyncClient(host=side.url, headers=headers, timeout=600) as client:

        async def call() -> None:
            answer = await client.generate(
                model=model, prompt=PROMPT, options={"num_predict": 1, "temperature": 0}
            )
            if not answer.done:
                raise BadAnswer(answer.model_dump_json())

        yield call


CALLERS = {"openai": openai_caller, "ollama": ollama_caller}


async def drive(call: Call, requests: int, concurrency: int) -> tuple[int, Counter[str], float]:
    """Send ``requests`` requests from ``concurrency`` tasks: successes, errors, seconds."""
    remaining = requests
    ok = 0
    errors: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal remaining, ok
        while remaining > 0:
            remaining -= 1
            try:
                await call()
            except Exception as exc:  # counted, named and reported: any failure invalidates
                errors[failure(exc)] += 1
            else:
                ok += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    return ok, errors, time.perf_counter() - started


def check_enforced(side: Side, model: str) -> None:
    """Make sure the "on" server refuses a request without its key (else "on" is not on)."""
    answer = httpx.post(
        f"{side.url}/v1/completions",
        headers={"Authorization": f"Bearer {DUMMY_KEY}"},
        json={"model": model, "prompt": PROMPT, "max_tokens": 1},
        timeout=600,
    )
    if answer.status_code != 401:
        raise RuntimeError(f"the 'on' server answered {answer.status_code} to a wrong key, not 401")


async def measure(
    sides: list[Side], args: argparse.Namespace, meters: dict[str, CpuMeter]
) -> list[Run]:
    runs: list[Run] = []
    caller = CALLERS[args.api]
    async with contextlib.AsyncExitStack() as stack:
        calls = {s.name: await stack.enter_async_context(caller(s, args.model)) for s in sides}
        for index in range(args.warmup + args.repeats):
            warm = index < args.warmup
            label = f"warm-up {index + 1}" if warm else f"run {index - args.warmup + 1}"
            order = ["off", "on"] if index % 2 == 0 else ["on", "off"]
            for name in order:
                before = {n: m.now() for n, m in meters.items()}
                ok, errors, elapsed = await drive(calls[name], args.requests, args.concurrency)
                after = {n: m.now() for n, m in meters.items()}
                run = Run(name, label, ok, errors, elapsed, *cpu_split(name, before, after))
                print(run.line(), flush=True)
                if "HTTP 429" in errors:
                    print(
                        f"ERROR: {errors['HTTP 429']} requests of the {name!r} side were refused "
                        "with 429: a limit refused, so this run measures refusals, not service",
                        file=sys.stderr,
                    )
                if not warm:
                    runs.append(run)
    return runs


def cpu_split(
    side: str, before: dict[str, CpuTimes], after: dict[str, CpuTimes]
) -> tuple[float | None, float | None]:
    """CPU seconds of the server of ``side``, and the other processes' load in cores.

    Other processes are everything but this one and both servers (the idle one
    should use next to nothing, but it is not "other").
    """
    servers: dict[str, float | None] = {}
    for name in before:
        b, a = before[name].server, after[name].server
        servers[name] = None if a is None or b is None else a - b
    start, end = before[side], after[side]
    used = [v for v in servers.values() if v is not None]
    other = None
    if end.machine is not None and start.machine is not None and len(used) == len(servers):
        busy = end.machine - start.machine
        # /proc figures tick at 1/CLK_TCK s, so small negatives are rounding.
        other = max(0.0, busy - (end.bench - start.bench) - sum(used)) / (end.wall - start.wall)
    return servers[side], other


def _unsupported(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode != 0 and any(m in done.stdout + done.stderr for m in MISSING)


def _checked(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if done.returncode != 0:
        command = shlex.join(done.args if isinstance(done.args, list) else [str(done.args)])
        raise RuntimeError(f"{command} failed:\n{done.stdout}{done.stderr}")
    return done


def prepare_on(home: Path, threads: int) -> tuple[str, list[str]]:
    """Create the user and the key with limits in ``home``: the key, and what could not be set."""
    from tests.support.server import blackroad

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return blackroad(*args, home=home, num_threads=str(threads), auth="on")

    limits = [part for pair in LIMITS.items() for part in pair]
    missing: list[str] = []
    _checked(cli("users", "add", USER))
    created = cli("keys", "create", USER, *limits)
    if _unsupported(created):
        missing.append("key limits (`blackroad keys create` has no limit options)")
        created = cli("keys", "create", USER)
    key = _checked(created).stdout.strip().splitlines()[-1].strip()
    if not key.startswith("br-"):
        raise RuntimeError(f"no key on the last line of `keys create`:\n{created.stdout}")
    limited = cli("users", "limits", USER, *limits)
    if _unsupported(limited):
        missing.append("user limits (no `blackroad users limits`)")
    else:
        _checked(limited)
    return key, missing


@contextlib.contextmanager
def servers(threads: int) -> Iterator[tuple[list[Side], list[str]]]:
    """The two servers, ready: off and on, and the limits that could not be set on "on"."""
    if str(ROOT) not in sys.path:  # run as a script rather than with -m
        sys.path.insert(0, str(ROOT))
    from tests.support.server import running_server

    with contextlib.ExitStack() as stack:
        homes = {
            name: Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"br-bench-{name}-")))
            for name in ("off", "on")
        }
        key, missing = prepare_on(homes["on"], threads)
        # Each server logs to server.log in its home (the first admin's
        # credentials, printed by "off" on its empty home, go there too).
        off: Server = stack.enter_context(running_server(homes["off"], num_threads=str(threads)))
        on: Server = stack.enter_context(
            running_server(homes["on"], num_threads=str(threads), auth="on")
        )
        sides = [
            Side("off", off.url, off.process.pid, None),
            Side("on", on.url, on.process.pid, key),
        ]
        yield sides, missing


def report(runs: list[Run], repeats: int) -> bool:
    """Print the summary; whether the measurement is valid (no request failed)."""
    by_side = {name: [r for r in runs if r.side == name] for name in ("off", "on")}
    print()
    title = f"{repeats} runs"
    print(f"{title:<9} {'req/s median [range]':>24} {'server cpu ms/req':>26}")
    for name, side_runs in by_side.items():
        rps = spread([r.rps for r in side_runs], 1)
        cpu = spread([r.server_ms_per_request for r in side_runs], 2)
        print(f"{name:<9} {rps:>24} {cpu:>26}")
    off, on = (median([r.rps for r in by_side[name]]) for name in ("off", "on"))
    ratio = on / off
    pairs = [b.rps / a.rps for a, b in zip(by_side["off"], by_side["on"], strict=True)]
    cpu_off, cpu_on = (
        median([r.server_ms_per_request for r in by_side[name]]) for name in ("off", "on")
    )
    print()
    print(f"ratio on/off (medians): {ratio:.3f}  (target >= {RATIO_TARGET})")
    print(f"  per repetition: {' '.join(f'{p:.3f}' for p in pairs)}  median {median(pairs):.3f}")
    print(f"server cpu on-off: {cpu_on - cpu_off:+.2f} ms/request")

    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors)
    others = [r.other_cores for r in runs if r.other_cores is not None]
    sys.stdout.flush()  # warnings go to stderr: keep them in order
    if others and max(others) > OTHER_LOAD_WARNING:
        print(
            f"warning: other processes used up to {max(others):.2f} cores during measured runs "
            f"(median {median(others):.2f}); the figures are disturbed, rerun on a quiet machine",
            file=sys.stderr,
        )
    if errors:
        detail = ", ".join(f"{n}x {kind}" for kind, n in sorted(errors.items()))
        refused = " (429: a limit refused requests)" if "HTTP 429" in errors else ""
        print(f"verdict: INVALID, {sum(errors.values())} requests failed{refused}: {detail}")
        return False
    verdict = "ok" if ratio >= RATIO_TARGET else "MISSED"
    print(f"verdict: {verdict} (ratio {ratio:.3f}, target >= {RATIO_TARGET})")
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="smollm2:135m", help="a bundled model name")
    parser.add_argument("--threads", type=int, default=2, help="BLACKROAD_NUM_THREADS, both")
    parser.add_argument("--api", choices=sorted(CALLERS), default="openai", help="client and API")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--requests", type=int, default=200, help="requests per run")
    parser.add_argument("--repeats", type=int, default=5, help="measured runs per side")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured runs per side first (the server loads its model on the first request)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    if args.threads < 1 or args.requests < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("need --threads >= 1, --requests >= 1, --repeats >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the comparison: 0 when every request succeeded, 1 otherwise, 2 on bad arguments."""
    args = parse_args(argv)
    from blackroad.models.bundled import bundled_models

    models = bundled_models()
    if args.model not in models:
        known = ", ".join(sorted(models))
        print(f"unknown model {args.model!r}; bundled: {known}", file=sys.stderr)
        return 2

    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    entry = ["-m", "bench.auth_overhead"] if __spec__ is not None else [sys.argv[0]]
    command = shlex.join([str(python), *entry, *(sys.argv[1:] if argv is None else argv)])
    route = "/v1/completions" if args.api == "openai" else "/api/generate"
    print(f"command: {command}")
    print(f"cpu:     {cpu_model()} ({cpu_count()} usable cores)")
    print(f"threads: {args.threads} (BLACKROAD_NUM_THREADS, both servers)")
    print(f"model:   {args.model} ({models[args.model].name})")
    print(
        f"load:    POST {route} with the {args.api} client, 1 token, temperature 0, "
        f"{args.requests} requests per run, {args.concurrency} in flight"
    )
    print(
        f"runs:    {args.warmup} warm-up + {args.repeats} measured per side, ABBA order "
        "(off first on even repetitions)"
    )

    with servers(args.threads) as (sides, missing):
        limits = " ".join(f"{flag} {value}" for flag, value in LIMITS.items())
        print("off:     loopback, no shared key: auth not required, local admin, no limits")
        print(f"on:      BLACKROAD_AUTH=on, key of user {USER!r}, limits (key and user): {limits}")
        for what in missing:
            print(f"warning: NOT SET: {what}; the 'on' side measures the key check only")
        check_enforced(sides[1], args.model)
        meters = {side.name: CpuMeter(side.pid) for side in sides}
        runs = asyncio.run(measure(sides, args, meters))
    return 0 if report(runs, args.repeats) else 1


if __name__ == "__main__":
    sys.exit(main())
