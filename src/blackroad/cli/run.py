"""``blackroad run``: chat with a model through the running server."""

from __future__ import annotations

import json

import httpx
import typer

from blackroad.cli.client import checked, console, error_body, error_message, fail, server_api
from blackroad.errors import ContextLengthExceeded


class _ContextFull(Exception):
    """The conversation no longer fits the model's context; the server's words."""


def _stream_reply(client: httpx.Client, model: str, messages: list[dict[str, str]]) -> str:
    parts: list[str] = []
    body = {"model": model, "messages": messages, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        error = error_body(response) if response.status_code >= 400 else None
        if isinstance(error, dict) and error.get("code") == ContextLengthExceeded.code:
            raise _ContextFull(error_message(response))
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


def _reply_within_context(client: httpx.Client, model: str, messages: list[dict[str, str]]) -> str:
    """The reply to ``messages``, dropping their oldest exchanges while they do not fit.

    As ``ollama run`` does: a long chat goes on with what fits of its history
    rather than ending, and the user is told what was forgotten.
    """
    while True:
        try:
            return _stream_reply(client, model, messages)
        except _ContextFull as exc:
            if len(messages) < 3:  # the newest message alone does not fit
                fail(str(exc))
            del messages[:2]  # a user message and the reply to it
            console.print("[dim](the oldest exchange was dropped to fit the model's context)[/dim]")


def run(
    model: str = typer.Argument(..., help="Model name, e.g. smollm2:135m."),
    prompt: str | None = typer.Argument(None, help="One prompt; without it, an interactive chat."),
) -> None:
    """Stream a reply to PROMPT, or chat interactively (Ctrl-D or /bye to leave)."""
    with server_api() as client:
        if prompt is not None:
            _reply_within_context(client, model, [{"role": "user", "content": prompt}])
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
            reply = _reply_within_context(client, model, messages)
            messages.append({"role": "assistant", "content": reply})
