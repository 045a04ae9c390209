"""The CLI's connection to a running server: where it is, its key, its errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from blackroad.config import Settings

console = Console()


@contextlib.contextmanager
def server_api() -> Iterator[httpx.Client]:
    """An HTTP client on the server of ``BLACKROAD_HOST``/``BLACKROAD_PORT``."""
    settings = Settings.from_env()
    # A wildcard bind is reached through loopback.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    base_url = f"http://{host}:{settings.port}"
    with httpx.Client(
        base_url=base_url, headers=headers, timeout=httpx.Timeout(10.0, read=None)
    ) as client:
        try:
            client.head("/")
        except httpx.TransportError:
            fail(f"No BlackRoad server at {base_url}. Start it with: blackroad up")
        yield client


def fail(message: str) -> NoReturn:
    console.print(f"[red]{message}[/red]", highlight=False)
    raise typer.Exit(1)


def error_body(response: httpx.Response) -> Any:
    """The ``error`` of the server's answer: an object in OpenAI's format, text in Ollama's."""
    response.read()
    try:
        return response.json().get("error")
    except (ValueError, AttributeError):
        return None


def error_message(response: httpx.Response) -> str:
    """The server's error message in either API's format, or the status."""
    error = error_body(response)
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or f"HTTP {response.status_code}")


def checked(response: httpx.Response) -> httpx.Response:
    """The response, or exit with the server's error message."""
    if response.status_code >= 400:
        fail(error_message(response))
    return response


def table_of(*columns: str, **options: Any) -> Table:
    """A borderless table with bold headers; ``options`` apply to every column."""
    found = Table(box=None, header_style="bold")
    for column in columns:
        found.add_column(column, **options)
    return found
