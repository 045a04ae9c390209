"""``blackroad run``: chat with a model through the running server."""

from __future__ import annotations

import json

import httpx
import typer

from blackroad.cli.client import checked, console, fail, server_api


def _stream_reply(client: httpx.Client, model: str, messages: list[dict[str, str]]) -> str:
    parts: list[str] = []
    body = {"model": model, "messages": messages, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in checked(response).iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                fail(event["error"]["message"])
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
    with server_api() as client:
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
