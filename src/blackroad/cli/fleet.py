"""``blackroad nodes`` and ``blackroad fleet``: the peers of this control plane, and their state.

They work on this machine's database, as ``blackroad users`` does; the
running server reads the same database and refreshes the peers' state.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import typer
from rich.table import Table

from blackroad.cli.client import console, fail
from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.fleet.nodes import Nodes
from blackroad.fleet.types import NodeInfo
from blackroad.store.database import Database

nodes = typer.Typer(
    help="The fleet's peers: Ollama and OpenAI-compatible servers.", no_args_is_help=True
)


def _nodes() -> Nodes:
    return Nodes(Database(Settings.from_env().database_path))


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


@nodes.command("list")
def list_nodes() -> None:
    """List the peers as last seen."""
    _table(_nodes().nodes())


@nodes.command("rm")
def remove_node(name: str) -> None:
    """Remove a peer."""
    try:
        _nodes().remove(name)
    except BlackRoadError as exc:
        fail(exc.message)
    console.print(f"removed node '{name}'")


def fleet(refresh: bool = typer.Option(False, help="Ask every peer now.")) -> None:
    """Every node of the fleet: kind, state, models, last seen."""
    found = _nodes()
    _table(asyncio.run(found.refresh()) if refresh else found.nodes())


def _table(rows: list[NodeInfo]) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("NODE", "KIND", "STATE", "MODELS", "URL", "LAST SEEN", "ERROR"):
        table.add_column(column)
    for node in rows:
        seen = "-" if node.last_seen is None else node.last_seen.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            node.name, node.kind, node.state, ", ".join(node.models) or "-", node.url, seen,
            node.last_error or "",
        )  # fmt: skip
    console.print(table)
