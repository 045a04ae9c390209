"""``blackroad mcp``: the MCP tool servers agents may use, on the running server (``/api/mcp``).

Admin work: a stdio server is a command the server's machine runs. Header
and environment values are sent once and never shown again, only their names.
A server's read-only claims are believed only once it is trusted (``--trusted``,
or ``trust``): until then every tool of it waits for approval.
"""

from __future__ import annotations

from typing import Any

import typer

from blackroad.cli.client import checked, console, fail, server_api, table_of

app = typer.Typer(help="MCP tool servers for agents.", no_args_is_help=True)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, equals, rest = value.partition("=")
        if not equals or not name:
            fail(f"{option} takes NAME=VALUE, not {value!r}")
        pairs[name] = rest
    return pairs


@app.command("add")
def add(
    name: str,
    command: str | None = typer.Option(None, help="Run this program and speak to it over stdio."),
    arg: list[str] = typer.Option([], help="An argument of the command (repeat for more)."),
    env: list[str] = typer.Option([], help="NAME=VALUE in the command's environment (repeat)."),
    url: str | None = typer.Option(None, help="Speak streamable HTTP to this URL instead."),
    header: list[str] = typer.Option([], help="NAME=VALUE sent with every HTTP request (repeat)."),
    trusted: bool = typer.Option(
        False, help="Believe its read-only claims: those tools run without approval."
    ),
) -> None:
    """Register an MCP server: --command (stdio) or --url (streamable HTTP)."""
    if (command is None) == (url is None):
        fail("give either --command or --url")
    body: dict[str, Any] = {"name": name, "trusted": trusted}
    if command is not None:
        body.update(transport="stdio", command=command, args=arg, env=_pairs(env, "--env"))
    else:
        body.update(transport="http", url=url, headers=_pairs(header, "--header"))
    with server_api() as api:
        added = checked(api.post("/api/mcp/servers", json=body)).json()
    console.print(f"added MCP server {added['name']!r} ({added['transport']})", highlight=False)


def _target(server: dict[str, Any]) -> str:
    if server["transport"] == "stdio":
        return " ".join([server["command"], *server["args"]])
    return str(server["url"])


@app.command("list")
def list_servers() -> None:
    """List the MCP servers (header and environment names only, never values)."""
    with server_api() as api:
        servers = checked(api.get("/api/mcp/servers")).json()["servers"]
    table = table_of("NAME", "TRANSPORT", "COMMAND OR URL", "SECRETS", "TRUSTED", overflow="fold")
    for server in servers:
        secrets = ", ".join(server.get("env") or server.get("headers") or [])
        trusted = "yes" if server["trusted"] else "no"
        table.add_row(server["name"], server["transport"], _target(server), secrets, trusted)
    console.print(table)


@app.command("tools")
def tools(name: str) -> None:
    """Connect to an MCP server and list the tools agents would get from it."""
    with server_api() as api:
        listed = checked(api.get(f"/api/mcp/servers/{name}/tools")).json()["tools"]
    table = table_of("TOOL", "SIDE EFFECTS", "DESCRIPTION", overflow="fold")
    for tool in listed:
        table.add_row(tool["name"], "yes" if tool["side_effects"] else "no", tool["description"])
    console.print(table)


@app.command("trust")
def trust(
    name: str,
    undo: bool = typer.Option(False, "--undo", help="Stop believing its read-only claims."),
) -> None:
    """Trust an MCP server's read-only claims: its read-only tools run without approval."""
    with server_api() as api:
        checked(api.patch(f"/api/mcp/servers/{name}", json={"trusted": not undo}))
    state = "no longer trusted: every tool of it asks" if undo else "trusted"
    console.print(f"MCP server {name!r} {state}", highlight=False)


@app.command("rm")
def remove(name: str) -> None:
    """Remove an MCP server; agents naming it can no longer use its tools."""
    with server_api() as api:
        checked(api.delete(f"/api/mcp/servers/{name}"))
    console.print(f"removed MCP server {name!r}", highlight=False)
