"""Nodes join a control plane with a join token, report by heartbeat, and come back by themselves.

Everything runs as real processes: a control plane (``blackroad up``) and
nodes (``blackroad node``), each with its own home, on loopback. Waits are
polls with generous deadlines, never fixed sleeps.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from blackroad.errors import Unauthorized
from blackroad.fleet.heartbeat import capabilities
from blackroad.fleet.membership import Membership
from blackroad.identity.directory import Directory
from blackroad.store.database import Database
from tests.conftest import GEMMA3, SMOLLM2
from tests.support.fleet import Node, embedded_node
from tests.support.server import BLACKROAD, blackroad, free_port, server_env

BOTH = {SMOLLM2, GEMMA3}
DEADLINE = 90.0  # seconds: generous, for a loaded 2-core machine
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, deadline: float = DEADLINE) -> T:
    """``probe()``'s first truthy answer, polled until ``deadline`` seconds have passed."""
    end = time.monotonic() + deadline
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline}s: {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The control plane, on a fixed port so that it can be restarted where nodes expect it."""
    control = embedded_node(tmp_path_factory.mktemp("plane")).start()
    try:
        yield control
    finally:
        control.stop()


def plane_home(plane: Node) -> Path:
    return plane.log.parent


def fleet(plane: Node) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{plane.url}/api/fleet", timeout=30)
    assert answer.status_code == 200, answer.text
    return {node["name"]: node for node in answer.json()["nodes"]}


def new_token(plane: Node, **body: Any) -> str:
    created = httpx.post(f"{plane.url}/api/fleet/tokens", json=body, timeout=30)
    assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    return token


def node_process(plane: Node, home: Path, *args: str) -> Node:
    """``blackroad node`` on a port of its own, joining (or back in) the fleet of ``plane``."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = server_env(home, port, heartbeat_seconds="1")
    log = home / f"node-{port}.log"
    return Node([str(BLACKROAD), "node", "--join", plane.url, *args], port, log, env)


def membership(home: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((home / "node.json").read_text())
    return data


def beating_since(plane: Node, name: str, moment: datetime) -> dict[str, Any] | None:
    """The node's listing once it has reported after ``moment``."""
    node = fleet(plane).get(name)
    if node is None or node["last_seen"] is None:
        return None
    return node if datetime.fromisoformat(node["last_seen"]) > moment else None


def test_a_node_joins_reports_its_state_and_keeps_its_secrets(plane: Node, tmp_path: Path) -> None:
    created = blackroad("nodes", "token", "create", "--expires-in", "1d", home=plane_home(plane))
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("brj-")
    node = node_process(plane, tmp_path / "n1", "--token", token, "--name", "n1").start()
    try:

        def reported() -> dict[str, Any] | None:
            listed = fleet(plane).get("n1")
            if not listed or not listed["stats"] or not set(listed["models"]) >= BOTH:
                return None
            # Up once the control plane's probe reaches it (the node may join before it listens).
            return listed if listed["state"] == "up" else None

        listed = eventually(reported, "the node listed with its models and state")
        assert (listed["kind"], listed["state"], listed["url"]) == ("blackroad", "up", node.url)
        stats = listed["stats"]
        assert stats["free_memory_bytes"] > 0
        assert (stats["active"], stats["queued"]) == (0, 0)
        assert stats["capabilities"] == capabilities()
        assert stats["capabilities"]["cores"] >= 1 and stats["capabilities"]["arch"]

        # The node's server requires its own key, which the control plane holds.
        secrets = membership(node.log.parent)
        assert set(secrets) == {"control_plane", "credential", "key", "name"}
        refused = httpx.get(f"{node.url}/api/tags", timeout=30)
        assert refused.status_code == 401 and "error" in refused.json()
        served = httpx.get(
            f"{node.url}/api/tags", headers={"Authorization": f"Bearer {secrets['key']}"}
        )
        assert served.status_code == 200 and {m["name"] for m in served.json()["models"]} >= BOTH

        mode = stat.S_IMODE((node.log.parent / "node.json").stat().st_mode)
        assert mode == 0o600, oct(mode)
        listing = blackroad("fleet", home=plane_home(plane)).stdout
        assert "n1" in listing and "blackroad" in listing and "0/0" in listing
        tokens = blackroad("nodes", "token", "list", home=plane_home(plane)).stdout
        assert token[:12] in tokens and "n1" in tokens and token not in tokens
    finally:
        node.stop()
    logs = node.log.read_text() + plane.log.read_text() + json.dumps(fleet(plane))
    for secret in (token, secrets["credential"], secrets["key"]):
        assert secret not in logs


def test_a_node_comes_back_after_its_restart_and_the_control_planes(
    plane: Node, tmp_path: Path
) -> None:
    home = tmp_path / "n2"
    node = node_process(plane, home, "--token", new_token(plane), "--name", "n2").start()
    try:
        eventually(lambda: fleet(plane).get("n2", {}).get("stats"), "the node's first report")
        joined = membership(home)
        node.kill()
        killed = datetime.now(UTC)
        # Back without a token, on another port: it is found at its new address.
        node = node_process(plane, home).start()

        def moved() -> dict[str, Any] | None:
            listed = beating_since(plane, "n2", killed)
            return listed if listed and listed["url"] == node.url else None

        eventually(moved, "a report from the new address")
        # Up again once the control plane's probe reaches it there.
        eventually(lambda: fleet(plane)["n2"]["state"] == "up", "the node probed up again")
        assert membership(home) == joined  # the same credential and key, no second join

        plane.stop()
        stopped = datetime.now(UTC)
        plane.start()
        assert "n2" in fleet(plane)  # kept in the database
        eventually(lambda: beating_since(plane, "n2", stopped), "a report to the new plane")
        assert node.alive
    finally:
        node.stop()


def test_a_removed_node_is_refused_on_its_next_heartbeat(plane: Node, tmp_path: Path) -> None:
    node = node_process(plane, tmp_path / "n3", "--token", new_token(plane), "--name", "n3")
    node.start()
    try:
        eventually(lambda: fleet(plane).get("n3", {}).get("stats"), "the node's first report")
        assert httpx.delete(f"{plane.url}/api/fleet/nodes/n3").status_code == 204
        eventually(lambda: "answered 401" in node.log.read_text(), "the heartbeat refused")
        assert "n3" not in fleet(plane)
        assert node.alive  # a refused heartbeat never stops the node
    finally:
        node.stop()


def join_body(token: str | None, name: str = "joiner") -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "url": "http://127.0.0.1:9",
        "key": "its-key",
        "capabilities": capabilities(),
    }
    return body if token is None else {**body, "token": token}


def test_bad_tokens_and_bodies_are_refused(plane: Node, tmp_path: Path) -> None:
    join = f"{plane.url}/api/fleet/join"
    token = new_token(plane, expires_in=3600)
    prefix = token[:12]
    assert httpx.delete(f"{plane.url}/api/fleet/tokens/{prefix}").status_code == 204
    listed = httpx.get(f"{plane.url}/api/fleet/tokens").json()["tokens"]
    assert [t["state"] for t in listed if t["prefix"] == prefix] == ["revoked"]
    for refused, why in (
        (token, "revoked"),
        ("brj-" + "x" * 43, "Invalid join token"),
        ("br-not-a-join-token", "Invalid join token"),
    ):
        answer = httpx.post(join, json=join_body(refused))
        assert answer.status_code == 401 and why in answer.json()["error"], answer.text
    assert httpx.post(join, json=join_body(None)).status_code == 401
    refused_node = blackroad("node", "--join", plane.url, "--token", token, home=tmp_path / "r")
    assert refused_node.returncode == 1 and "revoked" in refused_node.stdout
    assert token not in refused_node.stdout + refused_node.stderr
    lost = blackroad("node", home=tmp_path / "nowhere")
    assert lost.returncode == 1 and "--token" in lost.stdout
    assert httpx.delete(f"{plane.url}/api/fleet/tokens/brj-none").status_code == 404

    good = new_token(plane)
    bad_url = {**join_body(good), "url": "ftp://files.lan"}
    assert httpx.post(join, json=bad_url).status_code == 400
    no_caps = {k: v for k, v in join_body(good).items() if k != "capabilities"}
    assert "capabilities" in httpx.post(join, json=no_caps).json()["error"]
    # A peer of another kind keeps its name.
    peer = {"name": "peer", "kind": "ollama", "url": plane.url}
    assert httpx.post(f"{plane.url}/api/fleet/nodes", json=peer).status_code == 201
    clash = httpx.post(join, json=join_body(good, name="peer"))
    assert clash.status_code == 400 and "another name" in clash.json()["error"]
    # The same token as the Bearer token joins; the node gets its own credential.
    joined = httpx.post(join, json=join_body(None), headers={"Authorization": f"Bearer {good}"})
    assert joined.status_code == 201 and joined.json()["credential"].startswith("brn-")
    for name in ("peer", "joiner"):
        assert httpx.delete(f"{plane.url}/api/fleet/nodes/{name}").status_code == 204


def test_heartbeats_need_a_node_credential(plane: Node) -> None:
    heartbeat = f"{plane.url}/api/fleet/heartbeat"
    for credential in (new_token(plane), "brn-" + "x" * 43, None):
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        # The credential is checked before the body: a stranger learns nothing of its format.
        answer = httpx.post(heartbeat, json={"models": []}, headers=headers)
        assert answer.status_code == 401 and "error" in answer.json(), answer.text


def test_tokens_expire_and_are_revoked_on_the_next_use(tmp_path: Path) -> None:
    database = Database(tmp_path / "blackroad.db")
    members = Membership(database)
    expired = members.create_token(datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(Unauthorized, match="expired"):
        members.join(expired.secret, "late", "http://127.0.0.1:9", None, capabilities())
    token = members.create_token()
    with pytest.raises(Unauthorized):  # a join token is not an API key
        Directory(database).authenticate(token.secret)
    first = members.join(token.secret, "n", "http://127.0.0.1:9", "k", capabilities())
    assert members.node_of(first.credential) == "n"
    # Joining again under the same name replaces the node's credential.
    second = members.join(token.secret, "n", "http://127.0.0.1:8", "k", capabilities())
    with pytest.raises(Unauthorized):
        members.node_of(first.credential)
    assert members.heartbeat(second.credential, [SMOLLM2], {"active": 1}, None) == "n"
    members.revoke_token(token.prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        members.join(token.secret, "m", "http://127.0.0.1:9", None, capabilities())
    assert [t.state for t in members.tokens()] == ["revoked", "expired"]


def test_a_machine_shows_its_cpu_extensions_and_accelerators(tmp_path: Path) -> None:
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    (dev / "accel").mkdir(parents=True)
    proc.mkdir()
    (proc / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f\n")
    for device in ("hailo0", "nvidia0", "nvidiactl", "accel/accel0"):
        (dev / device).touch()
    machine = capabilities(proc, dev)
    assert {(a["kind"], a["device"]) for a in machine["accelerators"]} == {
        ("hailo", str(dev / "hailo0")),
        ("nvidia", str(dev / "nvidia0")),
        ("npu", str(dev / "accel/accel0")),
    }
    if machine["arch"] in ("x86_64", "amd64"):
        assert machine["simd"] == ["avx", "avx2", "avx512f"]
