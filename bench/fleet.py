"""The fleet: what the router adds to a request, what a dying node costs, how nodes add up.

One run starts a control plane and its nodes on 127.0.0.1, each a plain
``blackroad up`` with its own temporary ``BLACKROAD_HOME`` and port (every
other ``BLACKROAD_*`` variable stripped, as ``tests/support/server.py`` does),
and stops them all at the end, on an error or on Ctrl-C:

- **nodes** ``node1``..``nodeN``: ``BLACKROAD_NUM_THREADS`` ``--threads`` (1 by
  default: on a two-core machine two nodes then have a core each) and
  ``BLACKROAD_NUM_PARALLEL`` ``--streams``, so one node can batch the whole
  scaling load. Each is given the model ``tiny:fleet``, made from the bundled
  ``--model`` with ``POST /api/create`` (Ollama's API); ``node1`` also gets
  ``tiny:solo``, the same weights under a name no other node has.
- **control**: ``BLACKROAD_NODE_CONCURRENCY`` ``--streams`` (the default, 4,
  would cap the one-node side of the scaling test at 4 streams), the default
  probe period (``BLACKROAD_FLEET_PROBE_SECONDS`` 2). Its own catalog lacks
  both models, so everything asked of it is routed to peers, added with
  ``POST /api/fleet/nodes`` (``--kind``: the Ollama protocol by default).
  A node counts as in the rotation once the control plane's ``/api/fleet``
  shows a probe answered after it was added or restarted.

Before the first peer is added and each time the fleet grows, the control
plane is watched idle for ``--idle`` seconds: the CPU its probes cost with
0, 1, 2 and ``--nodes`` peers. The control plane's CPU per routed request or
token (``/proc/<pid>/stat``, as in ``bench/overhead.py``) is given less that
idle use over the same wall time, so it is what routing costs.

Three measurements, in this order, each growing the fleet as it needs:

1. **Router overhead** (one peer, ``node1``): ``--requests`` tiny requests per
   side, one at a time, each sent direct to ``node1`` or through the control
   plane to it, alternating in ABBA order (direct first on even pairs), after
   ``--warmup`` unmeasured ones per side. A request is a non-streamed
   ``POST /v1/completions`` with the official ``openai`` client (``--api
   openai``, ``max_retries=0``) or ``POST /api/generate`` with the ``ollama``
   client (``--api ollama``), one token, temperature 0, a short fixed prompt
   (``bench/auth_overhead.py``'s callers); its latency runs from just before
   the call to its answer. Reported: p50 and p99 per side, their
   differences (targets: at most 2 ms and 10 ms added), the median of the
   per-pair differences, and the control plane's CPU time per routed request.
   The control plane serves the routed request as the node serves the direct
   one (auth, validation, its request record) and adds the router and an HTTP
   hop to the node (``--kind``'s protocol, streamed), so the difference is
   what a request pays for going through a control plane.
2. **Scaling** (``node1`` and ``node2``): ``--streams`` streamed chats of
   ``--stream-tokens`` tokens sent at once through the control plane, for
   ``tiny:solo`` (only ``node1`` serves it) or ``tiny:fleet`` (both do),
   ``--repeats`` times each in ABBA order, counting prompts of
   ``bench/serving.py`` (a new block of starts per run, so no run reuses
   another's prompt cache), read with ``bench/serving.py``'s ``stream_chat``.
   Aggregate decode tok/s as there: the streams' tokens after the first over
   the wall time from the earliest first token to the latest last one.
   Reported: each side's median, the ratio two nodes / one node, the tokens
   each node generated (from its ``/metrics``), and the control plane's CPU
   time per routed token. On a two-core machine the two nodes, the control
   plane and the client share the cores, so the ratio says little about
   machines of their own; the CPU per routed token is what bounds a control
   plane's fan-out (``docs/benchmarks.md`` has the model).
3. **Failover** (``--nodes`` nodes): ``--concurrency`` workers each sending
   streamed chats of ``--chat-tokens`` tokens through the control plane,
   one after another, for ``--duration`` seconds (then the last ones are
   finished); 16 counting prompts in turn. First with no kills, then the
   same load while every ``--kill-every`` seconds a random node in the
   rotation is SIGKILLed and at once restarted (a new process, same home,
   same port; it loads its model again on its first request). A node is
   never killed while fewer than two are in the rotation (that kill is
   counted as skipped): with no node left, failures would be the bench's,
   not the router's. Reported per phase: requests, **failed** ones (an HTTP
   or stream error; target 0), **incomplete** ones (no text, no
   ``finish_reason``, no usage, or ``length`` before ``--chat-tokens``
   tokens; target 0), TTFT and total latency p50/p99, and the kill phase's
   p99 minus the no-kill phase's; the control plane's log gives how many
   node failures it saw and how many streams it continued on another node.
   Texts are compared with the no-kill phase's for the same prompt
   (temperature 0): a continuation re-reads the delivered text as a prompt,
   so a differing token is possible and printed, not counted as a failure.

Every line also carries the load from processes other than the bench and
the fleet (``/proc``; above 0.05 cores the figures are disturbed) where the
fleet's processes did not change during it. Figures are printed with
"target met/missed"; the exit status is 1 only when the overhead or scaling
measurement itself had failed requests (then it measured errors), 2 on bad
arguments, 130 when interrupted (Ctrl-C or SIGTERM: the fleet is stopped
first). ``--keep-logs DIR`` copies every process's logs (one per start)
there at the end.

Usage, from the repository root::

    .venv/bin/python -m bench.fleet [--model smollm2:135m] [--threads 1] [--kind ollama]
        [--api openai] [--requests 200] [--warmup 10] [--streams 8] [--stream-tokens 64]
        [--repeats 2] [--nodes 3] [--concurrency 4] [--duration 60] [--kill-every 5]
        [--chat-tokens 32] [--seed 1] [--idle 6] [--phases overhead,scaling,failover]
        [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from bench.auth_overhead import CALLERS, Side, cpu_split
from bench.fleet_report import (
    Kills,
    Outcome,
    Overhead,
    Phase,
    Scaled,
    Window,
    cores,
    report_failover,
    report_overhead,
    report_scaling,
    row,
)
from bench.overhead import (
    OTHER_LOAD_WARNING,
    ROOT,
    CpuMeter,
    CpuTimes,
    cpu_count,
    cpu_model,
    median,
)
from bench.serving import count_prompt, failure, messages, stream_chat
from bench.serving_report import Concurrent, Stream

MODEL = "tiny:fleet"  # on every node, never on the control plane
SOLO = "tiny:solo"  # on node1 only: the one-node side of the scaling test
CONTROL = "control"
PHASES = ("overhead", "scaling", "failover")
PROBE_SECONDS = 2.0  # BLACKROAD_FLEET_PROBE_SECONDS: the default, left as it is
PROMPTS = 16  # counting prompts the failover load takes in turn
PROBED_TIMEOUT_S = 120.0  # for a node to show up as probed in /api/fleet
ADMIN_TIMEOUT = httpx.Timeout(300.0, connect=5.0)


# -- the processes -----------------------------------------------------------------


@dataclass
class Process:
    """One ``blackroad up``: a fixed home and port, so it can be killed and started again."""

    name: str
    home: Path
    settings: dict[str, str]
    port: int = 0
    starts: int = 0
    process: subprocess.Popen[bytes] | None = None
    _running: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        from tests.support.server import free_port

        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def log(self) -> Path:
        """The log of the current (latest) start."""
        return self.home / f"server-{self.starts}.log"

    def start(self) -> None:
        """Start it and return once it answers (blocking: run it in a thread)."""
        from tests.support.server import server_env, serving

        self.stop()
        self.starts += 1
        env = server_env(self.home, self.port, **self.settings)
        self.process = self._running.enter_context(serving(["up"], env, self.port, self.log))

    def kill(self) -> None:
        """SIGKILL: no shutdown, open connections cut, as when a machine dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Terminate it if it runs (killed if it will not stop)."""
        self._running.close()
        self._running = contextlib.ExitStack()


@dataclass
class Fleet:
    control: Process
    nodes: list[Process]

    @classmethod
    def create(cls, root: Path, nodes: int, args: argparse.Namespace) -> Fleet:
        control = Process(
            CONTROL,
            root / CONTROL,
            {"num_threads": "1", "node_concurrency": str(args.streams), "node_name": CONTROL},
        )
        settings = {"num_threads": str(args.threads), "num_parallel": str(args.streams)}
        members = [Process(f"node{i}", root / f"node{i}", settings) for i in range(1, nodes + 1)]
        return cls(control, members)

    @property
    def processes(self) -> list[Process]:
        return [self.control, *self.nodes]

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


# -- CPU time ------------------------------------------------------------------------


class Watch:
    """CPU accounting of the fleet's processes, as they are now, from now on (``/proc``)."""

    def __init__(self, fleet: Fleet) -> None:
        self.meters = {p.name: CpuMeter(p.pid) for p in fleet.processes}
        self.start = self._now()

    def _now(self) -> dict[str, CpuTimes]:
        return {name: meter.now() for name, meter in self.meters.items()}

    def window(self) -> Window:
        end = self._now()
        # Other load: all but the bench and every fleet process (None if one was replaced).
        control, other = cpu_split(CONTROL, self.start, end)
        start, now = self.start[CONTROL], end[CONTROL]
        return Window(now.wall - start.wall, control, other, now.bench - start.bench)


# -- the run -------------------------------------------------------------------------


async def checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        await response.aread()
        raise RuntimeError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response


@dataclass
class Summary:
    rows: list[str] = field(default_factory=list)
    valid: bool = True  # no request failed where nothing was killed
    other_cores: list[float] = field(default_factory=list)  # where it could be measured

    def noted(self, *loads: float | None) -> None:
        self.other_cores += [load for load in loads if load is not None]


class Bench:
    """The fleet, the clients that drive it, and what has been measured so far."""

    def __init__(self, fleet: Fleet, args: argparse.Namespace, admin: httpx.AsyncClient) -> None:
        self.fleet = fleet
        self.control = fleet.control
        self.args = args
        self.admin = admin  # admin calls: model creation, peers, probes seen, metrics
        self.summary = Summary()
        self.registered = 0
        self.idle: dict[int, float | None] = {}  # control plane cores used idle, by peers

    async def run(self) -> Summary:
        """Start the fleet, then every phase asked for, in order."""
        await self.setup()
        phases = self.args.phases
        if "overhead" in phases:
            await self.grow(1)
            result = await self.overhead()
            self.summary.rows += report_overhead(result, self.idle[1], self.args.requests)
            self.summary.valid = self.summary.valid and not result.errors
            self.summary.noted(result.window.other_cores)
        if "scaling" in phases:
            await self.grow(2)
            runs = await self.scaling()
            self.summary.rows += report_scaling(runs, self.idle[2])
            self.summary.valid = self.summary.valid and all(not r.errors for r in runs)
            self.summary.noted(*(r.window.other_cores for r in runs))
        if "failover" in phases:
            await self.grow(self.args.nodes)
            self.summary.rows += await self.failover()
        return self.summary

    # Setting up ---------------------------------------------------------------------

    async def setup(self) -> None:
        """Start every process, give the nodes their models, load them, watch idle."""
        print(f"load:     {os.getloadavg()[0]:.2f} (1-minute load average before the run)")
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in self.fleet.processes))
        first = self.fleet.nodes[0]
        await asyncio.gather(*(self.create_model(node, MODEL) for node in self.fleet.nodes))
        # After tiny:fleet, not beside it: two creates from one file at once on one
        # node race on the blob's partial file (models/store.py) and one fails.
        await self.create_model(first, SOLO)
        await asyncio.gather(
            self.warm(first.url, SOLO), *(self.warm(node.url, MODEL) for node in self.fleet.nodes)
        )
        await self.watch_idle(0)

    async def create_model(self, node: Process, name: str) -> None:
        body = {"model": name, "from": self.args.model, "stream": False}
        await checked(await self.admin.post(f"{node.url}/api/create", json=body))

    async def warm(self, url: str, model: str) -> None:
        """One token of ``model`` at ``url``: the model is loaded after it."""
        body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        await checked(await self.admin.post(f"{url}/v1/completions", json=body))

    async def grow(self, to: int) -> None:
        """Add nodes as peers up to ``to``, wait until they are routed to, watch idle."""

        async def add(node: Process) -> None:
            body = {"name": node.name, "kind": self.args.kind, "url": node.url}
            url = f"{self.control.url}/api/fleet/nodes"
            added = (await checked(await self.admin.post(url, json=body))).json()
            await self.probed(node.name, datetime.fromisoformat(added["last_seen"]))

        await asyncio.gather(*(add(node) for node in self.fleet.nodes[self.registered : to]))
        self.registered = max(self.registered, to)
        await self.warm(self.control.url, MODEL)
        await self.watch_idle(to)

    async def probed(self, name: str, after: datetime) -> None:
        """Wait until the control plane has heard node ``name`` answer a probe after ``after``.

        The probe that records it has also synced the router's members and closed
        the node's breaker, so from then on the node is routed to.
        """
        deadline = time.monotonic() + PROBED_TIMEOUT_S
        while time.monotonic() < deadline:
            fleet = (await checked(await self.admin.get(f"{self.control.url}/api/fleet"))).json()
            for node in fleet["nodes"]:
                seen = node["last_seen"]
                up = node["name"] == name and node["state"] == "up" and seen is not None
                if up and datetime.fromisoformat(seen) > after:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the control plane did not probe {name} in {PROBED_TIMEOUT_S:g} s")

    async def watch_idle(self, peers: int) -> None:
        """The control plane's CPU while nothing is asked of it: its probes of ``peers``."""
        watch = Watch(self.fleet)
        await asyncio.sleep(self.args.idle)
        window = watch.window()
        self.idle[peers] = window.control_cores
        self.summary.noted(window.other_cores)
        use = "n/a" if window.control_cores is None else f"{window.control_cores * 1000:.1f}"
        print(
            f"\n{peers} peer{'' if peers == 1 else 's'} in the rotation; control plane idle "
            f"(probes every {PROBE_SECONDS:g} s): cpu {use} ms/s over {window.wall_s:.1f} s; "
            f"other load {cores(window.other_cores)} cores",
            flush=True,
        )
        self.summary.rows.append(row(f"control plane idle cpu, {peers} peers", use, "ms/s"))

    @contextlib.asynccontextmanager
    async def streaming(self) -> AsyncIterator[openai.AsyncOpenAI]:
        """A client for streamed chats through the control plane, new for each workload.

        Its connections never sit idle between workloads: one idle for just the
        5 s that both httpx and uvicorn keep connections alive can be closed
        under the next request, a failure of this client and not of the fleet.
        """
        url = f"{self.control.url}/v1"
        async with openai.AsyncOpenAI(
            base_url=url, api_key="unused", max_retries=0, timeout=600
        ) as client:
            yield client

    async def completion_tokens(self, node: Process, model: str) -> float:
        """Tokens of ``model`` the node has generated so far, from its ``/metrics``."""
        text = (await checked(await self.admin.get(f"{node.url}/metrics"))).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "blackroad_tokens_total"
            and sample.labels.get("model") == model
            and sample.labels.get("direction") == "completion"
        )

    # 1. Router overhead -------------------------------------------------------------

    async def overhead(self) -> Overhead:
        node = self.fleet.nodes[0]
        sides = {
            "direct": Side("direct", node.url, node.pid, None),
            "routed": Side("routed", self.control.url, self.control.pid, None),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        errors: Counter[str] = Counter()
        async with contextlib.AsyncExitStack() as stack:
            caller = CALLERS[self.args.api]
            calls = {n: await stack.enter_async_context(caller(s, MODEL)) for n, s in sides.items()}
            for _ in range(self.args.warmup):
                for call in calls.values():
                    await call()
            watch = Watch(self.fleet)
            for index in range(self.args.requests):
                for name in ("direct", "routed") if index % 2 == 0 else ("routed", "direct"):
                    started = time.perf_counter()
                    try:
                        await calls[name]()
                    except Exception as exc:  # counted and named: any failure invalidates
                        errors[f"{name}: {failure(exc)}"] += 1
                    else:
                        times[name].append((time.perf_counter() - started) * 1000)
            window = watch.window()
        return Overhead(times["direct"], times["routed"], errors, window)

    # 2. Scaling ---------------------------------------------------------------------

    async def scaling(self) -> list[Scaled]:
        args = self.args
        print(
            f"\nscaling: {args.streams} streams x {args.stream_tokens} tokens at once through "
            f"the control plane; {args.repeats} runs per side, ABBA",
            flush=True,
        )
        runs: list[Scaled] = []
        blocks = itertools.count()
        for repeat in range(args.repeats):
            for nodes in (1, 2) if repeat % 2 == 0 else (2, 1):
                # count_prompt's first argument picks a block of starts (100 x block): a
                # new one each run, below 900 where smollm2:135m counts reliably.
                async with self.streaming() as client:
                    result = await self.scaled(client, nodes, 1 + next(blocks) % 8)
                print(result.line(f"run {repeat + 1}", self.idle[2]), flush=True)
                runs.append(result)
        return runs

    async def scaled(self, client: openai.AsyncOpenAI, nodes: int, block: int) -> Scaled:
        """``--streams`` streams at once of the model one or both nodes serve."""
        model = SOLO if nodes == 1 else MODEL
        members = self.fleet.nodes[:2]
        max_tokens = self.args.stream_tokens
        chats = [messages(("user", count_prompt(block, i))) for i in range(self.args.streams)]
        counted = await asyncio.gather(*(self.completion_tokens(n, model) for n in members))
        watch = Watch(self.fleet)
        results = await asyncio.gather(
            *(stream_chat(client, model, chat, max_tokens) for chat in chats),
            return_exceptions=True,
        )
        window = watch.window()
        now = await asyncio.gather(*(self.completion_tokens(n, model) for n in members))
        split = {n.name: b - a for n, a, b in zip(members, counted, now, strict=True)}
        streams = [r for r in results if isinstance(r, Stream)]
        errors = [failure(r) for r in results if isinstance(r, BaseException)]
        errors += [
            f"stream {i + 1}: {s.finish_reason!r} after {s.tokens} of {max_tokens} tokens"
            for i, s in enumerate(streams)
            if s.first is None or s.tokens != max_tokens
        ]
        run = Concurrent(streams) if len(streams) == self.args.streams else None
        return Scaled(nodes, run, errors, split, window)

    # 3. Failover --------------------------------------------------------------------

    async def failover(self) -> list[str]:
        args = self.args
        print(
            f"\nfailover: {args.nodes} nodes, {args.concurrency} concurrent streamed chats of "
            f"{args.chat_tokens} tokens for {args.duration:g} s per phase; in the second, a "
            f"node killed every {args.kill_every:g} s",
            flush=True,
        )
        calm = await self.phase("no kills", kill=False)
        killed = await self.phase("kills", kill=True)
        self.summary.noted(calm.window.other_cores)
        return report_failover(calm, killed, self.idle[args.nodes], args)

    async def phase(self, name: str, kill: bool) -> Phase:
        offset = self.control.log.stat().st_size
        watch = Watch(self.fleet)
        until = time.perf_counter() + self.args.duration
        async with self.streaming() as client:
            if kill:
                load = self.chats(client, until)
                outcomes, kills = await asyncio.gather(load, self.killer(until))
            else:
                outcomes, kills = await self.chats(client, until), None
        window = watch.window()
        with self.control.log.open("rb") as log:
            log.seek(offset)
            logged = log.read().decode(errors="replace")
        return Phase(name, outcomes, window, logged, kills)

    async def chats(self, client: openai.AsyncOpenAI, until: float) -> list[Outcome]:
        """``--concurrency`` workers sending streamed chats one after another until ``until``."""
        prompts = [count_prompt(5 + i // 8, i % 8) for i in range(PROMPTS)]
        turn = itertools.count()
        outcomes: list[Outcome] = []

        async def worker() -> None:
            while time.perf_counter() < until:
                k = next(turn) % len(prompts)
                chat = messages(("user", prompts[k]))
                try:
                    stream = await stream_chat(client, MODEL, chat, self.args.chat_tokens)
                except Exception as exc:  # counted and named: the figure this phase is about
                    outcomes.append(Outcome(k, None, failure(exc)))
                else:
                    outcomes.append(Outcome(k, stream, None))

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))
        return outcomes

    async def killer(self, until: float) -> Kills:
        """Every ``--kill-every`` s SIGKILL a random node in the rotation and start it again."""
        rng = random.Random(self.args.seed)
        kills = Kills()
        routed = {node.name for node in self.fleet.nodes}
        revivals: list[asyncio.Task[None]] = []

        async def revive(node: Process, killed: float) -> None:
            await asyncio.to_thread(node.start)
            await self.probed(node.name, datetime.now(UTC))
            routed.add(node.name)
            kills.back_s.append(time.perf_counter() - killed)

        due = time.perf_counter() + self.args.kill_every
        while due < until:
            await asyncio.sleep(due - time.perf_counter())
            due += self.args.kill_every
            candidates = [node for node in self.fleet.nodes if node.name in routed]
            if len(candidates) < 2:
                kills.skipped += 1
                continue
            victim = rng.choice(candidates)
            routed.discard(victim.name)
            victim.kill()
            kills.victims.append(victim.name)
            revivals.append(asyncio.create_task(revive(victim, time.perf_counter())))
        await asyncio.gather(*revivals)
        return kills


async def bench(fleet: Fleet, args: argparse.Namespace) -> Summary:
    # Idle connections dropped well before uvicorn's 5 s (see Bench.streaming).
    limits = httpx.Limits(keepalive_expiry=1.0)
    async with httpx.AsyncClient(timeout=ADMIN_TIMEOUT, limits=limits) as admin:
        return await Bench(fleet, args, admin).run()


def nodes_needed(args: argparse.Namespace) -> int:
    needs: dict[str, int] = {"overhead": 1, "scaling": 2, "failover": args.nodes}
    return max(needs[phase] for phase in args.phases)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="smollm2:135m", help="the bundled model nodes serve")
    parser.add_argument("--threads", type=int, default=1, help="BLACKROAD_NUM_THREADS per node")
    parser.add_argument(
        "--kind", choices=("ollama", "openai"), default="ollama", help="the nodes' protocol"
    )
    parser.add_argument("--api", choices=sorted(CALLERS), default="openai", help="overhead client")
    parser.add_argument("--requests", type=int, default=200, help="overhead: requests per side")
    parser.add_argument("--warmup", type=int, default=10, help="overhead: unmeasured per side")
    parser.add_argument("--streams", type=int, default=8, help="scaling: streams at once")
    parser.add_argument("--stream-tokens", type=int, default=64, help="scaling: tokens each")
    parser.add_argument("--repeats", type=int, default=2, help="scaling: runs per side")
    parser.add_argument("--nodes", type=int, default=3, help="failover: nodes (2 or more)")
    parser.add_argument("--concurrency", type=int, default=4, help="failover: chats at once")
    parser.add_argument("--duration", type=float, default=60.0, help="failover: s per phase")
    parser.add_argument("--kill-every", type=float, default=5.0, help="failover: s between kills")
    parser.add_argument("--chat-tokens", type=int, default=32, help="failover: tokens per chat")
    parser.add_argument("--seed", type=int, default=1, help="failover: which nodes are killed")
    parser.add_argument(
        "--idle", type=float, default=6.0, help="s the control plane is watched idle per fleet size"
    )
    parser.add_argument("--keep-logs", type=Path, help="copy every process's logs here at the end")
    parser.add_argument(
        "--phases",
        type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
        default=list(PHASES),
        help=f"which of {','.join(PHASES)} to run (comma-separated)",
    )
    args = parser.parse_args(argv)
    if not args.phases or set(args.phases) - set(PHASES):
        parser.error(f"--phases takes some of {','.join(PHASES)}")
    counts = (args.threads, args.requests, args.streams, args.repeats, args.concurrency)
    if min(counts) < 1 or args.warmup < 0 or args.nodes < 2:
        parser.error("need counts >= 1, --warmup >= 0 and --nodes >= 2")
    if args.stream_tokens < 2 or args.chat_tokens < 2:
        parser.error("need --stream-tokens >= 2 and --chat-tokens >= 2")
    if args.duration <= 0 or args.kill_every <= 0 or args.idle <= 0:
        parser.error("need --duration, --kill-every and --idle > 0")
    return args


@contextlib.contextmanager
def fleet_of(nodes: int, args: argparse.Namespace) -> Iterator[Fleet]:
    """The fleet's processes, in temporary homes; all stopped at the end, however it ends."""
    with tempfile.TemporaryDirectory(prefix="blackroad-fleet-") as root:
        fleet = Fleet.create(Path(root), nodes, args)
        try:
            yield fleet
        except Exception:
            for process in fleet.processes:
                print(f"end of {process.name}'s log ({process.log}):", file=sys.stderr)
                with contextlib.suppress(OSError):
                    tail = process.log.read_text(errors="replace").splitlines()[-15:]
                    print("\n".join(f"  {line}" for line in tail), file=sys.stderr)
            raise
        finally:
            fleet.stop()
            if args.keep_logs is not None:
                for process in fleet.processes:
                    for log in process.home.glob("server-*.log"):
                        target = args.keep_logs / process.name / log.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(log, target)


def main(argv: list[str] | None = None) -> int:
    """Run every phase: 0 when the measurements are valid, 1 otherwise, 2 on bad arguments."""
    args = parse_args(argv)
    if str(ROOT) not in sys.path:  # run as a script rather than with -m
        sys.path.insert(0, str(ROOT))
    from blackroad.models.bundled import bundled_models

    models = bundled_models()
    if args.model not in models:
        print(
            f"unknown model {args.model!r}; bundled: {', '.join(sorted(models))}", file=sys.stderr
        )
        return 2
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    entry = ["-m", "bench.fleet"] if __spec__ is not None else [sys.argv[0]]
    command = shlex.join([str(python), *entry, *(sys.argv[1:] if argv is None else argv)])
    nodes = nodes_needed(args)
    print(f"command:  {command}")
    print(f"cpu:      {cpu_model()} ({cpu_count()} usable cores)")
    print(
        f"fleet:    a control plane and {nodes} nodes, each `blackroad up` on 127.0.0.1 with its "
        f"own home; nodes: BLACKROAD_NUM_THREADS={args.threads}, BLACKROAD_NUM_PARALLEL="
        f"{args.streams}; control plane: BLACKROAD_NODE_CONCURRENCY={args.streams}"
    )
    print(
        f"models:   {MODEL} (every node) and {SOLO} (node1), both {args.model} "
        f"({models[args.model].name}); peers added as kind {args.kind}"
    )
    # SIGTERM stops the bench as Ctrl-C does: through the clean-up that stops the fleet.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with fleet_of(nodes, args) as fleet:
            summary = asyncio.run(bench(fleet, args))
    except KeyboardInterrupt:
        print("interrupted: every process of the fleet is stopped", file=sys.stderr)
        return 130
    print("\nsummary")
    print(*summary.rows, sep="\n")
    others = summary.other_cores
    sys.stdout.flush()  # warnings go to stderr: keep them in order
    if others and max(others) > OTHER_LOAD_WARNING:
        print(
            f"warning: other processes used up to {max(others):.2f} cores during measurements "
            f"(median {median(others):.2f}); the figures are disturbed, rerun on a quiet machine",
            file=sys.stderr,
        )
    if not summary.valid:
        print("verdict: INVALID, requests failed where nothing was killed (see ERROR lines)")
    return 0 if summary.valid else 1


if __name__ == "__main__":
    sys.exit(main())
