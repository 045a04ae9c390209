"""``blackroad chats`` and ``blackroad memories``: one's conversations and long-term memories.

They talk to the running server (``/api/conversations``, ``/api/memories``)
with the key in ``BLACKROAD_API_KEY``, so each user sees and changes only
their own, exactly as through the API.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import typer

from blackroad.cli.client import checked, console, fail, server_api, table_of

chats = typer.Typer(help="Your conversations kept on the server.", no_args_is_help=True)
memories = typer.Typer(
    help="Your long-term memories: facts the models recall.", no_args_is_help=True
)


_table = partial(table_of, overflow="fold")


def _when(stamp: str | None) -> str:
    """An ISO-8601 UTC time to the minute, as tables show it."""
    return "-" if not stamp else stamp.replace("T", " ")[:16]


def _print(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


# -- chats -------------------------------------------------------------------


@chats.command("list")
def list_chats(
    search: str | None = typer.Option(None, "--search", "-s", help="Only those with these words."),
    limit: int = typer.Option(50, min=1, max=200, help="How many."),
) -> None:
    """List your conversations, latest first."""
    params: dict[str, Any] = {"limit": limit}
    if search is not None:
        params["q"] = search
    with server_api() as api:
        found = checked(api.get("/api/conversations", params=params)).json()["conversations"]
    table = _table("ID", "TITLE", "MODEL", "MESSAGES", "UPDATED", *(["MATCH"] if search else []))
    for c in found:
        row = [str(c["id"]), c["title"] or "(untitled)", c["model"] or "-",
               str(c["message_count"]), _when(c["updated_at"])]  # fmt: skip
        table.add_row(*row, *([c["match"] or "(title)"] if search else []))
    console.print(table)


@chats.command("show")
def show_chat(conversation_id: int = typer.Argument(..., help="The conversation's id.")) -> None:
    """Show a conversation's messages."""
    with server_api() as api:
        found = checked(api.get(f"/api/conversations/{conversation_id}")).json()
    console.print(f"[bold]{found['title'] or '(untitled)'}[/bold]", highlight=False)
    for m in found["messages"]:
        details = [m["model"]] if m["model"] else []
        if m["completion_tokens"] is not None:
            details.append(f"{m['prompt_tokens']}+{m['completion_tokens']} tokens")
        suffix = f" ({', '.join(details)})" if details else ""
        console.print(f"\n[bold]{m['role']}[/bold]{suffix}", highlight=False)
        _print(m["content"])


@chats.command("rename")
def rename_chat(conversation_id: int, title: str) -> None:
    """Give a conversation a new title."""
    with server_api() as api:
        checked(api.patch(f"/api/conversations/{conversation_id}", json={"title": title}))
    console.print(f"renamed conversation {conversation_id}")


@chats.command("delete")
def delete_chat(conversation_id: int) -> None:
    """Delete a conversation and its messages (memories taken from it stay)."""
    with server_api() as api:
        checked(api.delete(f"/api/conversations/{conversation_id}"))
    console.print(f"deleted conversation {conversation_id}")


@chats.command("export")
def export_chat(
    conversation_id: int,
    format: str = typer.Option("markdown", "--format", "-f", help="markdown or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="A file; else printed."),
) -> None:
    """Export a conversation as Markdown or JSON."""
    if format not in ("markdown", "json"):
        fail("--format is markdown or json")
    with server_api() as api:
        path = f"/api/conversations/{conversation_id}/export"
        text = checked(api.get(path, params={"format": format})).text
    if output is None:
        _print(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    console.print(f"exported conversation {conversation_id} to {output}")


@chats.command("remember")
def remember_chat(conversation_id: int) -> None:
    """Have the memory model take facts from a conversation into your memories."""
    with server_api() as api:
        found = checked(api.post(f"/api/conversations/{conversation_id}/memories")).json()
    _memory_table(found["memories"])


# -- memories ----------------------------------------------------------------


def _memory_table(found: list[dict[str, Any]]) -> None:
    table = _table("ID", "TEXT", "SOURCE", "VERSION", "UPDATED")
    for m in found:
        source = m["source"] + (f" (chat {m['conversation_id']})" if m["conversation_id"] else "")
        table.add_row(str(m["id"]), m["text"], source, str(m["version"]), _when(m["updated_at"]))
    console.print(table)


@memories.command("list")
def list_memories() -> None:
    """List your memories, the latest changed first."""
    with server_api() as api:
        _memory_table(checked(api.get("/api/memories")).json()["memories"])


@memories.command("add")
def add_memory(text: str) -> None:
    """Add a memory."""
    with server_api() as api:
        added = checked(api.post("/api/memories", json={"text": text})).json()
    console.print(f"added memory {added['id']}")


@memories.command("edit")
def edit_memory(memory_id: int, text: str) -> None:
    """Give a memory a new text (the old one stays in its history)."""
    with server_api() as api:
        edited = checked(api.patch(f"/api/memories/{memory_id}", json={"text": text})).json()
    console.print(f"memory {memory_id} is now version {edited['version']}")


@memories.command("delete")
def delete_memory(memory_id: int) -> None:
    """Delete a memory and its history."""
    with server_api() as api:
        checked(api.delete(f"/api/memories/{memory_id}"))
    console.print(f"deleted memory {memory_id}")


@memories.command("history")
def memory_history(memory_id: int) -> None:
    """Every text a memory has had, who changed it and when."""
    with server_api() as api:
        versions = checked(api.get(f"/api/memories/{memory_id}/history")).json()["versions"]
    table = _table("VERSION", "TEXT", "CHANGED BY", "CHANGED")
    for v in versions:
        table.add_row(str(v["version"]), v["text"], v["changed_by"], _when(v["changed_at"]))
    console.print(table)
