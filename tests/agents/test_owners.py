"""What one owner's agent leaves behind never reaches another: files, ids, passages, data sent out.

A real server requiring keys, the bundled smollm2:135m, users made with the
CLI. The first steps' ``tool_choice`` makes the model call the tool each
test needs; what is checked is what the server lets through.
"""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support.agents import Agents
from tests.support.server import Server, blackroad, running_server

SECRET_NOTE = "Alice keeps the spare key under the blue flowerpot."


class _Host(http.server.BaseHTTPRequestHandler):
    """An allowlisted host, keeping the path of every request it gets."""

    received: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Host.received.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class World:
    server: Server
    host: str  # the one host agents may reach, host:port
    keys: dict[str, str] = field(default_factory=dict)

    def as_user(self, name: str) -> Agents:
        return Agents(self.server.url, self.keys[name])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    allowed = f"127.0.0.1:{host.server_address[1]}"
    home = tmp_path_factory.mktemp("owners")
    try:
        with running_server(home, auth="on", agent_http_hosts=allowed) as server:
            found = World(server, allowed)
            for name, role, scopes in (
                ("root", "admin", ("--scope", "admin", "--scope", "inference")),
                ("alice", "user", ()),
                ("carol", "user", ()),
            ):
                assert blackroad("users", "add", name, "--role", role, home=home).returncode == 0
                created = blackroad("keys", "create", name, *scopes, home=home)
                assert created.returncode == 0, created.stderr
                found.keys[name] = created.stdout.strip().splitlines()[-1]
            yield found
    finally:
        host.shutdown()
        host.server_close()


def _files(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


def _approve(agents: Agents, run_id: int, step_id: int) -> None:
    path = f"/api/agents/runs/{run_id}/steps/{step_id}/decision"
    decided = agents.http.post(path, json={"approve": True})
    assert decided.status_code == 200, decided.text


def test_a_deleted_agents_files_and_ids_never_reach_the_next_owner(world: World) -> None:
    """Alice's agent writes a file; she deletes it; Carol's new agent finds nothing of hers."""
    sandboxes = world.server.home / "agents"
    with world.as_user("alice") as alice, world.as_user("carol") as carol:
        scribe = alice.create(name="scribe", tools=["write_file"], tool_choice=["write_file"],
                              max_steps=1)  # fmt: skip
        run = alice.run(scribe, "Write the word zebra into the file secret.txt.")
        waiting = alice.wait(run["id"], "awaiting_approval")["steps"][-1]
        _approve(alice, run["id"], waiting["id"])
        written = alice.wait(run["id"], "step_limit")["steps"]
        assert not written[-1]["output"]["is_error"], written[-1]
        left = _files(sandboxes)
        assert left, "the approved write_file wrote nothing"

        assert alice.http.delete(f"/api/agents/{scribe['id']}").status_code == 204
        # Deleted with the agent: no file of it is left anywhere under the sandboxes.
        assert not any(path.exists() for path in left)

        peek = carol.create(name="peek", tools=["list_files"], tool_choice=["list_files"],
                            max_steps=1)  # fmt: skip
        looked = carol.wait(carol.run(peek, "List the files you have.")["id"], "step_limit")
        # No id of Alice's agent, run or steps was handed to Carol's.
        assert peek["id"] != scribe["id"]
        assert looked["id"] != run["id"]
        assert min(s["id"] for s in looked["steps"]) > max(s["id"] for s in written)
        listing = looked["steps"][-1]["output"]
        assert Path(written[-1]["input"]["path"]).name not in listing["content"]
        if not listing["is_error"]:
            assert listing["data"]["files"] == []
        # Alice's run is gone for her, and was never Carol's.
        for agents in (alice, carol):
            assert agents.http.get(f"/api/agents/runs/{run['id']}").status_code == 404
    assert all(content not in _files(sandboxes).values() for content in left.values())


def test_an_admin_sees_the_search_but_not_passages_they_may_not_read(world: World) -> None:
    with world.as_user("alice") as alice, world.as_user("root") as root:
        base = alice.http.post("/api/kb", json={"name": "diary"}).json()["id"]
        upload = alice.http.post(
            f"/api/kb/{base}/documents", files={"files": ("note.txt", SECRET_NOTE.encode())}
        )
        assert upload.status_code == 200, upload.text
        reader = alice.create(name="reader", tools=["knowledge_search"], knowledge_bases=[base],
                              tool_choice=["knowledge_search"], max_steps=1)  # fmt: skip
        run = alice.wait(alice.run(reader, "Where is the spare key?")["id"], "step_limit")
        search = run["steps"][1]
        assert "flowerpot" in search["output"]["content"]  # the owner sees it all
        hits = len(search["output"]["data"]["hits"])

        seen = root.get(run["id"])
        streamed = [step for kind, step in root.events(run["id"]) if kind == "step"]
        for steps in (seen["steps"], streamed):
            shown = steps[1]
            assert shown["name"] == "knowledge_search" and shown["input"] == search["input"]
            assert "flowerpot" not in json.dumps(shown)
            assert shown["output"]["data"] == {"hits": [], "withheld": hits}
        assert seen["status"] == "step_limit" and seen["owner"] == "alice"

        # What decides is whether the admin may read the base, not that they are an admin.
        group = root.http.post("/api/admin/groups", json={"name": "family", "members": ["root"]})
        assert group.status_code == 201, group.text
        shared = alice.http.put(f"/api/kb/{base}/shares/family", json={"permission": "read"})
        assert shared.status_code == 200, shared.text
        assert root.get(run["id"])["steps"][1] == search


def test_http_get_waits_for_approval_before_anything_leaves(world: World) -> None:
    with world.as_user("alice") as alice:
        listed = {t["name"]: t for t in alice.http.get("/api/agents/tools").json()["tools"]}
        assert listed["http_get"]["needs_approval"] and listed["http_get"]["outbound"]
        assert not listed["http_get"]["side_effects"]
        fetcher = alice.create(name="fetcher", tools=["http_get", "memory_read"], memory="read",
                               tool_choice=["http_get"], max_steps=1)  # fmt: skip
        run = alice.run(fetcher, f"Fetch http://{world.host}/weather?city=Lisbon")
        waiting = alice.wait(run["id"], "awaiting_approval")["steps"][-1]
        assert waiting["name"] == "http_get" and waiting["status"] == "awaiting_approval"
        assert _Host.received == []  # nothing was sent before a person saw the URL
        rejected = alice.http.post(
            f"/api/agents/runs/{run['id']}/steps/{waiting['id']}/decision",
            json={"approve": False, "reason": "not that URL"},
        )
        assert rejected.status_code == 200, rejected.text
        assert alice.wait(run["id"], "step_limit")["steps"][-1]["status"] == "completed"
    assert _Host.received == []


def test_orphaned_sandboxes_are_removed_at_start_and_live_ones_kept(tmp_path: Path) -> None:
    """A sandbox whose removal failed (or a crash left) is named by no agent: the next start
    removes it; a live agent's stays."""
    with running_server(tmp_path) as server, Agents(server.url) as agents:
        agent = agents.create(name="keeper", tools=["list_files"])
    with sqlite3.connect(tmp_path / "blackroad.db") as db:
        (sandbox,) = db.execute(
            "SELECT sandbox FROM agents WHERE id = ?", (agent["id"],)
        ).fetchone()
    root = tmp_path / "agents"
    for name in (sandbox, "7", "0" * 32):
        (root / name).mkdir(parents=True)
        (root / name / "note.txt").write_text(name)
    (root / "stray.txt").write_text("left over")
    with running_server(tmp_path):
        assert sorted(path.name for path in root.iterdir()) == [sandbox]
    assert (root / sandbox / "note.txt").read_text() == sandbox
