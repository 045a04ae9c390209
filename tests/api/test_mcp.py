"""``/api/mcp``: admins register MCP servers and list their tools; nobody else may."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mcp_tool_server import SCRIPT, TOKEN, http_server
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server

SECRET = "env-s3cret"


@dataclass(frozen=True)
class Keys:
    server: Server
    admin: str
    user: str

    def as_admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers=_auth(self.admin), timeout=120)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    home = tmp_path_factory.mktemp("mcp-api")
    with running_server(home, auth="on") as server:

        def key(user: str, *options: str) -> str:
            created = blackroad("keys", "create", user, *options, home=home)
            assert created.returncode == 0, created.stderr
            return created.stdout.strip().splitlines()[-1]

        for user, role in (("root", "admin"), ("ursula", "user")):
            assert blackroad("users", "add", user, "--role", role, home=home).returncode == 0
        yield Keys(server, key("root", "--scope", "admin", "--scope", "inference"), key("ursula"))


def stdio_body(name: str, tmp_path: Path) -> dict[str, Any]:
    env = {"NOTES_FILE": str(tmp_path / "notes.txt"), "API_TOKEN": SECRET}
    return {
        "name": name,
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(SCRIPT)],
        "env": env,
    }


def test_an_admin_adds_lists_inspects_and_removes_a_server(keys: Keys, tmp_path: Path) -> None:
    with keys.as_admin() as api:
        added = api.post("/api/mcp/servers", json=stdio_body("local", tmp_path))
        assert added.status_code == 201, added.text
        assert added.json()["env"] == ["API_TOKEN", "NOTES_FILE"]
        listed = api.get("/api/mcp/servers")
        assert listed.status_code == 200
        assert [s["name"] for s in listed.json()["servers"]] == ["local"]
        again = api.post("/api/mcp/servers", json=stdio_body("local", tmp_path))
        assert again.status_code == 400
        assert again.json() == {"error": "MCP server 'local' already exists"}

        assert added.json()["trusted"] is False  # until an admin says so
        tools = api.get("/api/mcp/servers/local/tools")
        assert tools.status_code == 200, tools.text
        found = {tool["name"]: tool for tool in tools.json()["tools"]}
        assert found["local__add"]["side_effects"] is True  # its read-only claim, not believed
        assert found["local__add"]["parameters"]["required"] == ["a", "b"]
        trusted = api.patch("/api/mcp/servers/local", json={"trusted": True})
        assert trusted.status_code == 200 and trusted.json()["trusted"] is True, trusted.text
        tools = api.get("/api/mcp/servers/local/tools")
        found = {tool["name"]: tool for tool in tools.json()["tools"]}
        assert found["local__add"]["side_effects"] is False
        assert found["local__write_note"]["side_effects"] is True
        assert api.patch("/api/mcp/servers/local", json={"trusted": "maybe"}).status_code == 400
        assert api.patch("/api/mcp/servers/local", json={}).status_code == 400

        for answer in (added, listed, tools):
            assert SECRET not in answer.text and str(tmp_path) not in answer.text
        assert api.delete("/api/mcp/servers/local").status_code == 204
        assert api.get("/api/mcp/servers").json() == {"servers": []}
        assert api.delete("/api/mcp/servers/local").status_code == 404
        assert api.get("/api/mcp/servers/local/tools").status_code == 404


def test_an_http_server_is_listed_with_header_names_only(keys: Keys, tmp_path: Path) -> None:
    with (
        http_server("x", tmp_path / "notes", tmp_path / "http.log") as (remote, _),
        keys.as_admin() as api,
    ):
        body = {"name": "remote", "transport": "http", "url": remote.url, "headers": dict([TOKEN])}
        added = api.post("/api/mcp/servers", json=body)
        assert added.status_code == 201, added.text
        assert added.json() == {
            "name": "remote",
            "transport": "http",
            "trusted": False,
            "url": remote.url,
            "headers": [TOKEN[0]],
        }
        tools = api.get("/api/mcp/servers/remote/tools")
        assert tools.status_code == 200, tools.text
        assert "remote__echo" in {tool["name"] for tool in tools.json()["tools"]}
        for answer in (added, tools, api.get("/api/mcp/servers")):
            assert TOKEN[1] not in answer.text
        assert api.delete("/api/mcp/servers/remote").status_code == 204


def test_a_server_that_cannot_start_is_a_503_naming_it(keys: Keys, tmp_path: Path) -> None:
    body = {"name": "ghost", "transport": "stdio", "command": str(tmp_path / "no-such-server")}
    with keys.as_admin() as api:
        assert api.post("/api/mcp/servers", json=body).status_code == 201
        tools = api.get("/api/mcp/servers/ghost/tools")
        assert api.delete("/api/mcp/servers/ghost").status_code == 204
    assert tools.status_code == 503
    assert tools.json()["error"].startswith("MCP server 'ghost' failed to start: cannot run")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "transport": "stdio", "command": "srv", "shell": True},
        {"name": "Bad Name", "transport": "stdio", "command": "srv"},
        {"name": "x", "transport": "sse", "url": "http://127.0.0.1:9/mcp"},
        {"name": "x", "transport": "stdio"},
        {"name": "x", "transport": "http", "url": "file:///etc/passwd"},
        {"name": "x", "transport": "http", "url": "http://u:p@127.0.0.1/mcp"},
        {"name": "x", "transport": "stdio", "command": "srv", "args": ["a"] * 65},
        {"name": "x", "transport": "stdio", "command": "srv", "args": "not a list"},
        {"name": "x", "transport": "stdio", "command": "c" * 5000},
        {"name": "x", "transport": "http", "url": "http://h/mcp", "headers": {"A": "1\nB: 2"}},
        {"name": "x" * 40, "transport": "stdio", "command": "srv"},
    ],
)
def test_a_malformed_body_is_a_400_in_the_api_s_format(keys: Keys, body: dict[str, Any]) -> None:
    with keys.as_admin() as api:
        refused = api.post("/api/mcp/servers", json=body)
        assert refused.status_code == 400, refused.text
        assert isinstance(refused.json()["error"], str)
        assert api.get("/api/mcp/servers").json() == {"servers": []}


ROUTES = [
    ("GET", "/api/mcp/servers", None),
    ("POST", "/api/mcp/servers", {"name": "u", "transport": "stdio", "command": "/bin/true"}),
    ("PATCH", "/api/mcp/servers/u", {"trusted": True}),
    ("DELETE", "/api/mcp/servers/u", None),
    ("GET", "/api/mcp/servers/u/tools", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_only_admins_reach_the_routes(
    keys: Keys, method: str, path: str, body: dict[str, Any] | None
) -> None:
    url = keys.server.url + path
    assert httpx.request(method, url, json=body, timeout=HTTP_TIMEOUT).status_code == 401
    as_user = httpx.request(method, url, json=body, headers=_auth(keys.user), timeout=HTTP_TIMEOUT)
    assert as_user.status_code == 403
    with keys.as_admin() as api:
        assert api.get("/api/mcp/servers").json() == {"servers": []}
