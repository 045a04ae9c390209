"""``blackroad pull``, ``blackroad push`` and ``blackroad registry serve``.

Pull and push move models between the local store (``$BLACKROAD_HOME/models``)
and a registry: ``--registry`` or ``BLACKROAD_REGISTRY``, a directory or an
http(s) URL (``models/registry.py``). ``registry serve`` serves a directory
as such a registry (``models/registry_server.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from blackroad.config import Settings
from blackroad.errors import BlackRoadError, ModelNotFound
from blackroad.models import registry as registries
from blackroad.models.store import ModelStore

app = typer.Typer(help="Serve a directory of models as a registry.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

_REGISTRY_HELP = "A directory or an http(s) URL \\[env BLACKROAD_REGISTRY]."
Operation = Callable[[ModelStore, registries.Registry, str], Iterator[dict[str, Any]]]


def _fail(message: str, code: int = 1) -> typer.Exit:
    # Text, not markup: a path or a server's message may hold [brackets].
    errors.print(Text(message, style="red"), soft_wrap=True)
    return typer.Exit(code)


def _show(events: Iterator[dict[str, Any]]) -> None:
    """Ollama-style output: a bar per blob, a line per other status."""
    if not console.is_terminal:  # a log or a pipe: one line per status, a blob's when done
        done: set[str] = set()
        for event in events:
            digest = event.get("digest")
            if digest is None:
                console.print(event["status"])
            elif event["completed"] >= event["total"] and digest not in done:
                done.add(digest)
                console.print(f"{event['status']}: {event['total']} bytes")
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bars: dict[str, TaskID] = {}
        for event in events:
            digest = event.get("digest")
            if digest is None:
                progress.console.print(event["status"])
                continue
            if digest not in bars:
                bars[digest] = progress.add_task(event["status"], total=event["total"])
            progress.update(bars[digest], completed=event["completed"])


def _transfer(operation: Operation, name: str, location: str | None, verb: str) -> None:
    settings = Settings.from_env()
    location = location or settings.registry
    if not location:
        raise _fail(
            f"No registry to {verb}: pass --registry DIR|URL or set BLACKROAD_REGISTRY "
            "(a directory or the http(s) URL of a `blackroad registry serve`)."
        )
    store = ModelStore(settings.models_dir)
    try:
        registry = registries.open_registry(location, api_key=settings.registry_key)
        with contextlib.closing(registry):
            _show(operation(store, registry, name))
    except ModelNotFound as exc:
        where = f"the registry {location}" if verb == "pull from" else "the local model store"
        raise _fail(f"{name} is not in {where}.") from exc
    except BlackRoadError as exc:
        raise _fail(f"{verb.split()[0]} {name} failed: {exc.message}") from exc


def pull(
    name: str = typer.Argument(..., help="The model, name[:tag]."),
    registry: str | None = typer.Option(None, "--registry", help=_REGISTRY_HELP),
) -> None:
    """Pull a model from the registry into this machine's store (resumes a broken pull)."""
    _transfer(registries.pull, name, registry, "pull from")


def push(
    name: str = typer.Argument(..., help="The model, name[:tag], from this machine's store."),
    registry: str | None = typer.Option(None, "--registry", help=_REGISTRY_HELP),
) -> None:
    """Push a model from this machine's store to the registry."""
    _transfer(registries.push, name, registry, "push to")


@app.command("serve")
def serve(
    directory: Path = typer.Argument(..., help="The registry's directory (created if missing)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(11435, help="Port to listen on."),
    max_rate: int | None = typer.Option(
        None, "--max-rate", min=1, help="Cap on each blob download, in bytes per second."
    ),
    read_only: bool = typer.Option(False, "--read-only", help="Refuse pushes."),
) -> None:
    """Serve DIR as a registry (manifests/ and blobs/) that `blackroad pull` can use."""
    settings = Settings.from_env().with_overrides(host=host)
    if not settings.is_loopback and not settings.api_key:
        errors.print(
            f"[red]Refusing to listen on {host}: every non-loopback address needs an API "
            "key.[/red]\nSet one with [bold]BLACKROAD_API_KEY=<a long random secret>[/bold] "
            "(for example: export BLACKROAD_API_KEY=$(python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')), or bind 127.0.0.1."
        )
        raise typer.Exit(2)

    import uvicorn

    from blackroad.browser_guard import AllowedHosts
    from blackroad.models.registry_server import create_registry_app

    directory.mkdir(parents=True, exist_ok=True)
    hosts = AllowedHosts.parse(settings.allowed_hosts, host)
    app = create_registry_app(directory, max_rate, not read_only, settings.api_key, hosts)
    rate = f", at most {max_rate} bytes/s per download" if max_rate else ""
    mode = "read-only" if read_only else "accepting pushes"
    errors.print(f"Registry {directory} on http://{host}:{port} ({mode}{rate})")
    uvicorn.run(app, host=host, port=port, log_level="warning", loop="asyncio")
