"""What bounding untrusted work costs, and what it buys: two measurements.

- **render**: the chat template of a bundled model that ships its own
  (``smollm2:135m``: a GGUF template, so untrusted) rendered in this process
  (``models.templates._render``, what every template did before) and through a
  helper process (``ChatTemplate.render``, and ``rendered`` from an event
  loop, as the engine calls it), alternating, for a short chat (3 messages)
  and a long one (200). Reported: the median microseconds per render and the
  helper's overhead. The helpers are started and warm before the clock runs.
- **grammar**: the costliest grammars schemas within the limits can ask for
  (the most nested groups: 4 strings of ``maxLength`` 1000; nearly the most
  bytes: an enum of long strings), converted in a helper (``compile_grammar``,
  cold and cached) and parsed by llama.cpp as a model's worker thread parses
  it for each generation that uses it (``llama_sampler_init_grammar``).
  Reported: the grammar's size and the median milliseconds of each.
- **live**: a ``blackroad up`` (its own temporary home, helpers' time limits
  as the tests set them) probed on ``/health/live`` every 20 ms for
  ``--seconds``: first with nothing else running, then while hostile work
  (``tests/support/hostile.py``) is sent without pause from ``--clients``
  threads: templates that loop, schemas whose grammars would not fit, an agent
  whose injected model asks the calculator for ``round(1, -10**8)``, documents
  that take minutes to read (quadratic HTML, a slow PDF, a zip bomb).
  Reported: probe latency p50, p99 and max, and how many hostile requests got
  their 4xx. The issue's target is p99 < 100 ms.

Usage, from the repository root (``-m``: it imports ``tests.support``)::

    .venv/bin/python -m bench.bounded [--repeats 2000] [--seconds 60] [--clients 4]
        [--only render|grammar|live]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from tests.support import hostile
from tests.support.fleet import fake_vllm
from tests.support.server import Server, running_server

from bench.overhead import cpu_count, cpu_model
from blackroad import bounded
from blackroad.models.bundled import bundled_models
from blackroad.models.metadata import read_metadata
from blackroad.models.templates import ChatTemplate, _render

KEY = "bench-bounded-shared-key-0123456789"
MODEL = "smollm2:135m"
INJECTED = "injected:1b"


def chat(turns: int) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": "You answer in one sentence."}]
    for n in range(turns - 1):
        role = "user" if n % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"Message {n}: " + "a few words " * 10})
    return messages


def per_render(repeats: int, render: Callable[[], object]) -> float:
    """Median microseconds of one render, in batches of 20."""
    batches = []
    for _ in range(max(1, repeats // 20)):
        started = time.perf_counter()
        for _ in range(20):
            render()
        batches.append((time.perf_counter() - started) / 20 * 1e6)
    return statistics.median(batches)


def measure_render(repeats: int) -> None:
    template = ChatTemplate.for_model(read_metadata(bundled_models()[MODEL]))
    assert not template.trusted, "smollm2's template is the model's own"
    loop = asyncio.new_event_loop()
    print(f"render: {MODEL}'s own template, {repeats} renders per side and size")
    print("| chat | in-process µs | helper µs (thread) | helper µs (event loop) | overhead |")
    print("|---|---|---|---|---|")
    for turns in (3, 200):
        messages = chat(turns)
        request = template._request(messages, True)
        # Warm: the helpers started, the template compiled on both sides.
        for _ in range(2 * bounded.pool().bounds.processes):
            assert template.render(messages) == _render(request)

        sides = {
            "in-process": lambda: _render(request),  # noqa: B023 - called within the iteration
            "thread": lambda: template.render(messages),  # noqa: B023
            "loop": lambda: loop.run_until_complete(template.rendered(messages)),  # noqa: B023
        }
        figures: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(4):  # ABBA-like alternation against drift
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                figures[name].append(per_render(repeats // 4, sides[name]))
        inside, thread, looped = (statistics.median(figures[name]) for name in sides)
        print(f"| {turns} messages | {inside:.0f} | {thread:.0f} | {looped:.0f} "
              f"| +{looped - inside:.0f} µs |")  # fmt: skip
    loop.close()


def measure_grammar(repeats: int) -> None:
    import llama_cpp

    from blackroad.engines import grammar

    fields = grammar.MAX_GRAMMAR_GROUPS // grammar.MAX_REPEAT
    schemas = {
        f"groups: {fields} strings of maxLength {grammar.MAX_REPEAT}": {
            "type": "object",
            "properties": {
                f"field{n}": {"type": "string", "maxLength": grammar.MAX_REPEAT}
                for n in range(fields)
            },
        },
        "bytes: an enum of 1,000 strings of 200 characters": {
            "enum": [f"{n:04} " + "x" * 195 for n in range(1000)]
        },
    }
    loop = asyncio.new_event_loop()
    for label, schema in schemas.items():
        grammar.check_schema(schema, "response_format")
        converted, cached, parsed = [], [], []
        text = ""
        for _ in range(max(3, repeats // 200)):
            grammar._grammars.clear()
            started = time.perf_counter()
            text = loop.run_until_complete(grammar.compile_grammar(schema))._grammar
            converted.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            loop.run_until_complete(grammar.compile_grammar(schema))
            cached.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            sampler = llama_cpp.llama_sampler_init_grammar(None, text.encode(), b"root")
            parsed.append((time.perf_counter() - started) * 1000)
            assert sampler, "llama.cpp refused the grammar"
            llama_cpp.llama_sampler_free(sampler)
        print(
            f"grammar, {label}: {len(text)} bytes; converted in a helper "
            f"{statistics.median(converted):.1f} ms, cached {statistics.median(cached):.2f} ms, "
            f"parsed by llama.cpp {statistics.median(parsed):.1f} ms (medians of {len(parsed)})"
        )
    loop.close()


@contextlib.contextmanager
def hostile_world() -> Iterator[tuple[Server, int]]:
    """A server with the injected model's peer, and a knowledge base to upload to."""
    with tempfile.TemporaryDirectory(prefix="blackroad-bench-") as home:
        reply = hostile.tool_call("calculator", {"expression": hostile.SLOW_EXPRESSION})
        peer = fake_vllm(Path(home) / "peer", INJECTED, reply=reply).start()
        settings = {"api_key": KEY, "template_seconds": "3", "calculator_seconds": "2",
                    "extract_seconds": "5", "work_memory_bytes": str(1 << 30)}  # fmt: skip
        try:
            with (
                running_server(Path(home) / "server", **settings) as server,
                client(server) as http,
            ):
                node = {"name": "peer", "kind": "openai", "url": peer.url}
                added = http.post("/api/fleet/nodes", json=node)
                assert added.status_code == 201, added.text
                base = http.post("/api/kb", json={"name": "bench"}).json()["id"]
                yield server, base
        finally:
            peer.stop()


def client(server: Server) -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=300)


def hostile_requests(server: Server, base: int) -> Iterator[Callable[[httpx.Client], int]]:
    """Each kind of hostile request in turn, forever: each returns the status it got."""
    schema = {"type": "json_schema", "json_schema": {"name": "x",
              "schema": hostile.SCHEMAS["minLength"][0]}}  # fmt: skip
    agent: dict[str, Any] = {}

    def template(http: httpx.Client) -> int:
        body = {"model": MODEL, "prompt": "hi", "template": hostile.NESTED_LOOPS, "stream": False}
        return http.post("/api/generate", json=body).status_code

    def grammar(http: httpx.Client) -> int:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "response_format": schema}  # fmt: skip
        return http.post("/v1/chat/completions", json=body).status_code

    def calculation(http: httpx.Client) -> int:
        if not agent:
            agent.update(http.post("/api/agents", json={
                "name": "calc", "model": INJECTED, "tools": ["calculator"], "max_steps": 2,
            }).json())  # fmt: skip
        run = http.post(f"/api/agents/{agent['id']}/runs", json={"input": "Round it."}).json()
        while run["status"] in ("running", "waiting"):
            time.sleep(0.2)
            run = http.get(f"/api/agents/runs/{run['id']}").json()
        errors = [s["output"]["is_error"] for s in run["steps"] if s["kind"] == "tool"]
        return 422 if errors and all(errors) else 200  # a tool's error stands for its 4xx

    def document(name: str) -> Callable[[httpx.Client], int]:
        data = hostile.DOCUMENTS[name]()

        def upload(http: httpx.Client) -> int:
            sent = http.post(f"/api/kb/{base}/documents", files=[("files", (name, data))])
            return sent.status_code

        return upload

    kinds = [template, grammar, calculation, *(document(name) for name in hostile.DOCUMENTS)]
    return itertools.cycle(kinds)


def probe(server: Server, seconds: float) -> list[float]:
    """``/health/live`` latencies in ms, one probe every 20 ms for ``seconds``.

    A probe unanswered after 10 s counts as 10 s.
    """
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=server.url, timeout=10) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            with contextlib.suppress(httpx.TimeoutException):
                assert http.get("/health/live").status_code == 200
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(max(0.0, 0.02 - (time.perf_counter() - started)))
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{len(ordered)} probes: p50 {statistics.median(ordered):.1f} ms, "
            f"p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms")  # fmt: skip


def measure_live(seconds: float, clients: int) -> None:
    with hostile_world() as (server, base):
        with client(server) as http:  # the model loaded, as it would be on a serving node
            http.post("/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False})
        print(f"live, quiet: {summary(probe(server, seconds / 2))}")
        stop = threading.Event()
        statuses: Counter[int | str] = Counter()
        requests = hostile_requests(server, base)
        lock = threading.Lock()

        def send() -> None:
            with client(server) as http:
                while not stop.is_set():
                    with lock:
                        request = next(requests)
                    try:
                        outcome: int | str = request(http)
                    except httpx.HTTPError as error:
                        outcome = f"{request.__name__}: {type(error).__name__}"
                    statuses[outcome] += 1

        senders = [threading.Thread(target=send) for _ in range(clients)]
        for sender in senders:
            sender.start()
        try:
            print(f"live, {clients} hostile clients: {summary(probe(server, seconds))}")
        finally:
            stop.set()
            for sender in senders:
                sender.join()
        print(f"hostile requests answered, by status: {dict(statuses)}")
        assert server.alive()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--only", choices=["render", "grammar", "live"])
    args = parser.parse_args()
    print(f"{cpu_model()}, {cpu_count()} CPUs; Python {sys.version.split()[0]}")
    if args.only in (None, "render"):
        measure_render(args.repeats)
    if args.only in (None, "grammar"):
        measure_grammar(args.repeats)
    if args.only in (None, "live"):
        measure_live(args.seconds, args.clients)


if __name__ == "__main__":
    main()
