"""``blackroad cost``: what a token costs on this installation, and when it beats the cloud.

It reads this machine's database directly, as ``blackroad usage`` does, so it
works whether or not the server is running.
"""

from __future__ import annotations

import typer
from rich.table import Table

from blackroad.cli.client import console, fail
from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.store.database import Database
from blackroad.usage.cost import CostReport, format_money, format_tokens, measure

_STANDING = {
    "pays": "pays",
    "below": "below break-even",
    "beyond capacity": "cannot break even on this hardware",
    "never": "cannot break even: energy alone costs more",
    "unmeasured": "nothing measured yet",
}


def cost(days: int = typer.Option(30, min=1, help="How many days back.")) -> None:
    """Cost per 1M tokens from measured busy time, and break-even against cloud APIs."""
    settings = Settings.from_env()
    try:
        report = measure(Database(settings.database), settings, days)
    except BlackRoadError as exc:
        fail(exc.message)
    _print(report)


def _optional(value: float | None) -> str:
    return "-" if value is None else format_money(value)


def _print(report: CostReport) -> None:
    money = report.currency
    p = report.profile
    console.print(
        f"Power profile {p.name}: {p.watts_idle:g} W idle, {p.watts_busy:g} W busy,"
        f" hardware {money} {format_money(p.hardware_cost)} over {report.amortisation_years:g}"
        f" years; electricity {money} {report.electricity_price:.2f}/kWh.",
        highlight=False,
    )
    nodes = Table(box=None, header_style="bold")
    columns = (
        "NODE", "DAYS", "REQUESTS", "TOKENS", "BUSY", "kWh", "ENERGY", "HARDWARE", "TOTAL",
        f"{money}/1M", f"{money}/1M FULL USE", "TOKENS/DAY", "CAPACITY/DAY",
    )  # fmt: skip
    for column in columns:
        nodes.add_column(column, no_wrap=True, justify="left" if column == "NODE" else "right")
    for node in [*report.nodes, report.total] if len(report.nodes) > 1 else report.nodes:
        capacity = node.capacity_tokens_per_day
        nodes.add_row(
            node.node, f"{node.days:.1f}", str(node.requests), format_tokens(node.tokens),
            f"{node.utilisation:.1%}", f"{node.energy_kwh:.3g}", format_money(node.energy_cost),
            format_money(node.amortisation), format_money(node.total_cost),
            _optional(node.cost_per_million), _optional(node.cost_per_million_at_capacity),
            format_tokens(node.tokens_per_day),
            "-" if capacity is None else format_tokens(capacity),
        )  # fmt: skip
    console.print(nodes)
    cloud = Table(box=None, header_style="bold")
    headers = ("CLOUD MODEL", "IN/OUT per 1M", "BLENDED per 1M", f"SAME TOKENS ({money})",
               "BREAK-EVEN TOKENS/DAY", "STANDING")  # fmt: skip
    for column in headers:
        left = column in ("CLOUD MODEL", "STANDING")
        cloud.add_column(column, no_wrap=True, justify="left" if left else "right")
    for c in report.cloud:
        breaks = c.break_even_tokens_per_day
        cloud.add_row(
            c.model, f"{c.input_price:.2f}/{c.output_price:.2f}",
            _optional(c.blended_price), format_money(c.cloud_cost),
            "-" if breaks is None else format_tokens(breaks), _STANDING[c.standing],
        )  # fmt: skip
    console.print(cloud)
    console.print(report.verdict, highlight=False)
