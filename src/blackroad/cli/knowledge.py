"""``blackroad kb``: knowledge bases on the running server (``/api/kb``).

``blackroad kb add KB FILES...`` uploads one file per request, so the progress
bar moves file by file, a folder of case files is never one giant request,
and a file that cannot be read is reported without losing the others.
Folders are walked for the file types the server reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from blackroad.cli.client import checked, console, error_message, fail, server_api, table_of

app = typer.Typer(help="Knowledge bases: documents to search and chat with.", no_args_is_help=True)
READABLE = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv"}


_table = table_of


@app.command("create")
def create(
    name: str,
    description: str = typer.Option("", help="What the base holds."),
    embedding_model: str | None = typer.Option(None, help="Default: the server's."),
    chunk_tokens: int | None = typer.Option(None, help="Tokens per chunk."),
    chunk_overlap: int | None = typer.Option(None, help="Tokens shared by neighbouring chunks."),
) -> None:
    """Create a knowledge base."""
    body: dict[str, Any] = {"name": name, "description": description}
    for key, value in (
        ("embedding_model", embedding_model),
        ("chunk_tokens", chunk_tokens),
        ("chunk_overlap", chunk_overlap),
    ):
        if value is not None:
            body[key] = value
    with server_api() as api:
        base = checked(api.post("/api/kb", json=body)).json()
    console.print(f"created knowledge base {base['name']!r} (id {base['id']})")


@app.command("list")
def list_bases() -> None:
    """List the knowledge bases you can use."""
    with server_api() as api:
        bases = checked(api.get("/api/kb")).json()["knowledge_bases"]
    table = _table("ID", "NAME", "OWNER", "ACCESS", "EMBEDDING MODEL", "UPDATED")
    for b in bases:
        table.add_row(str(b["id"]), b["name"], b["owner"], b["permission"],
                      b["embedding_model"], b["updated_at"])  # fmt: skip
    console.print(table)


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in READABLE
            )
        elif path.is_file():
            yield path
        else:
            fail(f"{path}: no such file or folder")


@app.command("add")
def add(
    kb: str = typer.Argument(..., help="The knowledge base: its id or name."),
    files: list[Path] = typer.Argument(..., help="Files, or folders to walk."),
    metadata: str | None = typer.Option(None, help="A JSON object given to each document."),
) -> None:
    """Add documents (txt, md, html, pdf, docx, csv); unchanged ones are skipped."""
    found = list(_files(files))
    counts = {"added": 0, "updated": 0, "unchanged": 0, "failed": 0}
    form = {} if metadata is None else {"metadata": metadata}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with server_api() as api, Progress(*columns, console=console) as progress:
        task = progress.add_task("indexing", total=len(found))
        for path in found:
            progress.update(task, description=path.name)
            with path.open("rb") as handle:
                answer = api.post(
                    f"/api/kb/{kb}/documents", files={"files": (path.name, handle)}, data=form
                )
            if answer.status_code >= 400:
                counts["failed"] += 1
                progress.console.print(
                    f"[red]{path}: {error_message(answer)}[/red]", highlight=False
                )
                if answer.status_code in (401, 403, 404):
                    break  # the base itself is the problem: no other file will fare better
            else:
                for result in answer.json()["documents"]:
                    counts[result["outcome"]] += 1
            progress.advance(task)
    console.print(", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n))
    if counts["failed"]:
        raise typer.Exit(1)


@app.command("docs")
def documents(kb: str) -> None:
    """List a knowledge base's documents."""
    with server_api() as api:
        docs = checked(api.get(f"/api/kb/{kb}/documents")).json()["documents"]
    table = _table("ID", "NAME", "TYPE", "PAGES", "CHUNKS", "SHA256", "UPDATED")
    for d in docs:
        table.add_row(str(d["id"]), d["name"], d["media_type"], str(d["pages"] or "-"),
                      str(d["chunks"]), d["sha256"][:12], d["updated_at"])  # fmt: skip
    console.print(table)


@app.command("rm")
def remove(kb: str, document: int = typer.Argument(..., help="The document's id.")) -> None:
    """Remove a document, its chunks and its vectors."""
    with server_api() as api:
        checked(api.delete(f"/api/kb/{kb}/documents/{document}"))
    console.print(f"removed document {document}")


@app.command("delete")
def delete(kb: str) -> None:
    """Delete a knowledge base and everything in it."""
    with server_api() as api:
        checked(api.delete(f"/api/kb/{kb}"))
    console.print(f"deleted knowledge base {kb!r}")


@app.command("share")
def share(
    kb: str,
    group: str,
    permission: str = typer.Option("read", help="read, or write (may add and remove)."),
) -> None:
    """Share a knowledge base with a group."""
    with server_api() as api:
        checked(api.put(f"/api/kb/{kb}/shares/{group}", json={"permission": permission}))
    console.print(f"shared {kb!r} with {group!r} ({permission})")


@app.command("unshare")
def unshare(kb: str, group: str) -> None:
    """Stop sharing a knowledge base with a group."""
    with server_api() as api:
        checked(api.delete(f"/api/kb/{kb}/shares/{group}"))
    console.print(f"stopped sharing {kb!r} with {group!r}")


@app.command("search")
def search(
    kb: str,
    query: str,
    k: int = typer.Option(5, help="How many passages."),
    mode: str = typer.Option("hybrid", help="hybrid, lexical or vector."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """Search a knowledge base."""
    with server_api() as api:
        answer = checked(
            api.post(f"/api/kb/{kb}/search", json={"query": query, "k": k, "mode": mode})
        ).json()
    if as_json:
        console.print_json(json.dumps(answer))
        return
    for hit in answer["results"]:
        where = hit["document"]["name"] + (f", page {hit['page']}" if hit["page"] else "")
        console.print(f"[bold]{hit['score']:.4f}[/bold] {where} [{hit['start']}:{hit['end']}]")
        console.print(hit["text"], highlight=False)
        console.print()
