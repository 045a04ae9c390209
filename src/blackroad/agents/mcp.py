"""MCP tool servers: their registry, and their tools offered to agents like built-ins.

An admin registers a server by name (``McpServers``, in the database): a
command to run, spoken to over stdio, or a URL, over streamable HTTP.
``connected(servers)`` opens one session per server with the official ``mcp``
SDK, lists its tools and yields each as a ``Tool`` named ``SERVER__TOOL``;
calling it calls the server's tool. An MCP tool has side effects (so a run
pauses for approval before it) unless the server marks it read-only and an
admin marked the server ``trusted``: a read-only claim is the server's own
word, and an untrusted server's tool marked read-only could still write, or
send what it is given anywhere.

Each session is held open by a task of its own, not the caller's: the SDK
runs its transport in a task group, and a transport that fails (a server
killed mid-session) would otherwise cancel whatever the caller was awaiting.
A call races the session's end instead, so it fails at once with
``McpServerUnavailable``, never by a hang. Every wait is bounded by the
timeout: starting and listing, and each call (``call_timeout``, by default the same).

A stdio server is started from an argument list (never a shell), in a
session of its own, with only the SDK's minimal environment (``HOME``,
``PATH``, ...) plus the server's ``env``: none of BlackRoad's settings or
keys. Closing a session closes its stdin, then terminates and reaps the
process group. Its stderr is kept in a temporary file, whose end is quoted
when it fails to start.

Header and environment values may be secrets: ``McpServer.listing`` gives
their names only, and errors never quote them.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import math
import re
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx2
import jsonschema
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client import Transport as SdkTransport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import Delete, RowMapping, Update, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from blackroad.agents.base import Tool, ToolContext, ToolResult
from blackroad.errors import InvalidRequest, NotFound, ServiceUnavailable
from blackroad.memory.conversations import utc_now
from blackroad.store.database import Database
from blackroad.store.schema import mcp_servers

log = logging.getLogger(__name__)

Transport = Literal["stdio", "http"]
TRANSPORTS: frozenset[str] = frozenset({"stdio", "http"})
SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for a function's name
SEPARATOR = "__"
DIGEST_CHARS = 8  # of a clipped tool name's sha256, so distinct long names stay distinct
MAX_OUTPUT_BYTES = 1_000_000
# Streamable HTTP sends a result as one SSE event; the SDK's 1 MB default would refuse
# a result before it could be truncated to MAX_OUTPUT_BYTES here.
MAX_EVENT_BYTES = 16 * 1024 * 1024
MAX_DESCRIPTION_CHARS = 2000
MAX_TOOL_PAGES = 20
STDERR_TAIL_CHARS = 1000
# Bounds of a definition (it arrives through the admin API).
MAX_TEXT = 4096
MAX_URL = 2048
MAX_ARGS = 64
MAX_ENTRIES = 64
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
# Codes the SDK itself gives a request whose session is gone, not answers of the server.
LOST = frozenset({mcp_types.CONNECTION_CLOSED, mcp_types.REQUEST_TIMEOUT})


class McpServerUnavailable(ServiceUnavailable):
    """An MCP server could not be started, reached, or did not answer in time."""

    code = "mcp_server_unavailable"

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"MCP server {server!r} {reason}")
        self.server = server


def _text(value: str, param: str, limit: int = MAX_TEXT) -> None:
    if len(value) > limit:
        raise InvalidRequest(f"{param} is longer than {limit} characters", param)
    if "\0" in value:
        raise InvalidRequest(f"{param} holds a NUL character", param)


def _entries(values: Mapping[str, str], names: re.Pattern[str], param: str) -> None:
    if len(values) > MAX_ENTRIES:
        raise InvalidRequest(f"{param} has more than {MAX_ENTRIES} entries", param)
    for name, value in values.items():
        if not names.fullmatch(name):
            raise InvalidRequest(f"{param}: {name[:64]!r} is not a valid name", param)
        _text(value, f"{param}.{name}")
        if param == "headers" and any(c in value for c in "\r\n"):
            raise InvalidRequest(f"headers.{name} holds a line break", param)


@dataclass(frozen=True)
class McpServer:
    """How to reach one MCP server: a command (stdio) or a URL (streamable HTTP)."""

    name: str
    transport: Transport
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # An admin's word that its tools' read-only claims may be believed (kept in its own column).
    trusted: bool = False

    def __post_init__(self) -> None:
        if not SERVER_NAME.fullmatch(self.name):
            raise InvalidRequest(
                "a server's name is 1-32 of a-z, 0-9, '_' and '-', starting with a letter or digit",
                "name",
            )
        if self.transport not in TRANSPORTS:
            raise InvalidRequest("transport is 'stdio' or 'http'", "transport")
        if self.transport == "stdio":
            if not self.command or self.url or self.headers:
                raise InvalidRequest(
                    "a stdio server has a command, and no URL or headers", "command"
                )
            _text(self.command, "command")
            if len(self.args) > MAX_ARGS:
                raise InvalidRequest(f"more than {MAX_ARGS} arguments", "args")
            for arg in self.args:
                _text(arg, "args")
            _entries(self.env, ENV_NAME, "env")
            return
        if self.command or self.args or self.env:
            raise InvalidRequest("an http server has a URL, and no command or environment", "url")
        _text(self.url, "url", MAX_URL)
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest("url must be an http:// or https:// URL", "url")
        if parts.username is not None or parts.password is not None:
            # It would be shown wherever the server is listed; a header is kept secret.
            raise InvalidRequest("put credentials in a header, not in the URL", "url")
        _entries(self.headers, HEADER_NAME, "headers")

    def listing(self) -> dict[str, Any]:
        """The server as the API and CLI show it: header and environment names, no values."""
        shown: dict[str, Any] = {
            "name": self.name,
            "transport": self.transport,
            "trusted": self.trusted,
        }
        if self.transport == "stdio":
            return {**shown, "command": self.command, "args": self.args, "env": sorted(self.env)}
        return {**shown, "url": self.url, "headers": sorted(self.headers)}


class McpServers:
    """The MCP servers registered on this installation (table ``mcp_servers``, Core
    statements on either database)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def list(self) -> builtins.list[McpServer]:
        with self.database.engine.connect() as connection:
            rows = connection.execute(_SELECT.order_by(_s.name)).mappings()
            return [_server(row) for row in rows]

    def get(self, name: str) -> McpServer:
        with self.database.engine.connect() as connection:
            row = connection.execute(_SELECT.where(_s.name == name)).mappings().first()
        if row is None:
            raise NotFound(f"no MCP server named {name!r}")
        return _server(row)

    def add(self, server: McpServer) -> None:
        own_columns = ("name", "transport", "trusted")
        definition = {k: v for k, v in asdict(server).items() if k not in own_columns}
        row = {
            "name": server.name, "transport": server.transport,
            "definition": json.dumps(definition), "created_at": utc_now(),
            "trusted": server.trusted,
        }  # fmt: skip
        try:
            with self.database.engine.begin() as connection:
                connection.execute(insert(mcp_servers), row)
        except IntegrityError:
            raise InvalidRequest(f"MCP server {server.name!r} already exists", "name") from None

    def connect(
        self, names: Sequence[str], timeout: float = 30
    ) -> AbstractAsyncContextManager[dict[str, Tool]]:
        """``connected`` to the servers registered as ``names``: the run loop's opener."""
        return connected([self.get(name) for name in names], timeout)

    def set_trusted(self, name: str, trusted: bool) -> McpServer:
        """Believe the server's read-only claims, or stop believing them, from the next run on."""
        self._change(name, update(mcp_servers).where(_s.name == name).values(trusted=trusted))
        return self.get(name)

    def remove(self, name: str) -> None:
        self._change(name, delete(mcp_servers).where(_s.name == name))

    def _change(self, name: str, statement: Update | Delete) -> None:
        """Run ``statement`` on the server ``name``; NotFound where there is none."""
        with self.database.engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise NotFound(f"no MCP server named {name!r}")


_s = mcp_servers.c
_SELECT = select(_s.name, _s.transport, _s.definition, _s.trusted)


def _server(row: RowMapping) -> McpServer:
    definition = json.loads(row["definition"])
    return McpServer(row["name"], row["transport"], **definition, trusted=bool(row["trusted"]))


def agent_tool_name(server: str, tool: str) -> str:
    """``SERVER__TOOL``, or, where that is no OpenAI function name, a clipped form.

    The rule: characters outside ``[A-Za-z0-9_-]`` become ``_``, the name is
    cut to leave room, and ``_`` plus the first 8 hex digits of the sha256 of
    the tool's own name are appended (64 characters at most), so two tools
    whose names differ only where they were cut or replaced stay apart.
    """
    name = f"{server}{SEPARATOR}{tool}"
    if FUNCTION_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(tool.encode()).hexdigest()[:DIGEST_CHARS]
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    return f"{safe[: 64 - DIGEST_CHARS - 1]}_{digest}"


def _block_text(block: mcp_types.ContentBlock) -> str:
    """What the model reads of one content item: its text, or what it is."""
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.EmbeddedResource):
        if isinstance(block.resource, mcp_types.TextResourceContents):
            return block.resource.text
        return f"[binary resource {block.resource.uri}]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource {block.uri}]"
    return f"[{block.type} content, {block.mime_type}, not shown]"


def _capped(text: str, limit: int = MAX_OUTPUT_BYTES) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    kept = encoded[:limit].decode(errors="ignore")  # never half a character
    return f"{kept}\n[output truncated: {len(encoded)} bytes, the first {limit} kept]"


def tool_result(result: mcp_types.CallToolResult) -> ToolResult:
    """A tool call's result as the run loop reads it: text content, structured data, error."""
    content = _capped("\n".join(_block_text(block) for block in result.content))
    structured = result.structured_content
    data: dict[str, Any] = {}
    if structured is not None:
        size = len(json.dumps(structured))
        if size > MAX_OUTPUT_BYTES:
            content += f"\n[structured content of {size} bytes left out]"
        else:
            data = structured if isinstance(structured, dict) else {"result": structured}
    return ToolResult(content, data, result.is_error)


def _reason(error: BaseException) -> str:
    """The messages of an error and, for a group, of the errors inside it."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_reason(inner) for inner in error.exceptions)
    if isinstance(error, MCPError):
        return error.message
    return str(error) or type(error).__name__


class _Session:
    """One server's session, held open by its own task until ``close``."""

    def __init__(self, server: McpServer, timeout: float, call_timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.tools: builtins.list[mcp_types.Tool] = []
        self._client: Client | None = None
        self._scope = anyio.CancelScope()
        self._settled = asyncio.Event()  # ready, or ended
        self._ended = asyncio.Event()
        self._failure: str | None = None
        self._stderr: IO[str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._task = asyncio.create_task(self._hold(), name=f"mcp:{self.server.name}")
        await self._settled.wait()
        if self._ended.is_set():
            raise self._lost("failed to start")

    async def close(self) -> None:
        self._scope.cancel()
        if self._task is not None:
            await self._task
        if self._stderr is not None:
            self._stderr.close()

    async def call(self, tool: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        if self._ended.is_set() or self._client is None:
            raise self._lost("is gone")
        call = asyncio.ensure_future(
            self._client.call_tool(tool, arguments, read_timeout_seconds=self.call_timeout)
        )
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            done, _ = await asyncio.wait(
                {call, ended}, timeout=self.call_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in (call, ended):
                waiter.cancel()
            await asyncio.gather(call, ended, return_exceptions=True)
        if call not in done:
            if ended in done:
                raise self._lost(f"ended during a call of {tool!r}")
            raise McpServerUnavailable(
                self.server.name,
                f"did not answer a call of {tool!r} within {self.call_timeout:g} s",
            )
        try:
            return call.result()
        except MCPError as error:
            if error.code in LOST:
                raise McpServerUnavailable(self.server.name, error.message) from None
            raise

    def _lost(self, what: str) -> McpServerUnavailable:
        reason = self._failure or "closed the connection"
        return McpServerUnavailable(self.server.name, f"{what}: {reason}{self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        tail = self._stderr.read()[-STDERR_TAIL_CHARS:].strip()
        return f" (its stderr ends: {tail})" if tail else ""

    async def _hold(self) -> None:
        self._scope.deadline = anyio.current_time() + self.timeout
        try:
            with self._scope:
                async with AsyncExitStack() as stack:
                    client = Client(
                        await self._transport(stack), read_timeout_seconds=self.timeout, cache=None
                    )
                    await stack.enter_async_context(client)
                    self.tools = await _all_tools(client)
                    self._client = client
                    self._scope.deadline = math.inf
                    self._settled.set()
                    await anyio.sleep_forever()
            if self._client is None:
                self._failure = f"no answer within {self.timeout:g} s"
        except OSError as error:  # the command could not be run
            self._failure = f"cannot run {self.server.command!r}: {error.strerror or error}"
        except Exception as error:  # every other failure of the transport or the handshake
            self._failure = _reason(error)
            log.warning("MCP server %r: %s", self.server.name, self._failure)
        finally:
            self._ended.set()
            self._settled.set()

    async def _transport(self, stack: AsyncExitStack) -> SdkTransport:
        """The SDK transport for this server, its resources closed with ``stack``."""
        server = self.server
        if server.transport == "stdio":
            # Read for errors once the process is gone, so closed by close(), not the stack.
            # Appending: the child's writes land at the end whatever our read offset.
            self._stderr = tempfile.TemporaryFile("a+", encoding="utf-8", errors="replace")  # noqa: SIM115
            parameters = StdioServerParameters(
                command=server.command, args=server.args, env=server.env
            )
            return stdio_client(parameters, errlog=self._stderr)
        # No read timeout: every wait is bounded here, and calls may outlast the start's.
        timeout = httpx2.Timeout(self.timeout, read=None)
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=server.headers, timeout=timeout)
        )
        return streamable_http_client(
            server.url, http_client=http, max_sse_event_size=MAX_EVENT_BYTES
        )


async def _all_tools(client: Client) -> builtins.list[mcp_types.Tool]:
    tools: builtins.list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


class McpTool(Tool):
    """One tool of an MCP server, as an agent sees it."""

    def __init__(self, session: _Session, spec: mcp_types.Tool, name: str) -> None:
        self.name = name
        self.description = (spec.description or spec.title or spec.name)[:MAX_DESCRIPTION_CHARS]
        self.parameters = spec.input_schema
        # Side-effecting (MCP's own default) unless the server declares it read-only and is
        # trusted to tell the truth about it.
        read_only = bool(spec.annotations and spec.annotations.read_only_hint)
        self.side_effects = not (read_only and session.server.trusted)
        self.server = session.server.name
        self.remote_name = spec.name
        self._session = session

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        try:
            result = await self._session.call(self.remote_name, arguments)
        except MCPError as error:  # the server refused the request itself (unknown tool, ...)
            return ToolResult(f"{self.name} failed: {error.message}", is_error=True)
        return tool_result(result)


def _tools_of(session: _Session) -> dict[str, Tool]:
    found: dict[str, Tool] = {}
    for spec in session.tools:
        name = agent_tool_name(session.server.name, spec.name)
        try:
            jsonschema.validators.validator_for(spec.input_schema).check_schema(spec.input_schema)
        except jsonschema.SchemaError as error:
            log.warning(
                "MCP tool %s left out: its input schema is invalid: %s", name, error.message
            )
            continue
        if not spec.name or name in found:
            log.warning("MCP tool %s left out: its name is empty or taken", name)
            continue
        found[name] = McpTool(session, spec, name)
    return found


# The timeouts bound each wait on a server (its start, each call), not one block of code,
# so they are parameters rather than the caller's ``anyio.fail_after``.
@asynccontextmanager
async def connected(
    servers: Sequence[McpServer],
    timeout: float = 30,  # noqa: ASYNC109
    *,
    call_timeout: float | None = None,
) -> AsyncIterator[dict[str, Tool]]:
    """The tools of ``servers`` by agent-facing name, while a session with each is open.

    Raises ``McpServerUnavailable`` naming the first server that fails to start,
    answer the handshake or list its tools within ``timeout`` seconds; the
    sessions already open are closed first. A tool call that takes longer than
    ``call_timeout`` (default: ``timeout``) seconds raises it too. Every session
    is closed on exit.
    """
    names = [server.name for server in servers]
    if len(set(names)) != len(names):
        raise InvalidRequest("MCP servers are named twice", "servers")
    sessions = [_Session(server, timeout, call_timeout or timeout) for server in servers]
    try:
        # Started together: a fleet of servers costs the slowest start, not the sum.
        opened = await asyncio.gather(*(s.open() for s in sessions), return_exceptions=True)
        for outcome in opened:
            if isinstance(outcome, BaseException):
                raise outcome
        tools: dict[str, Tool] = {}
        for session in sessions:
            tools.update(_tools_of(session))
        yield tools
    finally:
        # Shielded: a caller cancelled while closing must still not leave processes behind.
        await asyncio.shield(asyncio.gather(*(s.close() for s in sessions), return_exceptions=True))


async def tool_listing(
    server: McpServer,
    timeout: float = 30,  # noqa: ASYNC109
) -> builtins.list[dict[str, Any]]:
    """The tools ``server`` offers agents: name, description, parameters, side effects."""
    async with connected([server], timeout) as tools:
        return [
            {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "side_effects": tool.side_effects,
            }
            for tool in tools.values()
        ]
