"""Peers join the fleet by URL; their models are discovered, kept current and kept across restarts.

The peers are real servers: BlackRoad's own, which speaks both the Ollama
and the OpenAI protocol.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from blackroad.errors import InvalidRequest, NotFound
from blackroad.fleet.nodes import Nodes, check_url
from blackroad.store.database import Database
from tests.conftest import GEMMA3, SMOLLM2
from tests.support.server import Server, blackroad, free_port, running_server

pytestmark = pytest.mark.anyio
BOTH = {SMOLLM2, GEMMA3}


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_peer_is_added_with_its_models_and_kept(
    kind: str, server: Server, database_location: Path | str
) -> None:
    nodes = Nodes(Database(database_location))
    added = await nodes.add("peer", kind, server.url + "/", "its-key")
    assert added.state == "up" and set(added.models) >= BOTH and added.url == server.url
    again = Nodes(Database(database_location)).nodes()  # as after a restart
    assert [(n.name, n.kind, set(n.models) >= BOTH) for n in again] == [("peer", kind, True)]
    assert "its-key" not in repr(again)


async def test_what_cannot_be_a_peer_is_refused(
    server: Server, database_location: Path | str
) -> None:
    nodes = Nodes(Database(database_location))
    with pytest.raises(InvalidRequest, match="unreachable"):
        await nodes.add("nobody", "ollama", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InvalidRequest, match="kind"):
        await nodes.add("odd", "vllm-ish", server.url)
    await nodes.add("peer", "openai", server.url)
    with pytest.raises(InvalidRequest, match="exists"):
        await nodes.add("peer", "ollama", server.url)
    with pytest.raises(NotFound):
        nodes.remove("nobody")
    assert [n.name for n in nodes.nodes()] == ["peer"]


@pytest.mark.parametrize(
    "url", ["ftp://host", "http://", "http://user:pw@host", "http://host/?k=1", "host:11434"]
)
def test_a_node_url_is_plain_http_or_https(url: str) -> None:
    with pytest.raises(InvalidRequest):
        check_url(url)


async def test_refresh_marks_a_silent_peer_down_and_keeps_the_others(
    server: Server, tmp_path: Path, database_location: Path | str
) -> None:
    nodes = Nodes(Database(database_location))
    await nodes.add("steady", "ollama", server.url)
    with running_server(tmp_path / "short-lived") as doomed:
        await nodes.add("doomed", "openai", doomed.url)
    refreshed = {n.name: n for n in await nodes.refresh()}
    assert refreshed["steady"].state == "up" and refreshed["steady"].last_error is None
    assert refreshed["doomed"].state == "down"
    assert "unreachable" in (refreshed["doomed"].last_error or "")
    assert set(refreshed["doomed"].models) >= BOTH  # as last seen


def test_the_api_lists_this_node_first_then_its_peers(server: Server, http: httpx.Client) -> None:
    added = http.post(
        "/api/fleet/nodes",
        json={"name": "myself", "kind": "ollama", "url": server.url, "key": "secret-of-peer"},
    )
    assert added.status_code == 201, added.text
    assert "secret-of-peer" not in added.text
    fleet = http.get("/api/fleet").json()["nodes"]
    assert fleet[0]["kind"] == "embedded" and set(fleet[0]["models"]) >= BOTH
    assert [(n["name"], n["state"]) for n in fleet[1:]] == [("myself", "up")]
    assert "secret-of-peer" not in http.get("/api/fleet").text
    bad = http.post(
        "/api/fleet/nodes", json={"name": "x", "kind": "ollama", "url": "ftp://files.lan"}
    )
    assert bad.status_code == 400 and "http" in bad.json()["error"]
    assert http.delete("/api/fleet/nodes/myself").status_code == 204
    assert http.delete("/api/fleet/nodes/myself").status_code == 404
    assert len(http.get("/api/fleet").json()["nodes"]) == 1


def test_the_cli_adds_lists_drains_and_removes_peers(server: Server, tmp_path: Path) -> None:
    def run(*args: str) -> str:
        result = blackroad(*args, home=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "added ollama node 'lab'" in run(
        "nodes", "add", server.url, "--kind", "ollama", "--name", "lab"
    )
    assert "lab" in run("nodes", "list") and SMOLLM2 in run("fleet", "--refresh")
    assert "node 'lab' is draining" in run("nodes", "drain", "lab")
    assert "up (draining)" in run("nodes", "list")
    assert "takes work again" in run("nodes", "drain", "lab", "--undo")
    assert "draining" not in run("nodes", "list")
    run("nodes", "rm", "lab")
    assert "lab" not in run("fleet")
    refused = blackroad(
        "nodes", "add", f"http://127.0.0.1:{free_port()}", "--kind", "openai", home=tmp_path
    )
    assert refused.returncode == 1 and "unreachable" in refused.stdout
