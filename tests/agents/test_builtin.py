"""The built-in tools, called through ``validated_call`` as the run loop will."""

from __future__ import annotations

import asyncio
import http.server
import math
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from blackroad.agents.base import ToolContext, ToolError, ToolResult, validated_call
from blackroad.agents.builtin import builtin_tools

SIDE_EFFECTING = {"write_file", "delete_file", "http_post", "memory_write"}


def call(name: str, arguments: dict[str, Any], context: ToolContext, **tools: Any) -> ToolResult:
    tool = builtin_tools(**tools)[name]
    return asyncio.run(validated_call(tool, arguments, context))


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    return ToolContext(user="ada", agent="helper", sandbox=sandbox)


def test_side_effect_flags_are_as_specified() -> None:
    flagged = {name for name, tool in builtin_tools().items() if tool.side_effects}
    assert flagged == SIDE_EFFECTING


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-2 ** 2", -4),
        ("7 // 2 + 7 % 2", 4),
        ("2 ** 10", 1024),
        ("sqrt(16) + abs(-1)", 5.0),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("floor(2.7) + ceil(2.1)", 5),
        ("round(cos(pi), 3)", -1.0),
        ("log(e)", 1.0),
    ],
)
def test_calculator_evaluates_arithmetic(
    expression: str, expected: float, context: ToolContext
) -> None:
    result = call("calculator", {"expression": expression}, context)
    assert math.isclose(result.data["value"], expected)
    assert not result.is_error


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "(1).__class__",
        "x + 1",
        "9**9**9",
        "10 ** 200",
        "1e300 * 1e10",
        "1 / 0",
        "'a' * 3",
        "True + 1",
        "sqrt(-1)",
        "exp(1000)",
        "open('x')",
        "[1, 2]",
        "1 if 1 else 2",
        "sqrt(" * 40 + "1" + ")" * 40,
        "-" * 40 + "1",
        "1 + " * 200 + "1",
        "1 +",
    ],
)
def test_calculator_refuses(expression: str, context: ToolContext) -> None:
    with pytest.raises(ToolError) as raised:
        call("calculator", {"expression": expression}, context)
    assert raised.value.param == "expression"


@pytest.mark.parametrize("expression", ["round(1, -10**8)", "round(10**99, -5 * 10**7)"])
def test_calculator_refuses_work_its_operands_do_not_show(
    expression: str, context: ToolContext
) -> None:
    """Rounding to -10**8 digits computes 10**(10**8): minutes, with small operands."""
    with pytest.raises(ToolError) as raised:
        call("calculator", {"expression": expression}, context)
    assert raised.value.message == "round() takes at most 308 digits."


def test_bad_arguments_are_refused_before_the_tool_runs(context: ToolContext) -> None:
    for arguments in ({}, {"expression": 3}, {"expression": "1", "extra": 1}):
        with pytest.raises(ToolError, match="Invalid arguments for calculator"):
            call("calculator", arguments, context)
    with pytest.raises(ToolError) as raised:
        call("knowledge_search", {"query": "x", "limit": 0}, context)
    assert raised.value.param == "limit"


def test_current_time_in_utc_and_a_zone(context: ToolContext) -> None:
    utc = call("current_time", {}, context).data
    assert datetime.fromisoformat(utc["utc"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    zoned = call("current_time", {"timezone": "Asia/Kolkata"}, context).data
    assert zoned["local"].endswith("+05:30")
    assert datetime.fromisoformat(zoned["local"]) == datetime.fromisoformat(zoned["utc"])
    for zone in ("Mars/Olympus", "../etc/passwd"):
        with pytest.raises(ToolError):
            call("current_time", {"timezone": zone}, context)


def test_files_round_trip_in_the_sandbox(context: ToolContext) -> None:
    call("write_file", {"path": "notes/a.txt", "content": "hello"}, context)
    assert (context.sandbox / "notes" / "a.txt").read_text() == "hello"
    assert call("read_file", {"path": "notes/a.txt"}, context).content == "hello"
    assert call("list_files", {"path": "notes"}, context).data["files"] == ["notes/a.txt"]
    call("delete_file", {"path": "notes/a.txt"}, context)
    assert call("list_files", {"path": "notes"}, context).data["files"] == []
    with pytest.raises(ToolError):
        call("read_file", {"path": "notes/a.txt"}, context)


def test_files_refuse_to_leave_the_sandbox(context: ToolContext) -> None:
    outside = context.sandbox.parent / "secret.txt"
    outside.write_text("secret")
    (context.sandbox / "link").symlink_to(outside)
    (context.sandbox / "dirlink").symlink_to(context.sandbox.parent)
    for path in ("../secret.txt", "/etc/passwd", "link", "dirlink/secret.txt", "a/../../x"):
        for name, arguments in (
            ("read_file", {"path": path}),
            ("write_file", {"path": path, "content": "x"}),
            ("delete_file", {"path": path}),
        ):
            with pytest.raises(ToolError) as raised:
                call(name, arguments, context)
            assert raised.value.param == "path"
    assert outside.read_text() == "secret"


def test_files_refuse_oversized_content(context: ToolContext) -> None:
    with pytest.raises(ToolError) as raised:
        call("write_file", {"path": "big", "content": "x" * 1_000_001}, context)
    assert raised.value.param == "content"
    assert not (context.sandbox / "big").exists()


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.requests.append(f"GET {self.path}")
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://localhost:1/elsewhere")
            self.end_headers()
            return
        if self.path == "/big":
            self._reply(b"x" * 1_000_001)
            return
        self._reply(b"hello from the allowed host")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.requests.append(f"POST {self.path}")
        self._reply(b"got " + body)

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_host() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.requests.clear()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_reaches_only_allowed_hosts(http_host: str, context: ToolContext) -> None:
    allowed = frozenset({http_host})
    got = call("http_get", {"url": f"http://{http_host}/x"}, context, allowed_hosts=allowed)
    assert got.data["status"] == 200
    assert got.content == "hello from the allowed host"
    posted = call(
        "http_post", {"url": f"http://{http_host}/y", "body": "hi"}, context, allowed_hosts=allowed
    )
    assert posted.content == "got hi"
    port = http_host.split(":")[1]
    for url in (f"http://localhost:{port}/x", f"http://127.0.0.1:{int(port) + 1}/x", "file:///x"):
        with pytest.raises(ToolError, match=r"allowlist|Only http"):
            call("http_get", {"url": url}, context, allowed_hosts=allowed)
    assert _Handler.requests == ["GET /x", "POST /y"]


def test_http_does_not_follow_redirects(http_host: str, context: ToolContext) -> None:
    result = call(
        "http_get",
        {"url": f"http://{http_host}/redirect"},
        context,
        allowed_hosts=frozenset({http_host}),
    )
    assert result.data["status"] == 302
    assert result.data["location"] == "http://localhost:1/elsewhere"
    assert _Handler.requests == ["GET /redirect"]


def test_http_refuses_an_oversized_response(http_host: str, context: ToolContext) -> None:
    with pytest.raises(ToolError, match="too large"):
        call(
            "http_get",
            {"url": f"http://{http_host}/big"},
            context,
            allowed_hosts=frozenset({http_host}),
        )


def test_memory_and_knowledge_call_the_context(tmp_path: Path) -> None:
    remembered: list[str] = []

    async def search(query: str, limit: int) -> list[dict[str, Any]]:
        return [{"text": f"{query}:{limit}"}]

    async def write(content: str) -> dict[str, Any]:
        remembered.append(content)
        return {"id": len(remembered)}

    context = ToolContext(
        "ada", "helper", tmp_path, knowledge_search=search, memory_read=search, memory_write=write
    )
    assert call("knowledge_search", {"query": "q", "limit": 2}, context).content == "q:2"
    assert call("memory_read", {"query": "m"}, context).data["memories"] == [{"text": "m:5"}]
    assert call("memory_write", {"content": "likes tea"}, context).data == {"id": 1}
    assert remembered == ["likes tea"]
    bare = ToolContext("ada", "helper", tmp_path)
    with pytest.raises(ToolError, match="not available"):
        call("memory_write", {"content": "x"}, bare)
