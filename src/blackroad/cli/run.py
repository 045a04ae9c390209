"""``blackroad run``: chat with a model through the running server."""

from __future__ import annotations

import json

import httpx
import typer
from rich.console import Console

from blackroad.config import Settings

console = Console()


def _stream_reply(client: httpx.Client, model: str, messages: list[dict[str, str]]) -> str:
    parts: list[str] = []
    body = {"model": model, "messages": messages, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            error = response.json().get("error", {})
            raise typer.BadParameter(error.get("message", response.text))
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise typer.BadParameter(event["error"]["message"])
            for choice in event["choices"]:
                text = choice["delta"].get("content") or ""
                parts.append(text)
                console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    console.print()
    return "".join(parts)


def run(
    model: str = typer.Argument(..., help="Model name, e.g. smollm2:135m."),
    prompt: str | None = typer.Argument(None, help="One prompt; without it, an interactive chat."),
) -> None:
    """Stream a reply to PROMPT, or chat interactively (Ctrl-D or /bye to leave)."""
    settings = Settings.from_env()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    base_url = f"http://{host}:{settings.port}"
    with httpx.Client(
        base_url=base_url, headers=headers, timeout=httpx.Timeout(10.0, read=None)
    ) as client:
        try:
            client.get("/")
        except httpx.TransportError:
            console.print(
                f"[red]No BlackRoad server at {base_url}.[/red] Start it with: blackroad up"
            )
            raise typer.Exit(1) from None
        if prompt is not None:
            _stream_reply(client, model, [{"role": "user", "content": prompt}])
            return
        messages: list[dict[str, str]] = []
        while True:
            try:
                line = console.input("[bold]>>> [/bold]")
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if line.strip() in ("/bye", "/exit"):
                return
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line})
            messages.append(
                {"role": "assistant", "content": _stream_reply(client, model, messages)}
            )
