"""The energy and cost model: what a token costs on this hardware, and when it beats the cloud.

Owns the power profiles (watts idle and busy, hardware price), the table of
cloud API prices, and the arithmetic that turns what each node measured
(tokens, busy time, how long it has been running) into energy, cost per 1M
tokens, and the daily volume at which self-hosting breaks even with each
cloud model. Only ``measure`` touches the database and the settings; the rest
are pure functions of their arguments.

Per node and per day, at a volume of V tokens a day:

    self-hosted(V) = F + m·V   F: amortisation + idle watts all day, priced
                               m: (busy − idle watts) × price / throughput
    cloud(V)       = c·V       c: the model's input and output prices blended
                                  at this installation's measured mix
    break-even V*  = F / (c − m), reachable only if V* ≤ throughput × 1 day

Throughput is the measured tokens (in + out) per busy second, so it carries
this installation's own models, prompt lengths and prefix reuse. The model
compares price per token only, not what each model's answers are worth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.store.database import Database

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
SECONDS_PER_DAY = 86_400
JOULES_PER_KWH = 3_600_000
MILLION = 1_000_000
# The market's rule of thumb ("self-hosting pays above ~2M tokens a day"),
# which the report sets against this installation's own break-even.
RULE_OF_THUMB_TOKENS_PER_DAY = 2_000_000


@dataclass(frozen=True)
class PowerProfile:
    """A node's wall power, idle and serving, and what its hardware cost."""

    name: str
    watts_idle: float
    watts_busy: float
    hardware_cost: float


# Defaults only, at the wall socket (power supply losses included): a plug-in
# meter gives your own (BLACKROAD_WATTS_IDLE, BLACKROAD_WATTS_BUSY).
PROFILES = {
    # Raspberry Pi 5 8GB with the active cooler: launch reviews (late 2023)
    # measured about 3 W idle and 7-9 W at the wall with all four cores
    # loaded, as llama.cpp loads them; 9 W leaves room for storage. Hardware:
    # board 80-95, 27 W supply ~12, cooler and case ~15, storage ~15 (USD).
    "pi5": PowerProfile("pi5", watts_idle=3.0, watts_busy=9.0, hardware_cost=120.0),
    # An x86 mini PC: reviews of Intel N100-class boxes measure 6-8 W idle and
    # 25-30 W at full CPU load, Ryzen mini PCs 8-10 W idle and 35-60 W under
    # load (power-limited). Hardware: a mid-range box with 32 GB RAM (USD, 2024).
    "minipc": PowerProfile("minipc", watts_idle=8.0, watts_busy=35.0, hardware_cost=450.0),
    # A desktop with one consumer GPU (RTX 3090/4090 class): ~60 W idle,
    # ~350 W at the wall while generating; ~2500 USD built (2024).
    "gpu": PowerProfile("gpu", watts_idle=60.0, watts_busy=350.0, hardware_cost=2500.0),
}


def detect_profile(model_file: Path = DEVICE_TREE_MODEL) -> str:
    """``pi5`` where the device tree names a Raspberry Pi 5, else ``minipc``.

    A GPU is never assumed: inference here runs on the CPU unless someone
    says otherwise with ``BLACKROAD_POWER_PROFILE``.
    """
    try:
        model = model_file.read_bytes().decode(errors="replace")
    except OSError:  # no device tree: not an ARM board
        return "minipc"
    return "pi5" if "Raspberry Pi 5" in model else "minipc"


@dataclass(frozen=True)
class CostModel:
    """Power, prices and write-off period: what turns busy time into money."""

    profile: PowerProfile
    electricity_price: float  # per kWh
    amortisation_years: float
    currency: str

    @property
    def amortisation_per_day(self) -> float:
        return self.profile.hardware_cost / (self.amortisation_years * 365.25)

    @property
    def fixed_per_day(self) -> float:
        """What a node costs a day serving nothing: its write-off and idle energy."""
        return self.amortisation_per_day + self.energy_cost(
            self.profile.watts_idle * SECONDS_PER_DAY
        )

    @property
    def full_per_day(self) -> float:
        """What a node costs a day busy all day."""
        return self.amortisation_per_day + self.energy_cost(
            self.profile.watts_busy * SECONDS_PER_DAY
        )

    def energy_cost(self, joules: float) -> float:
        return joules / JOULES_PER_KWH * self.electricity_price


def cost_model(settings: Settings, model_file: Path = DEVICE_TREE_MODEL) -> CostModel:
    """The cost model of the settings: a profile, with any figure the settings override."""
    name = (
        detect_profile(model_file) if settings.power_profile == "auto" else settings.power_profile
    )
    base = PROFILES.get(name)
    if base is None:
        raise BlackRoadError(f"unknown power_profile {name!r}: use auto, {', '.join(PROFILES)}")
    profile = PowerProfile(
        name,
        base.watts_idle if settings.watts_idle is None else settings.watts_idle,
        base.watts_busy if settings.watts_busy is None else settings.watts_busy,
        base.hardware_cost if settings.hardware_cost is None else settings.hardware_cost,
    )
    if not 0 <= profile.watts_idle <= profile.watts_busy:
        raise BlackRoadError("watts_idle must be at least 0 and at most watts_busy")
    if profile.hardware_cost < 0 or settings.electricity_price < 0:
        raise BlackRoadError("hardware_cost and electricity_price cannot be negative")
    if settings.amortisation_years <= 0:
        raise BlackRoadError("amortisation_years must be more than 0")
    return CostModel(
        profile, settings.electricity_price, settings.amortisation_years, settings.currency
    )


@dataclass(frozen=True)
class CloudPrice:
    """A cloud model's price per 1M input (prompt) and output (completion) tokens."""

    model: str
    input: float
    output: float


# List prices per 1M tokens, USD, as of 2025, standard tier without batch or
# cache discounts. Prices change: configure your own (BLACKROAD_CLOUD_PRICES).
DEFAULT_CLOUD_PRICES = (
    CloudPrice("gpt-4.1-nano", 0.10, 0.40),
    CloudPrice("gemini-2.0-flash", 0.10, 0.40),
    CloudPrice("gpt-4o-mini", 0.15, 0.60),
    CloudPrice("gpt-4.1-mini", 0.40, 1.60),
    CloudPrice("claude-3.5-haiku", 0.80, 4.00),
)


def load_cloud_prices(path: Path | None) -> tuple[CloudPrice, ...]:
    """The built-in table, or the one in ``path``, which replaces it entirely.

    The file maps each model to its prices per 1M tokens, in the configured
    currency: ``{"gpt-4o-mini": {"input": 0.15, "output": 0.60}}``.
    """
    if path is None:
        return DEFAULT_CLOUD_PRICES
    try:
        table = json.loads(path.expanduser().read_text())
    except (OSError, ValueError) as exc:
        raise BlackRoadError(f"cannot read cloud prices from {path}: {exc}") from exc
    if not isinstance(table, dict) or not table:
        raise BlackRoadError(f"{path}: expected an object of models and their prices")
    prices = []
    for model, entry in table.items():
        fields = entry if isinstance(entry, dict) else {}
        values = [fields.get(key) for key in ("input", "output")]
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values
        ):
            raise BlackRoadError(
                f"{path}: {model!r} needs numbers 'input' and 'output' (per 1M tokens, >= 0)"
            )
        prices.append(CloudPrice(model, float(fields["input"]), float(fields["output"])))
    return tuple(prices)


@dataclass(frozen=True)
class NodeUsage:
    """What one node served in the window, as ``Database.usage_by_node`` gives it."""

    node: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    busy_seconds: float
    first_at: datetime  # its first record ever: it has been running since then


@dataclass(frozen=True)
class NodeCost:
    """One node's (or the installation's) measured usage, priced."""

    node: str
    days: float  # time measured: the window, or less if the node is newer
    requests: int
    prompt_tokens: int
    completion_tokens: int
    tokens: int
    busy_seconds: float
    utilisation: float  # busy share of the time measured
    energy_kwh: float
    energy_cost: float
    amortisation: float  # the hardware's write-off over the time measured
    total_cost: float
    tokens_per_day: float
    # None when nothing was served: no throughput, so no capacity to speak of.
    tokens_per_busy_second: float | None
    capacity_tokens_per_day: float | None  # at the measured throughput, busy all day
    cost_per_million: float | None  # as measured, idle time included
    cost_per_million_at_capacity: float | None  # if it were busy all day


def node_cost(model: CostModel, usage: NodeUsage, since: datetime, now: datetime) -> NodeCost:
    # A node younger than the window is measured from its first record, so
    # days before it existed neither cost energy nor dilute its volume.
    seconds = max((now - max(since, usage.first_at)).total_seconds(), usage.busy_seconds)
    busy = usage.busy_seconds
    joules = model.profile.watts_idle * (seconds - busy) + model.profile.watts_busy * busy
    energy_cost = model.energy_cost(joules)
    amortisation = model.amortisation_per_day * seconds / SECONDS_PER_DAY
    total = energy_cost + amortisation
    tokens = usage.prompt_tokens + usage.completion_tokens
    throughput = tokens / busy if tokens and busy > 0 else None
    capacity = None if throughput is None else throughput * SECONDS_PER_DAY
    return NodeCost(
        node=usage.node,
        days=seconds / SECONDS_PER_DAY,
        requests=usage.requests,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tokens=tokens,
        busy_seconds=busy,
        utilisation=busy / seconds if seconds > 0 else 0.0,
        energy_kwh=joules / JOULES_PER_KWH,
        energy_cost=energy_cost,
        amortisation=amortisation,
        total_cost=total,
        tokens_per_day=tokens / seconds * SECONDS_PER_DAY if seconds > 0 else 0.0,
        tokens_per_busy_second=throughput,
        capacity_tokens_per_day=capacity,
        cost_per_million=total / tokens * MILLION if tokens else None,
        cost_per_million_at_capacity=(
            None if capacity is None else model.full_per_day / capacity * MILLION
        ),
    )


def installation_cost(model: CostModel, nodes: Sequence[NodeCost]) -> NodeCost:
    """The nodes together: sums, and throughput and capacity added up."""
    tokens = sum(n.tokens for n in nodes)
    busy = sum(n.busy_seconds for n in nodes)
    days = max((n.days for n in nodes), default=0.0)
    total = sum(n.total_cost for n in nodes)
    capacity = sum(n.capacity_tokens_per_day or 0.0 for n in nodes) or None
    serving = sum(1 for n in nodes if n.capacity_tokens_per_day is not None)
    # Busy all day, every node that has served runs flat out; the others idle.
    full_day = serving * model.full_per_day + (len(nodes) - serving) * model.fixed_per_day
    return NodeCost(
        node="total",
        days=days,
        requests=sum(n.requests for n in nodes),
        prompt_tokens=sum(n.prompt_tokens for n in nodes),
        completion_tokens=sum(n.completion_tokens for n in nodes),
        tokens=tokens,
        busy_seconds=busy,
        utilisation=busy / sum(n.days * SECONDS_PER_DAY for n in nodes) if days > 0 else 0.0,
        energy_kwh=sum(n.energy_kwh for n in nodes),
        energy_cost=sum(n.energy_cost for n in nodes),
        amortisation=sum(n.amortisation for n in nodes),
        total_cost=total,
        tokens_per_day=sum(n.tokens_per_day for n in nodes),
        tokens_per_busy_second=None if capacity is None else capacity / SECONDS_PER_DAY,
        capacity_tokens_per_day=capacity,
        cost_per_million=total / tokens * MILLION if tokens else None,
        cost_per_million_at_capacity=None if capacity is None else full_day / capacity * MILLION,
    )


# pays: measured volume at or above break-even; below: under it; beyond
# capacity: break-even is more than the hardware can serve in a day; never:
# the cloud costs less per token than this hardware's extra energy alone;
# unmeasured: nothing served yet, so no throughput.
Standing = Literal["pays", "below", "beyond capacity", "never", "unmeasured"]


@dataclass(frozen=True)
class CloudComparison:
    """This installation against one cloud model, at its own measured volume and mix."""

    model: str
    input_price: float  # per 1M tokens
    output_price: float
    blended_price: float | None  # per 1M tokens at the measured input/output mix
    cloud_cost: float  # what the window's tokens would have cost there
    break_even_tokens_per_day: float | None  # None: never, or nothing measured
    standing: Standing


def compare(
    model: CostModel, nodes: Sequence[NodeCost], total: NodeCost, price: CloudPrice
) -> CloudComparison:
    per_million = total.prompt_tokens * price.input + total.completion_tokens * price.output
    cloud_cost = per_million / MILLION
    capacity = total.capacity_tokens_per_day
    if capacity is None:
        return CloudComparison(
            price.model, price.input, price.output, None, cloud_cost, None, "unmeasured"
        )
    blended = cloud_cost / total.tokens
    # Every node is fixed cost; extra watts are drawn only by nodes that serve,
    # each busy for the same share of the day when load follows throughput.
    fixed = len(nodes) * model.fixed_per_day
    serving = sum(1 for n in nodes if n.capacity_tokens_per_day is not None)
    extra_watts = serving * (model.profile.watts_busy - model.profile.watts_idle)
    marginal = model.energy_cost(extra_watts * SECONDS_PER_DAY) / capacity
    break_even: float | None = None
    if blended <= marginal:
        standing: Standing = "never"
    else:
        break_even = fixed / (blended - marginal)
        if break_even > capacity:
            standing = "beyond capacity"
        elif total.tokens_per_day >= break_even:
            standing = "pays"
        else:
            standing = "below"
    blended_price = blended * MILLION
    return CloudComparison(
        price.model, price.input, price.output, blended_price, cloud_cost, break_even, standing
    )


@dataclass(frozen=True)
class CostReport:
    currency: str
    profile: PowerProfile
    electricity_price: float
    amortisation_years: float
    since: datetime
    nodes: list[NodeCost]
    total: NodeCost
    rule_of_thumb_tokens_per_day: int
    cloud: list[CloudComparison]
    verdict: str


def cost_report(
    model: CostModel,
    usage: Sequence[NodeUsage],
    prices: Sequence[CloudPrice],
    since: datetime,
    now: datetime,
) -> CostReport:
    nodes = [node_cost(model, u, since, now) for u in usage]
    total = installation_cost(model, nodes)
    cloud = [compare(model, nodes, total, price) for price in prices]
    return CostReport(
        currency=model.currency,
        profile=model.profile,
        electricity_price=model.electricity_price,
        amortisation_years=model.amortisation_years,
        since=since,
        nodes=nodes,
        total=total,
        rule_of_thumb_tokens_per_day=RULE_OF_THUMB_TOKENS_PER_DAY,
        cloud=cloud,
        verdict=verdict(model.currency, total, cloud),
    )


def measure(database: Database, settings: Settings, days: int) -> CostReport:
    """The report for the last ``days`` days of this installation's request log."""
    now = datetime.now(UTC)
    since = now - timedelta(days=days)
    usage = [NodeUsage(**row) for row in database.usage_by_node(since, settings.node_name)]
    prices = load_cloud_prices(Path(settings.cloud_prices) if settings.cloud_prices else None)
    return cost_report(cost_model(settings), usage, prices, since, now)


def format_tokens(count: float) -> str:
    """Three significant digits and a unit: 583k, 1.6M."""
    count = float(f"{count:.3g}")  # rounded first, so 999,999 is 1M, not 1e+03k
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return f"{count:.0f}"


def format_money(amount: float) -> str:
    """Two decimals, or three significant digits for amounts under 1 (a token costs little)."""
    return f"{amount:,.2f}" if abs(amount) >= 1 or amount == 0 else f"{amount:.3g}"


def verdict(currency: str, total: NodeCost, cloud: Sequence[CloudComparison]) -> str:
    """One sentence on where this installation stands, against the cheapest cloud model."""
    if total.cost_per_million is None or total.capacity_tokens_per_day is None:
        return "Nothing served in this window yet, so there is no cost per token to compare."
    measured = (
        f"Measured over {total.days:.1f} days: {format_tokens(total.tokens_per_day)} tokens/day"
        f" at {currency} {format_money(total.cost_per_million)} per 1M tokens"
        f" (capacity {format_tokens(total.capacity_tokens_per_day)} tokens/day)."
    )
    priced = [c for c in cloud if c.blended_price is not None]
    if not priced:
        return measured
    cheapest = min(priced, key=lambda c: c.blended_price or 0.0)
    rule = f"the rule of thumb says ~{format_tokens(RULE_OF_THUMB_TOKENS_PER_DAY)}"
    if cheapest.break_even_tokens_per_day is None:
        against = (
            f" {cheapest.model} costs less per token than this hardware's energy alone:"
            " it can never break even against it."
        )
    else:
        where = {
            "pays": "this installation is above it and pays for itself",
            "below": "this installation is below it",
            "beyond capacity": "more than this hardware can serve, so it cannot break even",
        }[cheapest.standing]
        against = (
            f" Break-even against the cheapest cloud model, {cheapest.model}, is"
            f" {format_tokens(cheapest.break_even_tokens_per_day)} tokens/day ({rule}): {where}."
        )
    paying = sum(1 for c in cloud if c.standing == "pays")
    return f"{measured}{against} It pays against {paying} of {len(cloud)} cloud models."
