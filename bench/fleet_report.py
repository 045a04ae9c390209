"""The figures of ``bench/fleet.py`` and how they are reported: one dataclass and one
report function per measurement (router overhead, scaling, failover), and the
summary's lines with their targets."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

from bench.overhead import median, spread
from bench.serving_report import Concurrent, Stream, percentile

# What the control plane logs (fleet/router.py, fleet/probes.py) when a node fails.
ROUTER_FAILED = "blackroad.fleet.router: node "
ROUTER_CONTINUED = "blackroad.fleet.router: continuing "
PROBE_FAILED = "failed its probe"
P50_TARGET_MS = 2.0  # latency the router adds, at most
P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class Window:
    """A stretch of wall time: the control plane's CPU in it, the other processes' load."""

    wall_s: float
    control_s: float | None
    other_cores: float | None  # None where a fleet process was replaced meanwhile
    bench_s: float  # this process: the clients

    @property
    def control_cores(self) -> float | None:
        return None if self.control_s is None else self.control_s / self.wall_s

    def per(self, count: int, idle: float | None) -> float:
        """Control plane CPU ms per one of ``count`` (requests, tokens), less its ``idle`` use
        (cores: the probes, which run whether anything is routed or not)."""
        if self.control_s is None or not count:
            return float("nan")
        return (self.control_s - (idle or 0.0) * self.wall_s) * 1000 / count


def cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def row(what: str, figure: str, unit: str = "", note: str = "") -> str:
    """A line of the summary."""
    return f"{what:<46} {figure:>9} {unit:<5} {note}".rstrip()


def verdict(what: str, value: float, target: float, unit: str) -> str:
    met = "target met" if value <= target else "target MISSED"
    figure = f"{value:+.2f}" if unit == "ms" else f"{value:g}"
    return row(what, figure, unit, f"(<= {target:g} {unit}) {met}")


# -- 1. router overhead ------------------------------------------------------------


@dataclass(frozen=True)
class Overhead:
    direct_ms: list[float]
    routed_ms: list[float]
    errors: Counter[str]
    window: Window

    def added(self, q: float) -> float:
        return percentile(self.routed_ms, q) - percentile(self.direct_ms, q)

    @property
    def paired_ms(self) -> float:
        """The median over ABBA pairs of routed minus direct."""
        return median([r - d for d, r in zip(self.direct_ms, self.routed_ms, strict=False)])


def report_overhead(result: Overhead, idle: float | None, requests: int) -> list[str]:
    """Print the overhead figures; the summary rows."""
    print(f"\nrouter overhead ({requests} requests per side, ABBA, one at a time)")
    print(f"{'':>8} {'p50 ms':>8} {'p99 ms':>8} {'min ms':>8} {'max ms':>8}")
    for name, values in (("direct", result.direct_ms), ("routed", result.routed_ms)):
        if values:
            print(
                f"{name:>8} {percentile(values, 0.5):8.2f} {percentile(values, 0.99):8.2f} "
                f"{min(values):8.2f} {max(values):8.2f}"
            )
    cpu = result.window.per(requests, idle)
    print(
        f"added: p50 {result.added(0.5):+.2f} ms, p99 {result.added(0.99):+.2f} ms, "
        f"median of pairs {result.paired_ms:+.2f} ms; control plane cpu {cpu:.2f} ms per "
        f"routed request (less its idle use); other load {cores(result.window.other_cores)} cores"
    )
    for kind, n in sorted(result.errors.items()):
        print(f"  ERROR {n}x {kind}")
    return [
        verdict("router overhead: p50 added", result.added(0.5), P50_TARGET_MS, "ms"),
        verdict("router overhead: p99 added", result.added(0.99), P99_TARGET_MS, "ms"),
        row("control plane cpu per routed 1-token request", f"{cpu:.2f}", "ms"),
    ]


# -- 2. scaling ----------------------------------------------------------------------


@dataclass(frozen=True)
class Scaled:
    nodes: int
    run: Concurrent | None
    errors: list[str]
    node_tokens: dict[str, float]
    window: Window

    @property
    def tokens(self) -> int:
        return 0 if self.run is None else sum(s.tokens for s in self.run.streams)

    def line(self, label: str, idle: float | None) -> str:
        if self.run is None:
            return f"  {label:<6} {self.nodes} node(s): " + "; ".join(self.errors)
        split = " ".join(f"{name} {n:.0f}" for name, n in self.node_tokens.items())
        return (
            f"  {label:<6} {self.nodes} node{'s' * (self.nodes > 1)}: "
            f"{self.run.aggregate_tps:6.1f} tok/s aggregate, per stream "
            f"{min(self.run.rates):.1f}..{max(self.run.rates):.1f}, TTFT p50 "
            f"{self.run.ttft_ms(0.5):.0f} ms; tokens by node: {split}; control plane cpu "
            f"{self.window.per(self.tokens, idle):.3f} ms/token, the bench's "
            f"{self.window.bench_s * 1000 / max(1, self.tokens):.3f}; "
            f"other load {cores(self.window.other_cores)} cores"
        )


def report_scaling(runs: list[Scaled], idle: float | None) -> list[str]:
    rates = {n: [r.run.aggregate_tps for r in runs if r.nodes == n and r.run] for n in (1, 2)}
    if not rates[1] or not rates[2]:
        return [row("scaling", "no complete run on one side")]
    cpu = median([r.window.per(r.tokens, idle) for r in runs if r.run is not None])
    ratio = median(rates[2]) / median(rates[1])
    print(
        f"aggregate tok/s: 1 node {spread(rates[1], 1)}, 2 nodes {spread(rates[2], 1)}; "
        f"ratio 2/1 {ratio:.2f}; control plane cpu {cpu:.3f} ms per routed token, less its "
        f"idle use (one core would route ~{1000 / cpu:.0f} tok/s)"
    )
    return [
        row("scaling: aggregate tok/s, 1 node", f"{median(rates[1]):.1f}"),
        row("scaling: aggregate tok/s, 2 nodes", f"{median(rates[2]):.1f}"),
        row("scaling: ratio 2 nodes / 1 node", f"{ratio:.2f}", "x"),
        row("control plane cpu per routed streamed token", f"{cpu:.3f}", "ms"),
    ]


# -- 3. failover ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    prompt: int
    stream: Stream | None
    error: str | None

    def problem(self, max_tokens: int) -> str | None:
        """Why a stream that did not fail is not a whole answer, or None."""
        s = self.stream
        if s is None:
            return None
        if s.first is None:
            return "no text"
        if s.finish_reason is None:
            return "no finish_reason"
        if not s.usage:
            return "no usage"
        if s.finish_reason == "length" and s.tokens != max_tokens:
            return f"length after {s.tokens} of {max_tokens} tokens"
        return None

    @property
    def ttft_ms(self) -> float:
        return float("nan") if self.stream is None else self.stream.ttft_ms

    @property
    def total_ms(self) -> float:
        s = self.stream
        return float("nan") if s is None or s.last is None else (s.last - s.sent) * 1000


@dataclass
class Kills:
    """What the killer did: victims, kills skipped, seconds from a kill to the node routed again."""

    victims: list[str] = field(default_factory=list)
    skipped: int = 0
    back_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Phase:
    name: str
    outcomes: list[Outcome]
    window: Window
    control_log: str  # what the control plane logged during the phase
    kills: Kills | None = None

    def failed(self) -> list[str]:
        return [o.error for o in self.outcomes if o.error is not None]

    def incomplete(self, max_tokens: int) -> list[str]:
        return [p for o in self.outcomes if (p := o.problem(max_tokens))]

    def p99(self, what: str) -> float:
        """The 99th percentile of ``ttft_ms`` or ``total_ms`` over the streams that ended."""
        return percentile([getattr(o, what) for o in self.outcomes if o.stream], 0.99)

    def line(self, max_tokens: int, idle: float | None) -> str:
        done = [o for o in self.outcomes if o.stream is not None]
        tokens = sum(o.stream.tokens for o in done if o.stream)
        ttft = [o.ttft_ms for o in done]
        total = [o.total_ms for o in done]
        lines = self.control_log.splitlines()
        node_failures = sum(ROUTER_FAILED in line for line in lines)
        probes_failed = sum(PROBE_FAILED in line for line in lines)
        continued = sum(ROUTER_CONTINUED in line for line in lines)
        return (
            f"  {self.name:<8} {len(self.outcomes)} requests in {self.window.wall_s:.0f} s, "
            f"{len(self.failed())} failed, {len(self.incomplete(max_tokens))} incomplete; "
            f"TTFT p50 {percentile(ttft, 0.5):.0f} p99 {percentile(ttft, 0.99):.0f} ms; "
            f"total p50 {percentile(total, 0.5):.0f} p99 {percentile(total, 0.99):.0f} ms; "
            f"{tokens / self.window.wall_s:.1f} tok/s; control plane log: {node_failures} "
            f"requests failed on a node, {continued} of them continued elsewhere, "
            f"{probes_failed} outages seen first by a probe; cpu "
            f"{self.window.per(tokens, idle):.3f} ms/token (less its idle use); "
            f"other load {cores(self.window.other_cores)} cores"
        )


def same_text(reference: dict[int, str], phase: Phase) -> tuple[int, int, list[str]]:
    """Streams whose text equals the reference's for their prompt, of those compared."""
    equal = compared = 0
    examples: list[str] = []
    for outcome in phase.outcomes:
        if outcome.stream is None or outcome.prompt not in reference:
            continue
        compared += 1
        want, got = reference[outcome.prompt], outcome.stream.text
        if got == want:
            equal += 1
        elif len(examples) < 3:
            at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), 0)
            at = max(0, min(at, len(want), len(got)) - 40)
            examples.append(
                f"prompt {outcome.prompt}, {outcome.stream.tokens} tokens, from character {at}: "
                f"{want[at:][:100]!r} (no kills) vs {got[at:][:100]!r}"
            )
    return equal, compared, examples


def report_failover(
    calm: Phase, killed: Phase, idle: float | None, args: argparse.Namespace
) -> list[str]:
    for phase in (calm, killed):
        print(phase.line(args.chat_tokens, idle))
    kills = killed.kills or Kills()
    back = spread(kills.back_s, 1) if kills.back_s else "n/a"
    victims = ", ".join(f"{n}x {name}" for name, n in sorted(Counter(kills.victims).items()))
    print(
        f"  kills: {len(kills.victims)} ({victims or 'none'}), {kills.skipped} skipped (fewer "
        f"than 2 nodes in the rotation); kill to routed again: {back} s"
    )
    reference: dict[int, str] = {}
    for outcome in calm.outcomes:
        if outcome.stream is not None:
            reference.setdefault(outcome.prompt, outcome.stream.text)
    for phase in (calm, killed):
        equal, compared, examples = same_text(reference, phase)
        print(f"  {phase.name}: {equal} of {compared} texts equal the first no-kill text")
        for example in examples:
            print(f"    differs: {example}")
        faults = Counter(phase.failed() + phase.incomplete(args.chat_tokens))
        for kind, n in sorted(faults.items()):
            print(f"  {phase.name}: {n}x {kind}")
    equal, compared, _ = same_text(reference, killed)
    ttft = killed.p99("ttft_ms") - calm.p99("ttft_ms")
    total = killed.p99("total_ms") - calm.p99("total_ms")
    print(f"  p99 added by the kills: TTFT {ttft:+.0f} ms, total {total:+.0f} ms")
    return [
        verdict("failover: requests failed, no kills", len(calm.failed()), 0, "req"),
        verdict("failover: requests failed, kills", len(killed.failed()), 0, "req"),
        verdict(
            "failover: streams incomplete, kills",
            len(killed.incomplete(args.chat_tokens)),
            0,
            "req",
        ),
        row("failover: kills done (skipped)", str(len(kills.victims)), "", f"({kills.skipped})"),
        row(
            "failover: texts unlike the no-kill run, kills",
            str(compared - equal),
            "",
            f"of {compared}",
        ),
        row("failover: p99 TTFT added by kills", f"{ttft:+.0f}", "ms"),
        row("failover: p99 total latency added by kills", f"{total:+.0f}", "ms"),
    ]
