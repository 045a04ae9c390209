"""``blackroad nodes`` and ``blackroad fleet``: the nodes of this control plane, and their state;
the control planes sharing its database.

They work on this machine's database, as ``blackroad users`` does; the
running server reads the same database, probes the peers, and records the
heartbeats of the nodes that joined with a token (``nodes token``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.table import Table
from rich.text import Text

from blackroad.cli.audit import audited
from blackroad.cli.client import console, fail
from blackroad.cli.users import expiry
from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.fleet import control_planes
from blackroad.fleet.control_planes import ControlPlane
from blackroad.fleet.membership import MAX_USES, Membership
from blackroad.fleet.nodes import Nodes
from blackroad.fleet.types import NodeInfo
from blackroad.store.database import Database

nodes = typer.Typer(
    help="The fleet's nodes: BlackRoad nodes that joined, Ollama and OpenAI-compatible peers.",
    no_args_is_help=True,
)
tokens = typer.Typer(
    help="Join tokens: what lets a machine join with blackroad node --join.",
    no_args_is_help=True,
)
nodes.add_typer(tokens, name="token")


def _database() -> Database:
    return Database(Settings.from_env().database)


def _nodes() -> Nodes:
    return Nodes(_database())


@nodes.command("add")
def add_node(
    url: str,
    kind: str = typer.Option(..., help="ollama, or openai for llama-server, vLLM, LocalAI..."),
    name: str | None = typer.Option(None, help="What to call it [the URL's host:port]."),
    key: str | None = typer.Option(None, help="The key the server expects, if any."),
) -> None:
    """Add a server as a peer, once it lists its models."""
    chosen = name or (urlsplit(url).netloc or url).replace(":", "-")
    try:
        node = asyncio.run(_nodes().add(chosen, kind, url, key))
    except BlackRoadError as exc:
        fail(exc.message)
    console.print(f"added {node.kind} node '{node.name}' with {len(node.models)} models")
    audited()


@nodes.command("list")
def list_nodes() -> None:
    """List the peers as last seen."""
    _table(_nodes().nodes())


@nodes.command("rm")
def remove_node(name: str) -> None:
    """Remove a node; a node that joined can no longer report (its credential dies with it)."""
    try:
        _nodes().remove(name)
    except BlackRoadError as exc:
        fail(exc.message)
    console.print(f"removed node '{name}'")
    audited()


@nodes.command("drain")
def drain_node(
    name: str, undo: bool = typer.Option(False, "--undo", help="Route work to it again.")
) -> None:
    """Route no new work to a node (what it runs now finishes); a running server follows
    at its next probe round."""
    try:
        _nodes().drain(name, not undo)
    except BlackRoadError as exc:
        fail(exc.message)
    console.print(f"node '{name}' {'takes work again' if undo else 'is draining'}")
    audited()


def fleet(refresh: bool = typer.Option(False, help="Ask every peer now.")) -> None:
    """Every node of the fleet: kind, state, models, load, decode speed, last seen; then
    the control planes serving on this database, and the duties each leads."""
    database = _database()
    found = Nodes(database)
    listed = asyncio.run(found.refresh()) if refresh else found.nodes()
    _table(listed)
    _control_planes_table(control_planes.listed(database))


@tokens.command("create")
def create_token(
    expires_in: str = typer.Option("1h", help="Lifetime, e.g. 1h, 12h, 1d (at most 30d)."),
    uses: int = typer.Option(1, min=1, max=MAX_USES, help="How many machines it may join."),
) -> None:
    """Create a join token. It is printed once and never stored."""
    try:
        new = Membership(_database()).create_token(expiry(expires_in), uses)
    except BlackRoadError as exc:
        fail(exc.message)
    joins = "one join" if new.uses == 1 else f"{new.uses} joins"
    console.print(
        f"Join token {new.prefix} ({joins}, expires {_time(new.expires_at)}; shown only now):"
    )
    console.print(new.secret, highlight=False, soft_wrap=True)
    audited()


@tokens.command("list")
def list_tokens() -> None:
    """List join tokens by prefix (the secret itself is not kept)."""
    table = Table(box=None, header_style="bold")
    for column in ("PREFIX", "STATE", "USES", "CREATED", "EXPIRES", "LAST USED BY"):
        table.add_column(column, no_wrap=True)
    for token in Membership(_database()).tokens():
        used = "-" if token.used_by is None else f"{token.used_by} ({_time(token.used_at)})"
        expires = "never" if token.expires_at is None else _time(token.expires_at)
        table.add_row(
            token.prefix, token.state, f"{token.uses}/{token.max_uses}",
            _time(token.created_at), expires, Text(used),
        )  # fmt: skip
    console.print(table)


@tokens.command("revoke")
def revoke_token(prefix: str) -> None:
    """Revoke a join token by its prefix; nodes that joined with it stay."""
    try:
        Membership(_database()).revoke_token(prefix)
    except BlackRoadError as exc:
        fail(exc.message)
    console.print(f"revoked {prefix}")
    audited()


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _load(stats: Mapping[str, Any] | None) -> str:
    """Sequences running / waiting, as the node last reported them."""
    if not stats or "active" not in stats:
        return "-"
    return f"{stats['active']}/{stats['queued']}"


def _speed(stats: Mapping[str, Any] | None) -> str:
    rates: Mapping[str, float] = (stats or {}).get("decode_tokens_per_second") or {}
    return ", ".join(f"{model} {rate:.1f}" for model, rate in rates.items()) or "-"


def _table(rows: list[NodeInfo]) -> None:
    table = Table(box=None, header_style="bold")
    columns = ("NODE", "KIND", "STATE", "MODELS", "LOAD", "TOK/S", "URL", "LAST SEEN", "ERROR")
    for column in columns:
        table.add_column(column)
    for node in rows:
        # What nodes report (models, errors) is shown as text, never read as markup.
        table.add_row(
            Text(node.name), node.kind, node.state + (" (draining)" if node.draining else ""),
            Text(", ".join(node.models) or "-"), _load(node.stats),
            Text(_speed(node.stats)), Text(node.url), _time(node.last_seen),
            Text(node.last_error or ""),
        )  # fmt: skip
    console.print(table)


def _control_planes_table(rows: list[ControlPlane]) -> None:
    table = Table(box=None, header_style="bold")
    columns = ("CONTROL PLANE", "STATE", "URL", "LEADS", "DATABASE", "VERSION", "LAST SEEN")
    for column in (*columns, "PROBLEM"):
        table.add_column(column)
    for replica in rows:
        table.add_row(
            Text(replica.name), "ready" if replica.ready else "not ready", Text(replica.url),
            ", ".join(replica.leads) or "-",
            Text(f"{replica.database_kind} {replica.database_host}"), Text(replica.version),
            _time(replica.last_seen), Text(replica.problem or ""),
        )  # fmt: skip
    console.print(table)
