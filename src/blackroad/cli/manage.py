"""Model commands mirroring Ollama's CLI: list, ps, show, cp, rm, create, stop.

They talk to the running server, as Ollama's do: loaded models live there,
and a model created there is at once visible to every API client.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import typer

from blackroad.cli.client import checked, console, fail, server_api, table_of
from blackroad.models import modelfile


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.0f} MB"


def _when(stamp: str) -> str:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    seconds = (moment - datetime.now(UTC)).total_seconds()
    if moment.year >= 9999:
        return "Forever"
    amount, unit = abs(seconds), "seconds"
    for size, name in ((86400, "days"), (3600, "hours"), (60, "minutes")):
        if amount >= size:
            amount, unit = amount / size, name
            break
    span = f"{amount:.0f} {unit}"
    return f"{span} from now" if seconds >= 0 else f"{span} ago"


_table = partial(table_of, no_wrap=True)


def list_models() -> None:
    """List the models this server can serve."""
    with server_api() as api:
        models = checked(api.get("/api/tags")).json()["models"]
    table = _table("NAME", "ID", "SIZE", "MODIFIED")
    for m in models:
        table.add_row(m["name"], m["digest"][:12], _size(m["size"]), _when(m["modified_at"]))
    console.print(table)


def ps() -> None:
    """List the models loaded now, and until when they stay loaded."""
    with server_api() as api:
        models = checked(api.get("/api/ps")).json()["models"]
    table = _table("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL")
    for m in models:
        table.add_row(
            m["name"], m["digest"][:12], _size(m["size"]), "100% CPU",
            str(m["context_length"]), _when(m["expires_at"]),
        )  # fmt: skip
    console.print(table)


def show(
    name: str = typer.Argument(..., help="Model name."),
    modelfile_: bool = typer.Option(False, "--modelfile", help="Show the Modelfile."),
    parameters: bool = typer.Option(False, "--parameters", help="Show the parameters."),
    template: bool = typer.Option(False, "--template", help="Show the chat template."),
    system: bool = typer.Option(False, "--system", help="Show the system message."),
    license_: bool = typer.Option(False, "--license", help="Show the license."),
) -> None:
    """Show a model's details, or one part of it."""
    with server_api() as api:
        info: dict[str, Any] = checked(api.post("/api/show", json={"model": name})).json()
    parts = {"modelfile": modelfile_, "parameters": parameters, "template": template,
             "system": system, "license": license_}  # fmt: skip
    for key, wanted in parts.items():
        if wanted:
            console.print(info[key], markup=False, highlight=False, soft_wrap=True)
            return
    details, model_info = info["details"], info["model_info"]
    arch = model_info["general.architecture"]
    table = _table("", "")
    table.add_row("architecture", arch)
    table.add_row("parameters", details["parameter_size"])
    table.add_row("context length", str(model_info.get(f"{arch}.context_length", "")))
    table.add_row("embedding length", str(model_info.get(f"{arch}.embedding_length", "")))
    table.add_row("quantization", details["quantization_level"])
    console.print(table)
    if info["parameters"]:
        console.print("\n[bold]Parameters[/bold]")
        console.print(info["parameters"], markup=False, highlight=False, soft_wrap=True)


def cp(source: str, destination: str) -> None:
    """Copy a model under a new name."""
    with server_api() as api:
        checked(api.post("/api/copy", json={"source": source, "destination": destination}))
    console.print(f"copied '{source}' to '{destination}'")


def rm(names: list[str] = typer.Argument(..., help="Models to delete.")) -> None:
    """Delete models (their blobs go when no other model uses them)."""
    with server_api() as api:
        for name in names:
            checked(api.request("DELETE", "/api/delete", json={"model": name}))
            console.print(f"deleted '{name}'")


def create(
    name: str = typer.Argument(..., help="Name of the new model."),
    file: Path = typer.Option(Path("Modelfile"), "--file", "-f", help="The Modelfile."),
) -> None:
    """Create a model from a Modelfile (FROM a GGUF path or an existing model)."""
    try:
        text = file.read_text()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    spec = modelfile.parse(text)
    base = Path(spec.base or "").expanduser()
    if spec.base and (spec.base.startswith(".") or base.suffix == ".gguf"):
        # A relative FROM path is relative to the Modelfile, as in Ollama.
        spec.base = str((file.parent / base).resolve())
    with (
        server_api() as api,
        api.stream(
            "POST", "/api/create", json={"model": name, "modelfile": modelfile.render(spec)}
        ) as response,
    ):
        for line in checked(response).iter_lines():
            status = json.loads(line)
            if "error" in status:
                fail(status["error"])
            console.print(status["status"], highlight=False, soft_wrap=True)


def stop(name: str = typer.Argument(..., help="Model to unload.")) -> None:
    """Unload a model now."""
    with server_api() as api:
        checked(api.post("/api/generate", json={"model": name, "keep_alive": 0, "stream": False}))
