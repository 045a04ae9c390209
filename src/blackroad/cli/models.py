"""``blackroad models``: list the catalog, add a GGUF file to it, place a model on the fleet."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from blackroad.cli.audit import audited
from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.fleet.placement import Placements
from blackroad.models.catalog import Catalog
from blackroad.models.types import ModelEntry
from blackroad.store.database import Database

app = typer.Typer(help="The models this machine can serve.", invoke_without_command=True)
console = Console()


def _catalog() -> Catalog:
    settings = Settings.from_env()
    return Catalog(settings.models_dir, Database(settings.database))


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.0f} MB"


def _table(entries: list[ModelEntry]) -> Table:
    table = Table(title="Models")
    for column in ("NAME", "FAMILY", "PARAMS", "QUANT", "CONTEXT", "SIZE", "SOURCE"):
        table.add_column(
            column, justify="right" if column in ("CONTEXT", "SIZE") else "left", no_wrap=True
        )
    for e in entries:
        m = e.metadata
        table.add_row(
            e.name,
            m.architecture,
            m.parameter_size,
            m.quantization,
            str(m.context_length),
            _size(e.size),
            e.source,
        )
    return table


@app.callback()
def list_models(ctx: typer.Context) -> None:
    """List the models (bundled, in $BLACKROAD_HOME/models, and added by name)."""
    if ctx.invoked_subcommand is None:
        console.print(_table(_catalog().list()))


@app.command("add")
def add(
    path: Path = typer.Argument(..., help="A GGUF file."),
    name: str | None = typer.Option(None, help="Name to serve it under (name:tag)."),
) -> None:
    """Add a GGUF file to the catalog under a name (the file stays where it is)."""
    try:
        entry = _catalog().add(path, name)
    except BlackRoadError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from exc
    console.print(_table([entry]))
    audited()


@app.command("place")
def place(
    model: str = typer.Argument(..., help="A model in the registry (name:tag)."),
    replicas: int = typer.Option(..., help="Healthy copies to keep on the fleet's nodes; 0 stops."),
) -> None:
    """Keep REPLICAS of MODEL on the fleet's nodes, pulled from the registry and loaded.

    The running control plane chooses the nodes (joined BlackRoad nodes with
    the memory for it) and replaces a replica whose node dies.
    """
    settings = Settings.from_env()
    try:
        Placements(Database(settings.database)).set(model, replicas)
    except BlackRoadError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"placing {replicas} replicas of {model}" if replicas else f"{model} unplaced")
    audited()
