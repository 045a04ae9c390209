"""Results of ``bench/serving.py``: what it measured, and the tables it prints.

What one stream, one workload and one server run measured, the per-server
tables (medians over repetitions) and the ratios against issue 6's targets.
The method is described in ``bench/serving.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.overhead import median

STREAMS = (1, 4, 8)  # concurrent streams of the counting workloads

TARGET_SINGLE = 0.97  # 1 stream decode, BlackRoad / llama-server, at least
TARGET_AGGREGATE = 1.0  # 8 streams aggregate, BlackRoad / llama-server, at least
TARGET_AGGREGATE_LCP = 2.0  # 8 streams aggregate, BlackRoad / llama-cpp-python, at least
TARGET_FAIRNESS = 1.5  # per-stream decode max / min, at most
TARGET_TURNS = 0.15  # second-turn TTFT / first-turn TTFT, at most


@dataclass(frozen=True)
class Stream:
    """One streamed chat completion, timed (``time.perf_counter`` seconds)."""

    sent: float
    first: float | None  # first chunk with text
    last: float | None  # last chunk with text
    tokens: int  # completion tokens: the server's usage, else chunks with text
    usage: bool  # whether ``tokens`` came from the server's usage
    prompt_tokens: int | None
    finish_reason: str | None
    text: str

    @property
    def ttft_ms(self) -> float:
        return float("nan") if self.first is None else (self.first - self.sent) * 1000

    @property
    def decode_tps(self) -> float:
        if self.first is None or self.last is None or self.tokens < 2 or self.last <= self.first:
            return float("nan")
        return (self.tokens - 1) / (self.last - self.first)


@dataclass(frozen=True)
class Concurrent:
    """N streams sent at once."""

    streams: list[Stream]

    @property
    def aggregate_tps(self) -> float:
        firsts = [s.first for s in self.streams if s.first is not None]
        lasts = [s.last for s in self.streams if s.last is not None]
        if not firsts or not lasts or max(lasts) <= min(firsts):
            return float("nan")
        return sum(max(0, s.tokens - 1) for s in self.streams) / (max(lasts) - min(firsts))

    @property
    def rates(self) -> list[float]:
        return [s.decode_tps for s in self.streams]

    @property
    def fairness(self) -> float:
        """Per-stream decode tok/s, max over min."""
        return max(self.rates) / min(self.rates)

    def ttft_ms(self, q: float) -> float:
        return percentile([s.ttft_ms for s in self.streams], q)


@dataclass(frozen=True)
class Interleaved:
    """The four two-turn chats, A1 B1 C1 D1 A2 B2 C2 D2."""

    first: list[Stream]
    second: list[Stream]

    @property
    def first_ms(self) -> float:
        return median([s.ttft_ms for s in self.first])

    @property
    def second_ms(self) -> float:
        return median([s.ttft_ms for s in self.second])

    @property
    def ratio(self) -> float:
        return self.second_ms / self.first_ms


@dataclass
class ServerRun:
    """One server, one repetition."""

    name: str
    concurrent: dict[int, Concurrent] = field(default_factory=dict)
    interleaved: Interleaved | None = None
    errors: list[str] = field(default_factory=list)
    short: list[str] = field(default_factory=list)  # streams that ended early
    # Cores used by other processes during each workload ("1", "4", "8", "turns").
    other_cores: dict[str, float] = field(default_factory=dict)
    usage: bool = False


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_lines(run: ServerRun) -> str:
    """What one server did in one repetition, a line per workload."""

    def load(workload: str) -> str:
        cores = run.other_cores.get(workload)
        return "" if cores is None else f"  other load {cores:.2f} cores"

    lines = [f"  {run.name}:"]
    for n, c in run.concurrent.items():
        lines.append(
            f"    {n} stream{'s' * (n > 1)}: {c.aggregate_tps:6.1f} tok/s, per stream "
            f"{min(c.rates):.1f}..{max(c.rates):.1f}, TTFT p50 {c.ttft_ms(0.5):.0f} ms "
            f"p95 {c.ttft_ms(0.95):.0f} ms{load(str(n))}"
        )
    if run.interleaved is not None:
        i = run.interleaved
        counted = [s.prompt_tokens for s in i.first if s.prompt_tokens is not None]
        prompts = f", first-turn prompts {min(counted)}..{max(counted)} tokens" if counted else ""
        lines.append(
            f"    interleaved: TTFT first turns {i.first_ms:.0f} ms, second turns "
            f"{i.second_ms:.0f} ms, ratio {i.ratio:.3f}{prompts}{load('turns')}"
        )
    lines += [f"    ERROR {e}" for e in run.errors]
    lines += [f"    short: {s}" for s in run.short]
    return "\n".join(lines)


Figures = dict[str, float]  # one server's figures, median over repetitions


def figures(runs: list[ServerRun]) -> Figures:
    out: Figures = {}
    for n in STREAMS:
        done = [r.concurrent[n] for r in runs if n in r.concurrent]
        out[f"{n} agg"] = median([c.aggregate_tps for c in done])
        out[f"{n} min"] = median([min(c.rates) for c in done])
        out[f"{n} max"] = median([max(c.rates) for c in done])
        out[f"{n} fair"] = median([c.fairness for c in done])
        out[f"{n} p50"] = median([c.ttft_ms(0.5) for c in done])
        out[f"{n} p95"] = median([c.ttft_ms(0.95) for c in done])
    turns = [r.interleaved for r in runs if r.interleaved is not None]
    out["turn1"] = median([t.first_ms for t in turns])
    out["turn2"] = median([t.second_ms for t in turns])
    out["turns"] = median([t.ratio for t in turns])
    return out


def report(results: dict[str, list[ServerRun]], repeats: int) -> dict[str, Figures]:
    table = {name: figures(runs) for name, runs in results.items()}
    note = f"median of {repeats} repetitions" if repeats > 1 else "1 repetition"
    for name, f in table.items():
        counted = "usage" if any(r.usage for r in results[name]) else "chunks with text"
        print(f"\n{name} ({note}; completion tokens from {counted})")
        print(
            f"{'streams':>7} {'aggregate tok/s':>16} {'per-stream tok/s min..max':>26} "
            f"{'max/min':>8} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12}"
        )
        for n in STREAMS:
            span = f"{f[f'{n} min']:.1f}..{f[f'{n} max']:.1f}"
            print(
                f"{n:>7} {f[f'{n} agg']:>16.1f} {span:>26} {f[f'{n} fair']:>8.2f} "
                f"{f[f'{n} p50']:>12.1f} {f[f'{n} p95']:>12.1f}"
            )
        print(
            f"interleaved: first-turn TTFT {f['turn1']:.1f} ms, second-turn {f['turn2']:.1f} ms, "
            f"ratio {f['turns']:.3f}"
        )
    return table


Target = tuple[str, float] | None  # (">=" or "<=", goal), or None where no target is set


def ratios(table: dict[str, Figures]) -> None:
    """Print every ratio of BlackRoad to a peer, and its own, against issue 6's targets."""
    ours = table.get("BlackRoad")
    if ours is None:
        return
    rows: list[tuple[str, float, Target]] = []
    for peer, theirs in table.items():
        if peer == "BlackRoad":
            continue
        for n in STREAMS:
            target: Target = None
            if n == 1 and peer == "llama-server":
                target = (">=", TARGET_SINGLE)
            elif n == max(STREAMS):
                goal = TARGET_AGGREGATE if peer == "llama-server" else TARGET_AGGREGATE_LCP
                target = (">=", goal)
            what = "1 stream decode" if n == 1 else f"{n} streams aggregate decode"
            value = ours[f"{n} agg"] / theirs[f"{n} agg"]
            rows.append((f"{what}, BlackRoad / {peer}", value, target))
        for n in STREAMS:
            value = ours[f"{n} p50"] / theirs[f"{n} p50"]
            rows.append((f"{n} stream{'s' * (n > 1)} TTFT p50, BlackRoad / {peer}", value, None))
        value = ours["turn2"] / theirs["turn2"]
        rows.append((f"second-turn TTFT, BlackRoad / {peer}", value, None))
    for n in STREAMS[1:]:
        value = ours[f"{n} fair"]
        rows.append((f"{n} streams per-stream max/min, BlackRoad", value, ("<=", TARGET_FAIRNESS)))
    rows.append(("second-turn / first-turn TTFT, BlackRoad", ours["turns"], ("<=", TARGET_TURNS)))
    for peer, theirs in table.items():
        if peer != "BlackRoad":
            rows.append((f"second-turn / first-turn TTFT, {peer}", theirs["turns"], None))
    print(f"\n{'ratio':<56} {'value':>7} {'target':>8}  verdict")
    for label, value, target in rows:
        if target is None:
            print(f"{label:<56} {value:>7.3f}")
            continue
        op, goal = target
        met = value >= goal if op == ">=" else value <= goal
        print(f"{label:<56} {value:>7.3f} {f'{op} {goal:g}':>8}  {'PASS' if met else 'MISS'}")


def agreement(results: dict[str, list[ServerRun]]) -> None:
    """How many counting streams produced the same text as the reference peer."""
    names = [n for n in ("llama-server", "llama-cpp-python") if n in results]
    if not names:
        return
    reference = names[0]

    def texts(runs: list[ServerRun]) -> dict[tuple[int, int, int], str]:
        return {
            (r, n, i): s.text
            for r, run in enumerate(runs)
            for n, c in run.concurrent.items()
            for i, s in enumerate(c.streams)
        }

    ref = texts(results[reference])
    for name, runs in results.items():
        if name == reference:
            continue
        mine = texts(runs)
        shared = [k for k in mine if k in ref]
        same = sum(mine[k] == ref[k] for k in shared)
        print(f"counting streams with the same text as {reference}: {name} {same}/{len(shared)}")
