"""``blackroad up``: serve every API on one port; ``serve``, which ``blackroad node`` shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import typer
import uvicorn
from rich.console import Console

from blackroad.cli.client import fail
from blackroad.config import Settings
from blackroad.errors import BlackRoadError

if TYPE_CHECKING:
    from fastapi import FastAPI

console = Console(stderr=True)
# Work that runs beside the server for as long as it serves (a node's heartbeats).
Alongside = Callable[["FastAPI"], Coroutine[Any, Any, None]]

HOST = typer.Option(None, help="Address to bind [env BLACKROAD_HOST; 127.0.0.1].")
PORT = typer.Option(None, help="Port to listen on [env BLACKROAD_PORT; 11434].")


def up(host: str | None = HOST, port: int | None = PORT) -> None:
    """Start the server (OpenAI API at /v1) with the models of this machine."""
    serve(Settings.from_env().with_overrides(host=host, port=port))


def serve(
    settings: Settings, create_admin: bool = True, alongside: Alongside | None = None
) -> None:
    """Serve every API with this machine's models until stopped.

    ``create_admin``: on an empty home, create the first admin and show it
    once. ``alongside`` runs as a task of the app for as long as it serves,
    and is cancelled before the engines shut down.
    """
    from blackroad.api.app import create_app
    from blackroad.identity.directory import Directory
    from blackroad.store.database import Database

    directory = Directory(Database(settings.database))
    if not settings.is_loopback and not settings.api_key and not directory.has_usable_key():
        # Checked before the first admin is made: a key printed to a console
        # nobody may be reading is no reason to open the port to the network.
        console.print(
            f"[red]Refusing to listen on {settings.host}: a non-loopback address needs an API "
            "key, and there is none.[/red]\nCreate a user's key first (blackroad users add NAME "
            "--role admin; blackroad keys create NAME --scope admin --scope inference), or set "
            "a shared key with [bold]BLACKROAD_API_KEY=<a long random secret>[/bold] (for "
            "example: export BLACKROAD_API_KEY=$(python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')), or bind 127.0.0.1."
        )
        raise typer.Exit(2)
    first = (
        directory.first_admin(settings.admin_user, settings.admin_password)
        if create_admin
        else None
    )
    directory.database.close()
    if first is not None:
        password, key = first
        shown = "(as given in BLACKROAD_ADMIN_PASSWORD)" if settings.admin_password else password
        # Shown this once: the database keeps only their hashes.
        console.print(
            f"Created the first admin, [bold]{settings.admin_user}[/bold].\n"
            f"  password: {shown}\n  API key:  {key.secret}\n"
            "Store both now; they are not shown again.",
            highlight=False,
        )

    # Each model's worker thread needs the GIL back the moment llama_decode
    # returns, while the event loop writes the last step's chunks. With the
    # default 5 ms switch interval it could wait up to that long every step;
    # at 0.5 ms, streamed decoding ran 10-18% faster at 1, 4 and 8 streams
    # (bench/serving.py, docs/benchmarks.md).
    sys.setswitchinterval(0.0005)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: each probe of each peer, each routed request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        app = create_app(settings)
    except BlackRoadError as exc:  # a setting it cannot serve with
        fail(exc.message)
    if alongside is not None:
        _run_alongside(app, alongside)
    console.print(
        f"BlackRoad listening on http://{settings.host}:{settings.port} "
        f"(home {settings.home}, {settings.num_threads} threads)"
    )
    # The stdlib asyncio loop, not uvloop: profiled with py-spy while streaming,
    # uvloop's transport.write took ~0.9 ms of the main thread per token on
    # loopback, asyncio's ~0.25 ms (its socket send releases the GIL, which the
    # model's worker thread needs between decode steps).
    # X-Forwarded-For is api/proxies.py's to believe, from the proxies listed only: uvicorn's
    # own handling would believe any loopback peer.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        loop="asyncio",
        proxy_headers=False,
    )


def _run_alongside(app: FastAPI, work: Alongside) -> None:
    """Run ``work(app)`` as a task inside the app's lifespan (engines started, then stopped)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[Any]:
        async with inner(running) as state:
            task = asyncio.create_task(work(running))
            try:
                yield state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app.router.lifespan_context = lifespan
