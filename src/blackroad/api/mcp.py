"""``/api/mcp``: the MCP tool servers agents may use. Admin scope only.

Admins only because a stdio server is a command this machine runs. Listings
show header and environment names, never their values (they hold tokens).
``GET /api/mcp/servers/{name}/tools`` connects to the server and lists what
agents would be offered; a server that cannot be reached is a 503 naming it.
``trusted`` (at creation, or ``PATCH``) is the admin's word that the
server's read-only claims may be believed: only then do its read-only tools
run without a person's approval.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from blackroad.agents.mcp import (
    MAX_ARGS,
    MAX_ENTRIES,
    MAX_TEXT,
    MAX_URL,
    McpServer,
    tool_listing,
)
from blackroad.api.auth import require_scope
from blackroad.api.identity_types import Strict
from blackroad.api.state import mcp_servers

router = APIRouter(prefix="/api/mcp", dependencies=[Depends(require_scope("admin"))])

Text = Annotated[str, Field(max_length=MAX_TEXT)]
EntryName = Annotated[str, Field(min_length=1, max_length=256)]


class McpServerCreate(Strict):
    name: str = Field(min_length=1, max_length=32)
    transport: Literal["stdio", "http"]
    command: str = Field(default="", max_length=MAX_TEXT)
    args: list[Text] = Field(default_factory=list, max_length=MAX_ARGS)
    env: dict[EntryName, Text] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    url: str = Field(default="", max_length=MAX_URL)
    headers: dict[EntryName, Text] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    trusted: bool = False


class McpServerChange(Strict):
    trusted: bool


@router.get("/servers")
async def list_servers(request: Request) -> dict[str, Any]:
    servers = await run_in_threadpool(mcp_servers(request).list)
    return {"servers": [server.listing() for server in servers]}


@router.post("/servers", status_code=201)
async def add_server(body: McpServerCreate, request: Request) -> dict[str, Any]:
    server = McpServer(**body.model_dump())  # its own checks: names, URL, line breaks
    await run_in_threadpool(mcp_servers(request).add, server)
    return server.listing()


@router.patch("/servers/{name}")
async def change_server(name: str, body: McpServerChange, request: Request) -> dict[str, Any]:
    changed = await run_in_threadpool(mcp_servers(request).set_trusted, name, body.trusted)
    return changed.listing()


@router.delete("/servers/{name}", status_code=204)
async def remove_server(name: str, request: Request) -> Response:
    await run_in_threadpool(mcp_servers(request).remove, name)
    return Response(status_code=204)


@router.get("/servers/{name}/tools")
async def list_tools(name: str, request: Request) -> dict[str, Any]:
    server = await run_in_threadpool(mcp_servers(request).get, name)
    return {"server": name, "tools": await tool_listing(server)}
