"""The built-in tools: arithmetic, the time, sandboxed files, allowlisted HTTP, memory.

Both HTTP tools wait for a person's approval: ``http_post`` has side effects,
and ``http_get`` sends its URL out (``Tool.outbound``). The allowlist says
where a request may go, not what it may carry: a model that read a memory, a
passage or a file, or text a prompt injection planted in them, can write any
of it into a GET's path or query, so the person sees the exact URL first.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from blackroad import bounded
from blackroad.agents.base import Tool, ToolContext, ToolError, ToolResult, object_schema
from blackroad.errors import BlackRoadError

MAX_EXPRESSION_LENGTH = 200
MAX_EXPONENT = 1000
MAX_DEPTH = 30
MAX_MAGNITUDE = 1e100
# round()'s digits: past a float's range they change nothing, and 10**digits is its cost.
MAX_ROUND_DIGITS = 308
MAX_FILE_BYTES = 1_000_000
MAX_RESPONSE_BYTES = 1_000_000
HTTP_TIMEOUT_SECONDS = 10.0
MAX_HITS = 20

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _checked(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("Only numbers are allowed.", "expression")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError("The result is too large.", "expression")
    return value


def _evaluate(node: ast.AST, depth: int) -> float | int:
    if depth > MAX_DEPTH:
        raise ToolError("The expression is nested too deeply.", "expression")
    if isinstance(node, ast.Constant):
        return _checked(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand, depth + 1)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _evaluate(node.left, depth + 1)
        right = _evaluate(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("Division by zero.", "expression") from None
        except OverflowError:
            raise ToolError("The result is too large.", "expression") from None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        arguments = [_evaluate(argument, depth + 1) for argument in node.args]
        if node.func.id == "round" and len(arguments) == 2:
            _check_digits(arguments[1])
        try:
            return _checked(_FUNCTIONS[node.func.id](*arguments))
        except (ValueError, TypeError, OverflowError, ZeroDivisionError) as error:
            raise ToolError(f"{node.func.id}: {error}", "expression") from None
    raise ToolError(f"Not allowed in an expression: {ast.unparse(node)[:60]}", "expression")


def _check_power(base: float | int, exponent: float | int) -> None:
    """Refuse a power whose result would be too large before computing it (big ints cost)."""
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"Exponents above {MAX_EXPONENT} are refused.", "expression")
    if exponent > 0 and abs(base) > 1 and exponent * math.log10(abs(base)) > 100:
        raise ToolError("The result is too large.", "expression")


def _check_digits(digits: float | int) -> None:
    if isinstance(digits, int) and abs(digits) > MAX_ROUND_DIGITS:
        raise ToolError(f"round() takes at most {MAX_ROUND_DIGITS} digits.", "expression")


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic ``expression``; anything else is a ``ToolError``.

    Every operand and result stays within ``MAX_MAGNITUDE``, and the operations
    that cost more than their operands' size (a power, round's digits) are
    refused before they run, so an evaluation takes microseconds; the tool
    still runs it in a helper process (``calculate``), bounded in time.
    """
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ToolError("The expression is too long.", "expression")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, RecursionError):
        raise ToolError("The expression is not valid arithmetic.", "expression") from None
    return _evaluate(tree.body, 0)


class Calculator(Tool):
    name = "calculator"
    description = "Evaluate an arithmetic expression (+ - * / // % **, sqrt, log, sin, pi, ...)."
    # The pattern (with its bound: llama.cpp's grammars ignore maxLength beside a
    # pattern) keeps a small model's constrained decoding to short arithmetic.
    parameters = object_schema(
        {
            "expression": {
                "type": "string",
                "pattern": rf"^[-+*/%()., 0-9a-z]{{1,{MAX_EXPRESSION_LENGTH}}}$",
            }
        },
        ["expression"],
    )

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        work = bounded.pool()
        try:
            answer = await work.run(
                CALCULATE_TASK,
                {"expression": arguments["expression"]},
                seconds=work.bounds.calculator_seconds,
                output_bytes=4096,
                what="the expression",
                param="expression",
            )
        except BlackRoadError as error:  # a bound passed, or no helper free
            raise ToolError(f"{error.message}.", "expression") from None
        if "error" in answer:
            raise ToolError(answer["error"], answer["param"])
        value = answer["value"]
        return ToolResult(str(value), {"value": value})


CALCULATE_TASK = f"{__name__}:calculate"


def calculate(args: dict[str, Any], _: bytes) -> dict[str, Any]:
    """A helper's side of the calculator (``blackroad.bounded``): its value, or its refusal."""
    try:
        return {"value": evaluate(args["expression"])}
    except ToolError as error:
        return {"error": error.message, "param": error.param}


class CurrentTime(Tool):
    name = "current_time"
    description = "The current time in UTC, and in an IANA time zone if one is given."
    parameters = object_schema({"timezone": {"type": "string"}})

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        now = datetime.now(UTC)
        data = {"utc": now.isoformat()}
        if "timezone" in arguments:
            try:
                zone = ZoneInfo(arguments["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                raise ToolError("Unknown time zone.", "timezone") from None
            data["local"] = now.astimezone(zone).isoformat()
        return ToolResult(data.get("local", data["utc"]), data)


def sandboxed(context: ToolContext, relative: str) -> Path:
    """``relative`` inside the agent's sandbox, symlinks resolved; escapes are refused."""
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ToolError("Paths must be relative and inside the sandbox.", "path")
    root = context.sandbox.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ToolError("The path leaves the sandbox.", "path")
    return path


# A relative path by its first character, which guides a small model's constrained
# decoding away from "/..."; ``sandboxed`` still refuses every escape.
_PATH = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_. /-]{0,254}$"}
_PATH_ONLY = object_schema({"path": _PATH}, ["path"])


class ReadFile(Tool):
    name = "read_file"
    description = "Read a text file from the agent's sandbox."
    parameters = _PATH_ONLY

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        path = sandboxed(context, arguments["path"])
        if not path.is_file():
            raise ToolError("No such file.", "path")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ToolError("The file is too large to read.", "path")
        text = path.read_text(errors="replace")
        return ToolResult(text, {"path": arguments["path"], "bytes": len(text.encode())})


class ListFiles(Tool):
    name = "list_files"
    description = "List the files in a directory of the agent's sandbox."
    parameters = object_schema({"path": {"type": "string"}})

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        directory = sandboxed(context, arguments.get("path", "."))
        if not directory.is_dir():
            raise ToolError("No such directory.", "path")
        root = context.sandbox.resolve()
        names = sorted(str(entry.relative_to(root)) for entry in directory.iterdir())
        return ToolResult("\n".join(names), {"files": names})


class WriteFile(Tool):
    name = "write_file"
    description = "Write a text file in the agent's sandbox, replacing it if it exists."
    side_effects = True
    parameters = object_schema(
        {"path": _PATH, "content": {"type": "string"}},
        ["path", "content"],
    )

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        path = sandboxed(context, arguments["path"])
        content = arguments["content"].encode()
        if len(content) > MAX_FILE_BYTES:
            raise ToolError("The content is too large.", "content")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return ToolResult(f"Wrote {len(content)} bytes.", {"bytes": len(content)})


class DeleteFile(Tool):
    name = "delete_file"
    description = "Delete a file in the agent's sandbox."
    side_effects = True
    parameters = _PATH_ONLY

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        path = sandboxed(context, arguments["path"])
        if not path.is_file():
            raise ToolError("No such file.", "path")
        path.unlink()
        return ToolResult("Deleted.", {"path": arguments["path"]})


class _AllowlistedHTTP(Tool):
    """Requests only to ``host[:port]`` pairs on the admin's allowlist, never redirected."""

    method: str

    def __init__(self, allowed_hosts: frozenset[str]) -> None:
        self.allowed_hosts = allowed_hosts

    def _checked_url(self, url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise ToolError("Not a valid URL.", "url") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ToolError("Only http and https URLs are allowed.", "url")
        authority = parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"
        if authority not in self.allowed_hosts:
            raise ToolError(f"The host {authority} is not on the allowlist.", "url")
        return parsed

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        url = self._checked_url(arguments["url"])
        body = arguments.get("body")
        async with httpx.AsyncClient(
            follow_redirects=False, timeout=HTTP_TIMEOUT_SECONDS, trust_env=False
        ) as client:
            try:
                async with client.stream(
                    self.method, url, content=None if body is None else body.encode()
                ) as response:
                    received = bytearray()
                    async for chunk in response.aiter_bytes():
                        received += chunk
                        if len(received) > MAX_RESPONSE_BYTES:
                            raise ToolError("The response is too large.", "url")
            except httpx.HTTPError as error:
                raise ToolError(f"The request failed: {error}", "url") from None
        text = received.decode(errors="replace")
        data = {"status": response.status_code, "body": text}
        if response.is_redirect:
            data["location"] = response.headers.get("location", "")
        return ToolResult(text, data, is_error=response.status_code >= 400)


class HTTPGet(_AllowlistedHTTP):
    name = "http_get"
    description = "GET a URL on a host the administrator allows."
    method = "GET"
    outbound = True  # its URL is data leaving the machine
    parameters = object_schema({"url": {"type": "string"}}, ["url"])


class HTTPPost(_AllowlistedHTTP):
    name = "http_post"
    description = "POST a text body to a URL on a host the administrator allows."
    method = "POST"
    side_effects = True
    outbound = True
    parameters = object_schema(
        {"url": {"type": "string"}, "body": {"type": "string"}}, ["url", "body"]
    )


_QUERY = object_schema(
    {
        "query": {"type": "string", "minLength": 1},
        # No maximum: llama.cpp's grammars cannot bound a number, so a larger limit is
        # cut to MAX_HITS rather than refused (a small model often asks for 100).
        "limit": {"type": "integer", "minimum": 1},
    },
    ["query"],
)


def _limit(arguments: dict[str, Any]) -> int:
    return min(int(arguments.get("limit", 5)), MAX_HITS)


def _unavailable(what: str) -> ToolError:
    return ToolError(f"{what} is not available to this agent.")


class KnowledgeSearchTool(Tool):
    name = "knowledge_search"
    description = "Search the knowledge bases the user can read."
    parameters = _QUERY

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        if context.knowledge_search is None:
            raise _unavailable("Knowledge search")
        hits = await context.knowledge_search(arguments["query"], _limit(arguments))
        return ToolResult("\n\n".join(str(hit.get("text", hit)) for hit in hits), {"hits": hits})


class MemoryReadTool(Tool):
    name = "memory_read"
    description = "Recall the user's long-term memories relevant to a query."
    parameters = _QUERY

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        if context.memory_read is None:
            raise _unavailable("Memory")
        found = await context.memory_read(arguments["query"], _limit(arguments))
        text = "\n".join(str(memory.get("content", memory)) for memory in found)
        return ToolResult(text, {"memories": found})


class MemoryWriteTool(Tool):
    name = "memory_write"
    description = "Remember a fact about the user for later conversations."
    side_effects = True
    parameters = object_schema(
        {"content": {"type": "string", "minLength": 1, "maxLength": 2000}}, ["content"]
    )

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        if context.memory_write is None:
            raise _unavailable("Memory")
        stored = await context.memory_write(arguments["content"])
        return ToolResult("Remembered.", stored)


def builtin_tools(allowed_hosts: frozenset[str] = frozenset()) -> dict[str, Tool]:
    """Every built-in tool by name; the HTTP tools reach only ``allowed_hosts``."""
    tools: list[Tool] = [
        Calculator(),
        CurrentTime(),
        ReadFile(),
        ListFiles(),
        WriteFile(),
        DeleteFile(),
        HTTPGet(allowed_hosts),
        HTTPPost(allowed_hosts),
        KnowledgeSearchTool(),
        MemoryReadTool(),
        MemoryWriteTool(),
    ]
    return {tool.name: tool for tool in tools}
