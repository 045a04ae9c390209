"""MCP tool servers: a real SDK server as a process, over stdio and streamable HTTP."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blackroad.agents.base import ToolContext, ToolError, validated_call
from blackroad.agents.mcp import (
    MAX_OUTPUT_BYTES,
    McpServer,
    McpServers,
    McpServerUnavailable,
    agent_tool_name,
    connected,
    tool_listing,
)
from blackroad.errors import InvalidRequest, NotFound
from blackroad.store.database import Database
from tests.support.mcp_tool_server import http_server, stdio_server
from tests.support.server import free_port

pytestmark = pytest.mark.anyio
TOOLS = {"add", "echo", "write_note", "refuse", "huge", "nap", "pid"}
READ_ONLY = {"add", "refuse", "huge", "nap", "pid"}


def children() -> set[int]:
    """This process's child processes now."""
    found: set[int] = set()
    for listing in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        found |= {int(pid) for pid in listing.read_text().split()}
    return found


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    return ToolContext(user="ada", agent="helper", sandbox=tmp_path)


@pytest.fixture(params=["stdio", "http"])
def definition(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[McpServer]:
    """The test server on each transport, named after it."""
    if request.param == "stdio":
        yield stdio_server("tools", tmp_path / "notes.txt")
    else:
        with http_server("tools", tmp_path / "notes.txt", tmp_path / "http.log") as (server, _):
            yield server


# -- definitions and the registry ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"name": "Tools", "transport": "stdio", "command": "x"}, "name"),
        ({"name": "-tools", "transport": "stdio", "command": "x"}, "name"),
        ({"name": "t" * 33, "transport": "stdio", "command": "x"}, "name"),
        ({"name": "t", "transport": "sse", "command": "x"}, "transport"),
        ({"name": "t", "transport": "stdio"}, "command"),
        ({"name": "t", "transport": "stdio", "command": "x", "url": "http://h"}, "command"),
        ({"name": "t", "transport": "stdio", "command": "x", "env": {"A B": "1"}}, "env"),
        ({"name": "t", "transport": "stdio", "command": "x", "args": ["a\0b"]}, "args"),
        ({"name": "t", "transport": "stdio", "command": "x", "args": ["a"] * 65}, "args"),
        ({"name": "t", "transport": "http", "url": "ftp://h/mcp"}, "url"),
        ({"name": "t", "transport": "http", "url": "http://u:p@h/mcp"}, "url"),
        ({"name": "t", "transport": "http", "url": "http://h", "command": "x"}, "url"),
        (
            {"name": "t", "transport": "http", "url": "http://h", "headers": {"A": "1\r\nB: 2"}},
            "headers",
        ),
        ({"name": "t", "transport": "http", "url": "http://h", "headers": {"A:": "1"}}, "headers"),
    ],
)
def test_a_definition_that_cannot_be_used_is_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        McpServer(**fields)
    assert refused.value.param == param


def test_the_registry_keeps_servers_and_lists_no_secret(tmp_path: Path) -> None:
    registry = McpServers(Database(tmp_path / "db.sqlite"))
    local = McpServer("local", "stdio", command="srv", args=["-v"], env={"TOKEN": "s3cret"})
    remote = McpServer("remote", "http", url="https://h/mcp", headers={"Authorization": "Bearer k"})
    registry.add(remote)
    registry.add(local)
    assert registry.list() == [local, remote]
    assert registry.get("remote") == remote
    with pytest.raises(InvalidRequest, match="already exists"):
        registry.add(McpServer("local", "stdio", command="other"))
    shown = [server.listing() for server in registry.list()]
    assert shown == [
        {"name": "local", "transport": "stdio", "trusted": False, "command": "srv",
         "args": ["-v"], "env": ["TOKEN"]},
        {"name": "remote", "transport": "http", "trusted": False, "url": "https://h/mcp",
         "headers": ["Authorization"]},
    ]  # fmt: skip
    assert "s3cret" not in str(shown) and "Bearer k" not in str(shown)
    assert registry.set_trusted("local", True) == dataclasses.replace(local, trusted=True)
    assert registry.get("local").trusted and not registry.get("remote").trusted
    registry.remove("local")
    assert [server.name for server in registry.list()] == ["remote"]
    with pytest.raises(NotFound):
        registry.set_trusted("local", False)
    with pytest.raises(NotFound):
        registry.remove("local")
    with pytest.raises(NotFound):
        registry.get("local")


def test_tool_names_follow_openai_function_rules() -> None:
    assert agent_tool_name("fs", "read_file") == "fs__read_file"
    dotted = agent_tool_name("fs", "files.read")
    assert dotted.startswith("fs__files_read_") and dotted != agent_tool_name("fs", "files_read")
    long_a, long_b = agent_tool_name("fs", "a" * 80 + "1"), agent_tool_name("fs", "a" * 80 + "2")
    assert len(long_a) == len(long_b) == 64
    assert long_a != long_b
    assert all(c.isalnum() or c in "_-" for c in dotted + long_a)


# -- tools over both transports -----------------------------------------------------------


async def test_tools_appear_with_prefixed_names_schemas_and_side_effects(
    definition: McpServer,
) -> None:
    trusted = dataclasses.replace(definition, trusted=True)
    async with connected([trusted]) as tools:
        assert set(tools) == {f"tools__{name}" for name in TOOLS}
        add = tools["tools__add"]
        assert add.parameters["properties"].keys() == {"a", "b"}
        assert add.parameters["required"] == ["a", "b"]
        assert add.description == "Add two numbers."
        assert {name for name, tool in tools.items() if not tool.side_effects} == {
            f"tools__{name}" for name in READ_ONLY
        }


async def test_read_only_claims_are_believed_only_of_a_trusted_server(
    definition: McpServer,
) -> None:
    """The server says ``add`` is read-only; until an admin trusts it, every tool asks."""
    assert not definition.trusted
    async with connected([definition]) as tools:
        assert all(tool.side_effects and tool.needs_approval for tool in tools.values())
    listed = await tool_listing(definition)
    assert all(tool["side_effects"] for tool in listed)


async def test_calls_return_text_structured_data_and_side_effects(
    definition: McpServer, context: ToolContext, tmp_path: Path
) -> None:
    async with connected([definition]) as tools:
        added = await validated_call(tools["tools__add"], {"a": 2, "b": 3.5}, context)
        assert (added.content, added.data, added.is_error) == ("5.5", {"result": 5.5}, False)
        echoed = await validated_call(tools["tools__echo"], {"text": "héllo"}, context)
        assert echoed.content == "héllo"
        noted = await validated_call(tools["tools__write_note"], {"text": "remember"}, context)
        assert noted.content == "noted"
    assert (tmp_path / "notes.txt").read_text() == "remember\n"


async def test_arguments_are_checked_before_the_server_is_called(
    definition: McpServer, context: ToolContext
) -> None:
    async with connected([definition]) as tools:
        with pytest.raises(ToolError) as refused:
            await validated_call(tools["tools__add"], {"a": "two", "b": 3}, context)
        assert refused.value.param == "a"


async def test_a_tool_error_is_an_error_result(definition: McpServer, context: ToolContext) -> None:
    async with connected([definition]) as tools:
        result = await validated_call(tools["tools__refuse"], {"reason": "not today"}, context)
    assert result.is_error
    assert "refused: not today" in result.content


async def test_a_huge_output_is_truncated_with_a_note(
    definition: McpServer, context: ToolContext
) -> None:
    size = 3 * MAX_OUTPUT_BYTES
    async with connected([definition]) as tools:
        result = await validated_call(tools["tools__huge"], {"size": size}, context)
    structured = len(json.dumps({"result": "x" * size}))  # the SDK's structured copy
    assert result.content == (
        "x" * MAX_OUTPUT_BYTES
        + f"\n[output truncated: {size} bytes, the first {MAX_OUTPUT_BYTES} kept]"
        + f"\n[structured content of {structured} bytes left out]"
    )
    assert result.data == {}
    assert not result.is_error


async def test_a_call_that_outlasts_the_timeout_fails_and_the_session_goes_on(
    definition: McpServer, context: ToolContext
) -> None:
    async with connected([definition], call_timeout=1) as tools:
        with pytest.raises(McpServerUnavailable, match="did not answer a call of 'nap' within 1 s"):
            await validated_call(tools["tools__nap"], {"seconds": 600}, context)
        assert (await validated_call(tools["tools__echo"], {"text": "x"}, context)).content == "x"


async def test_tool_listing_for_the_admin_api(definition: McpServer) -> None:
    trusted = dataclasses.replace(definition, trusted=True)
    listed = {tool["name"]: tool for tool in await tool_listing(trusted)}
    assert set(listed) == {f"tools__{name}" for name in TOOLS}
    assert listed["tools__write_note"]["side_effects"] is True
    assert listed["tools__add"]["side_effects"] is False
    assert listed["tools__echo"]["parameters"]["properties"]["text"]["type"] == "string"


async def test_servers_on_both_transports_at_once(tmp_path: Path, context: ToolContext) -> None:
    local = stdio_server("local", tmp_path / "notes.txt")
    with http_server("remote", tmp_path / "notes.txt", tmp_path / "http.log") as (remote, _):
        async with connected([local, remote]) as tools:
            assert {name.split("__")[0] for name in tools} == {"local", "remote"}
            for name in ("local__add", "remote__add"):
                assert (
                    await validated_call(tools[name], {"a": 1, "b": 1}, context)
                ).content == "2.0"


# -- failures, and cleaning up ------------------------------------------------------------


async def test_a_command_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    missing = McpServer("ghost", "stdio", command=str(tmp_path / "no-such-server"))
    with pytest.raises(
        McpServerUnavailable, match="MCP server 'ghost' failed to start: cannot run"
    ):
        async with connected([missing]):
            pass


async def test_a_server_that_exits_at_once_is_a_clear_error_quoting_its_stderr() -> None:
    code = "import sys; sys.stderr.write('no config file'); sys.exit(3)"
    quitter = McpServer("quitter", "stdio", command=sys.executable, args=["-c", code])
    with pytest.raises(McpServerUnavailable, match=r"'quitter' failed to start.*no config file"):
        async with connected([quitter]):
            pass


async def test_a_server_that_never_answers_times_out() -> None:
    code = "import time; time.sleep(600)"
    silent = McpServer("silent", "stdio", command=sys.executable, args=["-c", code])
    before = children()
    with pytest.raises(
        McpServerUnavailable, match="'silent' failed to start: no answer within 1 s"
    ):
        async with connected([silent], timeout=1):
            pass
    assert children() == before


async def test_nothing_listening_at_the_url_is_a_clear_error() -> None:
    nowhere = McpServer("nowhere", "http", url=f"http://127.0.0.1:{free_port()}/mcp")
    with pytest.raises(McpServerUnavailable, match="'nowhere' failed to start"):
        async with connected([nowhere]):
            pass


async def test_a_missing_header_is_refused_by_the_server(tmp_path: Path) -> None:
    with http_server("remote", tmp_path / "notes", tmp_path / "http.log") as (server, _):
        bare = McpServer("remote", "http", url=server.url)
        with pytest.raises(McpServerUnavailable, match="'remote' failed to start"):
            async with connected([bare]):
                pass


async def test_one_failing_server_closes_the_others(tmp_path: Path) -> None:
    good = stdio_server("good", tmp_path / "notes.txt")
    bad = McpServer("bad", "stdio", command=str(tmp_path / "missing"))
    before = children()
    with pytest.raises(McpServerUnavailable, match="'bad'"):
        async with connected([good, bad]):
            pass
    assert children() == before


async def test_an_http_server_killed_mid_session_is_a_clear_error(
    tmp_path: Path, context: ToolContext
) -> None:
    with http_server("remote", tmp_path / "notes", tmp_path / "http.log") as (server, process):
        async with connected([server], timeout=60) as tools:
            assert (await validated_call(tools["remote__echo"], {"text": "a"}, context)).content
            process.kill()
            process.wait()
            with pytest.raises(McpServerUnavailable, match="MCP server 'remote'") as lost:
                await validated_call(tools["remote__echo"], {"text": "b"}, context)
            assert "did not answer" not in lost.value.message  # seen as lost, not waited out
            with pytest.raises(McpServerUnavailable, match="MCP server 'remote'"):
                await validated_call(tools["remote__echo"], {"text": "c"}, context)


async def test_a_stdio_server_is_stopped_and_reaped_when_the_context_exits(
    tmp_path: Path, context: ToolContext
) -> None:
    before = children()
    async with connected([stdio_server("local", tmp_path / "notes.txt")]) as tools:
        pid = int((await validated_call(tools["local__pid"], {}, context)).content)
        assert children() - before == {pid}
    assert children() == before
    with pytest.raises(ProcessLookupError):  # not even a zombie
        os.kill(pid, 0)


async def test_a_session_ends_cleanly_when_the_body_raises(tmp_path: Path) -> None:
    before = children()
    with pytest.raises(RuntimeError, match="the run failed"):
        async with connected([stdio_server("local", tmp_path / "notes.txt")]):
            raise RuntimeError("the run failed")
    assert children() == before


async def test_the_same_server_twice_is_refused(tmp_path: Path) -> None:
    server = stdio_server("local", tmp_path / "notes.txt")
    with pytest.raises(InvalidRequest, match="named twice"):
        async with connected([server, server]):
            pass


async def test_the_registry_opens_servers_by_name_for_the_run_loop(
    tmp_path: Path, context: ToolContext
) -> None:
    registry = McpServers(Database(tmp_path / "db.sqlite"))
    registry.add(stdio_server("local", tmp_path / "notes.txt"))
    async with registry.connect(["local"]) as tools:
        assert (await validated_call(tools["local__echo"], {"text": "hi"}, context)).content == "hi"
    with pytest.raises(NotFound, match="no MCP server named 'gone'"):
        registry.connect(["local", "gone"])
