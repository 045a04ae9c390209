"""``blackroad mcp`` against a running server: add, list, tools, rm, on both transports."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.mcp_tool_server import SCRIPT, TOKEN, http_server
from tests.support.server import Server, blackroad


def run(server: Server, *args: str, code: int = 0) -> str:
    result = blackroad("mcp", *args, home=server.home, port=server.port)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout


def side_effects(tools: str) -> dict[str, str]:
    """``mcp tools``' SIDE EFFECTS column of the test server's add and write_note."""
    rows = {line.split()[0]: line.split()[1] for line in tools.splitlines()[1:] if line.strip()}
    return {name: rows[name] for name in rows if name.endswith(("__add", "__write_note"))}


def test_add_list_tools_and_remove_a_stdio_server(server: Server, tmp_path: Path) -> None:
    notes = f"NOTES_FILE={tmp_path / 'notes.txt'}"
    added = run(server, "add", "local", "--command", sys.executable, "--arg", str(SCRIPT),
                "--env", notes, "--env", "API_TOKEN=s3cret")  # fmt: skip
    assert "added MCP server 'local' (stdio)" in added
    listed = run(server, "list")
    assert "local" in listed and "API_TOKEN, NOTES_FILE" in listed and "s3cret" not in listed
    assert listed.splitlines()[1].split()[-1] == "no"  # not trusted until an admin says so
    untrusted = side_effects(run(server, "tools", "local"))
    assert untrusted == {"local__add": "yes", "local__write_note": "yes"}
    assert "trusted" in run(server, "trust", "local")
    assert run(server, "list").splitlines()[1].split()[-1] == "yes"
    tools = run(server, "tools", "local")
    assert side_effects(tools) == {"local__add": "no", "local__write_note": "yes"}
    assert "Add two numbers." in tools
    assert "no longer trusted" in run(server, "trust", "local", "--undo")
    assert side_effects(run(server, "tools", "local"))["local__add"] == "yes"
    assert "no MCP server named 'nope'" in run(server, "trust", "nope", code=1)
    assert "already exists" in run(server, "add", "local", "--command", "x", code=1)
    assert "removed MCP server 'local'" in run(server, "rm", "local")
    assert "local" not in run(server, "list")
    assert "no MCP server named 'local'" in run(server, "rm", "local", code=1)


def test_add_and_list_tools_of_an_http_server(server: Server, tmp_path: Path) -> None:
    with http_server("x", tmp_path / "notes", tmp_path / "http.log") as (remote, _):
        header = "=".join(TOKEN)
        assert "(http)" in run(server, "add", "remote", "--url", remote.url, "--header", header)
        listed = run(server, "list")
        assert remote.url in listed and TOKEN[0] in listed and TOKEN[1] not in listed
        assert "remote__echo" in run(server, "tools", "remote")
        run(server, "rm", "remote")


def test_options_that_do_not_fit_are_refused(server: Server) -> None:
    assert "either --command or --url" in run(server, "add", "x", code=1)
    both = run(server, "add", "x", "--command", "c", "--url", "http://h/mcp", code=1)
    assert "either --command or --url" in both
    assert "NAME=VALUE" in run(server, "add", "x", "--command", "c", "--env", "oops", code=1)
    assert "no MCP server named 'missing'" in run(server, "tools", "missing", code=1)
