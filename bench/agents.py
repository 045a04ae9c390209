"""The agent run loop's overhead: what journaling, auditing and dispatch add to its model calls.

    .venv/bin/python -m bench.agents [--model smollm2:135m] [--threads 2] [--runs 3] [--in-process]

An agent with the one tool ``calculator``, ``tool_choice`` = ``["calculator"] * 20``,
``max_steps`` 20 and temperature 0 is run on a fixed task: 20 model steps,
each a forced calculator call, 20 tool steps, then the step limit. A run's
wall time splits into model time (the model steps' ``duration_ms``: the
model call's wall time), tool time (the tool steps' ``duration_ms``: the
tool's own time) and the rest, the loop's **overhead**: reading the run back
from the journal each turn, writing each step with its audit record in one
SQLite transaction (a tool step twice: started, then completed), the hops to
worker threads, building the next prompt, publishing events. Target:
overhead at most 5 % of model time.

The overhead of one step is the gap its own work leaves: the time from the
end of the previous step (or the run's start) to the end of this one, less
its model or tool time; the step limit's write is one more gap. They add up
to the whole overhead. It is measured two ways, printed separately:

- **server**: a real ``blackroad up`` (own temporary home); the run is
  started with ``stream: true`` over the agents API and read to its end; the
  figures come from the journal (``GET /api/agents/runs/{id}``): the run's
  ``created_at`` to its ``updated_at`` (the step limit), and each step's
  ``created_at`` (a model step, written when its call is done) or
  ``updated_at`` (a tool step, completed). These timestamps have millisecond
  resolution, so each step's gap is good to about ±1 ms; their sum is exact
  to 2 ms. The client's wall clock (POST sent to the last event read) is
  printed too.
- **in-process** (``--in-process``): the same app (``create_app``, its lifespan, the real
  engine and a real SQLite file in another temporary home) driven by its own
  ``Runner`` in this process, after the server has stopped; each step's end
  is the ``perf_counter`` time its event reaches a listener (published right
  after the step's transaction commits), the start is taken before
  ``Runner.start``. The journal's methods are timed as they run, which
  splits the overhead into journal reads, journal writes (with the audit
  appends) and the rest. Its model calls ran an order of magnitude slower
  than the server's on the 2-core development machine (not explained yet:
  docs/benchmarks.md), so only its overhead figures are worth reading.

The **baseline** is the model time the loop wraps, as a client would spend
it without the agent: for each of the 20 model steps of the server's last
agent run, the same messages (the run's history as the loop renders it,
with the tool described in the system message) and the same constrained
JSON (the loop's JSON schema as ``response_format``), ``max_tokens``,
``temperature`` and ``repeat_penalty``, sent one after another to
``POST /v1/chat/completions`` with the official ``openai`` client. The two
alternate (agent first on odd runs, baseline first on even ones), so drift
in machine speed falls on both; the ratio agent run wall time / baseline
wall time is printed, and how many of the baseline's answers are the calls
the agent's model steps made.

Each side has one unmeasured warm-up run (the model loads on the first
call). Figures are medians over ``--runs``; the per-step p50/p95 pool every
step gap of the measured runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import openai

from bench.overhead import cpu_count, cpu_model, server_process
from blackroad.agents.builtin import builtin_tools
from blackroad.agents.definitions import AgentDefinition
from blackroad.agents.journal import Journal, Run, Step
from blackroad.agents.runner import history
from blackroad.engines.base import Message
from blackroad.identity.types import LOCAL_ADMIN
from blackroad.service import tools as tool_calling

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.shared_params import ResponseFormatJSONSchema

TOOL = "calculator"
CALLS = 20
TARGET = 0.05  # overhead / model time, at most
TASK = (
    "Work these out one at a time with the calculator: 1 + 1, 2 + 2, 3 + 3, and so on "
    "up to 20 + 20."
)
JOURNAL_READS = ("run", "steps")
JOURNAL_WRITES = ("start", "add_step", "update_step", "set_status")


@dataclass(frozen=True)
class Mark:
    """One step as the overhead sees it: when it ended, and how much of it was its own work."""

    kind: str  # "model", "tool", or "end" (the step limit)
    ended: float  # seconds, on the clock of the run's start
    work: float  # seconds of model or tool time; 0 for the end


@dataclass(frozen=True)
class Loop:
    """One agent run, accounted."""

    started: float
    marks: tuple[Mark, ...]
    client_wall_s: float | None = None  # the server side: POST sent to the last event read
    journal_ms: Mapping[str, float] = field(default_factory=dict)  # in-process: per method

    @property
    def total_s(self) -> float:
        return self.marks[-1].ended - self.started

    def work_s(self, kind: str) -> float:
        return sum(mark.work for mark in self.marks if mark.kind == kind)

    @property
    def overhead_s(self) -> float:
        return self.total_s - self.work_s("model") - self.work_s("tool")

    def gaps_ms(self) -> list[float]:
        """Each step's overhead: from the previous step's end to its own, less its work."""
        ends = [self.started, *(mark.ended for mark in self.marks)]
        return [(ends[i + 1] - ends[i] - mark.work) * 1000 for i, mark in enumerate(self.marks)]

    def check(self) -> None:
        kinds = [mark.kind for mark in self.marks]
        expected = ["model", "tool"] * CALLS + ["end"]
        if kinds != expected:
            raise SystemExit(f"the run did not make {CALLS} calculator calls: {kinds}")


def definition(model: str) -> dict[str, Any]:
    return {"name": "bench", "model": model, "tools": [TOOL], "tool_choice": [TOOL] * CALLS,
            "max_steps": CALLS, "temperature": 0}  # fmt: skip


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def from_journal(run: Mapping[str, Any], client_wall_s: float) -> Loop:
    """A server run from its journal: model steps end when written, tool steps when completed."""
    marks = [
        Mark(
            step["kind"],
            seconds(step["created_at"] if step["kind"] == "model" else step["updated_at"]),
            step["duration_ms"] / 1000,
        )
        for step in run["steps"]
    ]
    marks.append(Mark("end", seconds(run["updated_at"]), 0.0))
    return Loop(seconds(run["created_at"]), tuple(marks), client_wall_s=client_wall_s)


# -- the server side -------------------------------------------------------------


def journal_objects(agent: Mapping[str, Any], run: Mapping[str, Any]) -> tuple[Run, list[Step]]:
    """The run and its steps as the loop holds them, from their JSON."""
    names = {f.name for f in fields(AgentDefinition)}
    spec = AgentDefinition.of({k: v for k, v in agent.items() if k in names})
    # The sandbox is the server's secret and no part of what the model was asked.
    record = Run(run["id"], run["agent_id"], run["owner"], spec, run["input"], run["status"],
                 run["answer"], run["error"], run["created_at"], run["updated_at"],
                 sandbox="")  # fmt: skip
    return record, [Step(**step) for step in run["steps"]]


def model_requests(
    agent: Mapping[str, Any], run: Mapping[str, Any]
) -> Iterator[tuple[list[Message], dict[str, Any], list[dict[str, Any]]]]:
    """For each model step: its messages, its JSON schema, and the calls it made."""
    record, steps = journal_objects(agent, run)
    calculator = builtin_tools(frozenset())[TOOL]
    spec = tool_calling.tool(calculator.name, calculator.description, calculator.parameters, "")
    models = [index for index, step in enumerate(steps) if step.kind == "model"]
    for turn, index in enumerate(models):
        step = steps[index]
        plan = tool_calling.plan([spec], record.definition.choice_at(turn))
        schema = plan.schema()
        assert schema is not None, "every step forces a call"
        calls = [{"name": c["name"], "arguments": c["arguments"]} for c in step.output["calls"]]
        yield plan.offered(history(record, steps[:index])), schema, calls


def baseline(
    client: openai.OpenAI, agent: Mapping[str, Any], run: Mapping[str, Any]
) -> tuple[float, int]:
    """The agent run's model calls made directly: wall seconds, and answers equal to its calls."""
    same, took = 0, 0.0
    for messages, schema, calls in model_requests(agent, run):
        constrained: ResponseFormatJSONSchema = {
            "type": "json_schema", "json_schema": {"name": "tool_calls", "schema": schema}
        }  # fmt: skip
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model=agent["model"],
            messages=cast("list[ChatCompletionMessageParam]", messages),
            response_format=constrained,
            max_tokens=agent["max_tokens"],
            temperature=agent["temperature"],
            extra_body={"repeat_penalty": agent["repeat_penalty"]},
        )  # fmt: skip
        took += time.perf_counter() - started
        text = reply.choices[0].message.content or ""
        with contextlib.suppress(json.JSONDecodeError):
            same += json.loads(text).get("tool_calls") == calls
    return took, same


def agent_run(agents: Any, agent: Mapping[str, Any]) -> tuple[Loop, dict[str, Any]]:
    started = time.perf_counter()
    events = agents.stream(agent, TASK)
    wall = time.perf_counter() - started
    run = agents.get(events[-1][1]["id"])
    if run["status"] != "step_limit":
        raise SystemExit(f"the run ended {run['status']}: {run.get('error')}")
    loop = from_journal(run, wall)
    loop.check()
    return loop, run


def server_side(args: argparse.Namespace) -> tuple[list[Loop], list[tuple[float, int]]]:
    from tests.support.agents import Agents

    loops: list[Loop] = []
    baselines: list[tuple[float, int]] = []
    with (
        server_process(args.threads) as (url, _),
        Agents(url) as agents,
        openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client,
    ):
        agent = agents.create(**definition(args.model))
        _, last = agent_run(agents, agent)  # warm-up: loads the model
        baseline(client, agent, last)
        for index in range(args.runs):
            if index % 2 == 1:
                baselines.append(baseline(client, agent, last))
            loop, last = agent_run(agents, agent)
            loops.append(loop)
            if index % 2 == 0:
                baselines.append(baseline(client, agent, last))
            took, same = baselines[-1]
            print(f"  server run {index + 1}: {line(loop)}; client wall "
                  f"{loop.client_wall_s:.2f} s; baseline {took:.2f} s ({same}/{CALLS} same "
                  "answers)", flush=True)  # fmt: skip
    return loops, baselines


# -- the in-process side ------------------------------------------------------------


def timed_journal(journal: Journal) -> dict[str, float]:
    """Time spent in each of the journal's methods from now on, in ms (added as they run)."""
    spent: dict[str, float] = defaultdict(float)

    def timing(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += (time.perf_counter() - began) * 1000

        return timed

    for name in (*JOURNAL_READS, *JOURNAL_WRITES):
        setattr(journal, name, timing(name, getattr(journal, name)))
    return spent


async def in_process_runs(args: argparse.Namespace, home: Path) -> list[Loop]:
    from blackroad.api.app import create_app
    from blackroad.config import Settings

    sys.setswitchinterval(0.0005)  # as ``blackroad up`` sets it
    app = create_app(Settings(home=home, num_threads=args.threads))
    state = app.state
    loops: list[Loop] = []
    async with app.router.lifespan_context(app):
        spec = AgentDefinition.of(definition(args.model))
        agent = await asyncio.to_thread(state.agents.create, LOCAL_ADMIN.user, spec)
        spent = timed_journal(state.journal)
        for index in range(args.runs + 1):  # the first is the warm-up
            spent.clear()
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            started = time.perf_counter()
            run = await state.runner.start(LOCAL_ADMIN, agent, TASK)
            # The run's task has not run yet: nothing is published before this.
            state.runner.listeners.setdefault(run.id, set()).add(queue)
            marks = []
            while True:
                event = await queue.get()
                now = time.perf_counter()
                if event["type"] == "run" and event["run"]["status"] != "running":
                    marks.append(Mark("end", now, 0.0))
                    break
                step = event.get("step")
                if step is not None and step["status"] == "completed":
                    marks.append(Mark(step["kind"], now, step["duration_ms"] / 1000))
            del state.runner.listeners[run.id]
            loop = Loop(started, tuple(marks), journal_ms=dict(spent))
            loop.check()
            if index > 0:
                loops.append(loop)
                print(f"  in-process run {index}: {line(loop)}", flush=True)
    return loops


# -- the figures ---------------------------------------------------------------------


def percentile(values: Sequence[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def line(loop: Loop) -> str:
    model, tool = loop.work_s("model"), loop.work_s("tool")
    return (
        f"total {loop.total_s:.3f} s, model {model:.3f} s, tool {tool * 1000:.1f} ms, "
        f"overhead {loop.overhead_s * 1000:.1f} ms ({loop.overhead_s / model:.2%})"
    )


def summary(name: str, loops: Sequence[Loop]) -> dict[str, float]:
    gaps = [gap for loop in loops for gap in loop.gaps_ms()]
    steps = len(loops[0].marks)
    figures = {
        "total_s": statistics.median(loop.total_s for loop in loops),
        "model_s": statistics.median(loop.work_s("model") for loop in loops),
        "tool_ms": statistics.median(loop.work_s("tool") * 1000 for loop in loops),
        "overhead_ms": statistics.median(loop.overhead_s * 1000 for loop in loops),
        "overhead_pct": statistics.median(
            100 * loop.overhead_s / loop.work_s("model") for loop in loops
        ),
        "per_step_ms": statistics.median(loop.overhead_s * 1000 / steps for loop in loops),
        "step_p50_ms": statistics.median(gaps),
        "step_p95_ms": percentile(gaps, 95),
    }
    verdict = "PASS" if figures["overhead_pct"] <= TARGET * 100 else "MISS"
    print(
        f"{name:<11} {figures['total_s']:>8.3f} {figures['model_s']:>8.3f} "
        f"{figures['tool_ms']:>8.1f} {figures['overhead_ms']:>9.1f} "
        f"{figures['overhead_pct']:>6.2f} % {verdict}  {figures['per_step_ms']:>6.2f} "
        f"{figures['step_p50_ms']:>6.2f} {figures['step_p95_ms']:>6.2f}"
    )
    return figures


def report(
    server: Sequence[Loop], local: Sequence[Loop], baselines: Sequence[tuple[float, int]]
) -> None:
    print(f"\nmedians of {len(server)} runs; {CALLS} model + {CALLS} tool steps + the step limit "
          f"= {2 * CALLS + 1} steps; target overhead <= {TARGET:.0%} of model time")  # fmt: skip
    print(f"{'side':<11} {'total s':>8} {'model s':>8} {'tool ms':>8} {'overhead':>9} "
          f"{'% model':>8} {'':4}  {'ms/step':>6} {'p50':>6} {'p95':>6}")  # fmt: skip
    result = {"server": summary("server", server)}
    if local:
        result["in_process"] = summary("in-process", local)
        reads, writes = (
            statistics.median(sum(loop.journal_ms.get(n, 0.0) for n in names) for loop in local)
            for names in (JOURNAL_READS, JOURNAL_WRITES)
        )
        rest = result["in_process"]["overhead_ms"] - reads - writes
        print(f"in-process overhead: journal reads {reads:.1f} ms, journal writes with their "
              f"audit records {writes:.1f} ms, the rest (thread hops, prompts, events) "
              f"{rest:.1f} ms")  # fmt: skip
        result["in_process"].update(journal_reads_ms=reads, journal_writes_ms=writes)
    agent_wall = statistics.median(loop.client_wall_s or 0.0 for loop in server)
    direct = statistics.median(took for took, _ in baselines)
    same = min(same for _, same in baselines)
    print(f"\nagent run, client wall clock (POST to its last event): {agent_wall:.3f} s")
    print(f"the same {CALLS} calls through /v1/chat/completions:      {direct:.3f} s "
          f"(at least {same}/{CALLS} answers the agent's calls)")  # fmt: skip
    print(f"ratio agent run / direct calls: {agent_wall / direct:.3f}")
    result["baseline"] = {"agent_wall_s": agent_wall, "direct_s": direct,
                          "ratio": agent_wall / direct, "same_answers": same}  # fmt: skip
    print(json.dumps({side: {k: round(v, 3) for k, v in figures.items()}
                      for side, figures in result.items()}))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="smollm2:135m", help="a bundled model name")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per side")
    parser.add_argument("--in-process", action="store_true", help="also drive Runner here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1:
        parser.error("need --runs >= 1 and --threads >= 1")
    python = Path(sys.executable)
    command = shlex.join([str(python.relative_to(Path.cwd()) if python.is_relative_to(Path.cwd())
                          else python), "-m", "bench.agents", *sys.argv[1:]])  # fmt: skip
    print(f"command: {command}")
    print(f"cpu:     {cpu_model()} ({cpu_count()} usable cores), load average "
          f"{' '.join(f'{n:.2f}' for n in os.getloadavg())}")  # fmt: skip
    print(f"model:   {args.model}, {args.threads} threads; {CALLS} forced {TOOL} calls a run, "
          f"temperature 0; 1 warm-up + {args.runs} runs per side")  # fmt: skip
    server, baselines = server_side(args)
    local: list[Loop] = []
    if args.in_process:
        with tempfile.TemporaryDirectory(prefix="blackroad-bench-agents-") as home:
            local = asyncio.run(in_process_runs(args, Path(home)))
    report(server, local, baselines)
    print(f"load average at the end: {' '.join(f'{n:.2f}' for n in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
