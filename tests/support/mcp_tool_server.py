"""A real MCP tool server, written with the official SDK, for the MCP tests.

Run as a script: with no arguments it serves over stdio; ``--http PORT``
serves streamable HTTP on 127.0.0.1 (``GET /health`` answers when it is up),
and ``--require-header NAME=VALUE`` refuses MCP requests without that header.
``write_note`` appends to the file named by ``$NOTES_FILE``, so a test sees
both the environment it was given and its side effect. ``stdio_server`` and
``http_server`` give the tests its definition on either transport.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from blackroad.agents.mcp import McpServer

SCRIPT = Path(__file__)
TOKEN = ("X-Tool-Token", "t0ken")  # the header the HTTP server is started to require
server = MCPServer("blackroad-test-tools")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return text


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
def write_note(text: str) -> str:
    """Append a note to the notes file."""
    with Path(os.environ["NOTES_FILE"]).open("a", encoding="utf-8") as notes:
        notes.write(text + "\n")
    return "noted"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def refuse(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ToolError(f"refused: {reason}")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def huge(size: int) -> str:
    """A text of ``size`` characters."""
    return "x" * size


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def nap(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "awake"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def pid() -> int:
    """This server's process id."""
    return os.getpid()


class Gate:
    """Answers ``GET /health``; refuses other requests without the header required, if any."""

    def __init__(self, app: ASGIApp, required: tuple[bytes, bytes] | None) -> None:
        self.app, self.required = app, required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer: Response | None = None
        if scope["type"] == "http" and scope["path"] == "/health":
            answer = JSONResponse({"status": "ok"})
        elif scope["type"] == "http" and self.required not in (None, *scope["headers"]):
            answer = JSONResponse({"error": "missing header"}, 401)
        if answer is None:
            await self.app(scope, receive, send)
        else:
            await answer(scope, receive, send)


def stdio_server(name: str, notes: Path) -> McpServer:
    """This server over stdio, writing its notes to ``notes``."""
    return McpServer(
        name, "stdio", command=sys.executable, args=[str(SCRIPT)], env={"NOTES_FILE": str(notes)}
    )


@contextlib.contextmanager
def http_server(
    name: str, notes: Path, log: Path
) -> Iterator[tuple[McpServer, subprocess.Popen[bytes]]]:
    """This server over streamable HTTP on a free port, requiring ``TOKEN``; killed at the end."""
    # Imported here: run as a script, this file cannot import the tests package.
    from tests.support.server import background, free_port

    port = free_port()
    command = [
        sys.executable,
        str(SCRIPT),
        "--http",
        str(port),
        "--require-header",
        "=".join(TOKEN),
    ]
    env = {**os.environ, "NOTES_FILE": str(notes)}
    with background(command, f"http://127.0.0.1:{port}/health", log, env) as process:
        url = f"http://127.0.0.1:{port}/mcp"
        yield McpServer(name, "http", url=url, headers=dict([TOKEN])), process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT")
    parser.add_argument("--require-header", metavar="NAME=VALUE")
    options = parser.parse_args()
    if options.http is None:
        server.run("stdio")
        return
    required = None
    if options.require_header:
        name, _, value = options.require_header.partition("=")
        required = (name.lower().encode(), value.encode())
    app = Gate(server.streamable_http_app(host="127.0.0.1"), required)
    uvicorn.run(app, host="127.0.0.1", port=options.http, log_level="warning")


if __name__ == "__main__":
    main()
