"""Nodes join a control plane with a join token, report by heartbeat, and come back by themselves.

Everything runs as real processes: a control plane (``blackroad up``) and
nodes (``blackroad node``), each with its own home, on loopback. Waits are
polls with generous deadlines, never fixed sleeps.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from sqlalchemy import select

from blackroad.errors import BlackRoadError, InvalidRequest, Unauthorized
from blackroad.fleet.heartbeat import NodeFile, capabilities
from blackroad.fleet.membership import Membership
from blackroad.identity.directory import Directory
from blackroad.store.database import Database
from blackroad.store.schema import JoinToken
from tests.conftest import GEMMA3, SMOLLM2
from tests.support.fleet import Node, Replica, embedded_node, node_key
from tests.support.server import BLACKROAD, blackroad, free_port, server_env

BOTH = {SMOLLM2, GEMMA3}
DEADLINE = 90.0  # seconds: generous, for a loaded 2-core machine
TIMEOUT = 60.0  # seconds, for one request to a loaded 2-core machine
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
    answer = httpx.get(f"{plane.url}/api/fleet", timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return {node["name"]: node for node in answer.json()["nodes"]}


def new_token(plane: Node, **body: Any) -> str:
    created = httpx.post(f"{plane.url}/api/fleet/tokens", json=body, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    return token


def node_process(plane: Node, home: Path, *args: str, join: str | None = None) -> Node:
    """``blackroad node`` on a port of its own, joining (or back in) the fleet of ``plane``.

    ``join``: what ``--join`` says instead of the plane's URL (several URLs).
    """
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = server_env(home, port, heartbeat_seconds="1")
    log = home / f"node-{port}.log"
    command = [str(BLACKROAD), "node", "--join", join or plane.url, *args]
    return Node(command, port, log, env)


def membership(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "node.json").read_text())
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
        assert set(secrets) == {"control_planes", "credential", "key", "name"}
        assert secrets["control_planes"] == [plane.url]
        refused = httpx.get(f"{node.url}/api/tags", timeout=TIMEOUT)
        assert refused.status_code == 401 and "error" in refused.json()
        served = httpx.get(
            f"{node.url}/api/tags",
            headers={"Authorization": f"Bearer {secrets['key']}"},
            timeout=TIMEOUT,
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
        assert httpx.delete(f"{plane.url}/api/fleet/nodes/n3", timeout=TIMEOUT).status_code == 204
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
    assert (
        httpx.delete(f"{plane.url}/api/fleet/tokens/{prefix}", timeout=TIMEOUT).status_code == 204
    )
    listed = httpx.get(f"{plane.url}/api/fleet/tokens", timeout=TIMEOUT).json()["tokens"]
    assert [t["state"] for t in listed if t["prefix"] == prefix] == ["revoked"]
    for refused, why in (
        (token, "revoked"),
        ("brj-" + "x" * 43, "Invalid join token"),
        ("br-not-a-join-token", "Invalid join token"),
    ):
        answer = httpx.post(join, json=join_body(refused), timeout=TIMEOUT)
        assert answer.status_code == 401 and why in answer.json()["error"], answer.text
    assert httpx.post(join, json=join_body(None), timeout=TIMEOUT).status_code == 401
    refused_node = blackroad("node", "--join", plane.url, "--token", token, home=tmp_path / "r")
    assert refused_node.returncode == 1 and "revoked" in refused_node.stdout
    assert token not in refused_node.stdout + refused_node.stderr
    lost = blackroad("node", home=tmp_path / "nowhere")
    assert lost.returncode == 1 and "--token" in lost.stdout
    assert (
        httpx.delete(f"{plane.url}/api/fleet/tokens/brj-none", timeout=TIMEOUT).status_code == 404
    )

    good = new_token(plane)
    bad_url = {**join_body(good), "url": "ftp://files.lan"}
    assert httpx.post(join, json=bad_url, timeout=TIMEOUT).status_code == 400
    no_caps = {k: v for k, v in join_body(good).items() if k != "capabilities"}
    assert "capabilities" in httpx.post(join, json=no_caps, timeout=TIMEOUT).json()["error"]
    # A peer of another kind keeps its name.
    peer = {"name": "peer", "kind": "ollama", "url": plane.url}
    assert httpx.post(f"{plane.url}/api/fleet/nodes", json=peer, timeout=TIMEOUT).status_code == 201
    clash = httpx.post(join, json=join_body(good, name="peer"), timeout=TIMEOUT)
    assert clash.status_code == 400 and "another name" in clash.json()["error"]
    # The same token as the Bearer token joins; the node gets its own credential.
    joined = httpx.post(
        join, json=join_body(None), headers={"Authorization": f"Bearer {good}"}, timeout=TIMEOUT
    )
    assert joined.status_code == 201 and joined.json()["credential"].startswith("brn-")
    for name in ("peer", "joiner"):
        removed = httpx.delete(f"{plane.url}/api/fleet/nodes/{name}", timeout=TIMEOUT)
        assert removed.status_code == 204


def test_heartbeats_need_a_node_credential(plane: Node) -> None:
    heartbeat = f"{plane.url}/api/fleet/heartbeat"
    for credential in (new_token(plane), "brn-" + "x" * 43, None):
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        # The credential is checked before the body: a stranger learns nothing of its format.
        answer = httpx.post(heartbeat, json={"models": []}, headers=headers, timeout=TIMEOUT)
        assert answer.status_code == 401 and "error" in answer.json(), answer.text


def test_tokens_expire_and_are_revoked_on_the_next_use(database_location: Path | str) -> None:
    database = Database(database_location)
    members = Membership(database)
    with pytest.raises(InvalidRequest, match="expires within"):
        members.create_token(datetime.now(UTC) - timedelta(seconds=1))
    expired = members.create_token()
    age(database, expired.secret)
    with pytest.raises(Unauthorized, match="expired"):
        members.join("late", "http://127.0.0.1:9", None, capabilities(), token=expired.secret)
    token = members.create_token(uses=2)
    with pytest.raises(Unauthorized):  # a join token is not an API key
        Directory(database).authenticate(token.secret)
    first = members.join("n", "http://127.0.0.1:9", "k", capabilities(), token=token.secret)
    assert members.node_of(first.credential) == "n"
    # Joining again under the same name takes the node's own credential, and no token's use.
    second = members.join(
        "n", "http://127.0.0.1:8", "k", capabilities(), credential=first.credential
    )
    assert second.how == "rejoined"
    with pytest.raises(Unauthorized):
        members.node_of(first.credential)
    assert members.heartbeat(second.credential, [SMOLLM2], {"active": 1}, None) == "n"
    members.revoke_token(token.prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        members.join("m", "http://127.0.0.1:9", None, capabilities(), token=token.secret)
    listed = members.tokens()
    assert [(t.state, t.uses, t.max_uses) for t in listed] == [("revoked", 1, 2), ("expired", 0, 1)]


def age(database: Database, token: str) -> None:
    """Make a join token's expiry a moment ago, as time would."""
    with database.session() as session, session.begin():
        row = session.scalar(select(JoinToken).where(JoinToken.prefix == token[:12]))
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)


# -- who may join under which name, and move where ------------------------------------


def join_as(
    plane: Node, name: str, token: str | None = None, url: str = "http://127.0.0.1:9", **more: Any
) -> httpx.Response:
    """``POST /api/fleet/join`` for a node ``name`` (``more``: credential, replace, headers)."""
    headers = more.pop("headers", {})
    body = {**join_body(token, name), "url": url, "key": f"key-of-{name}", **more}
    return httpx.post(f"{plane.url}/api/fleet/join", json=body, headers=headers, timeout=TIMEOUT)


def beat(plane: Node, credential: str, url: str) -> httpx.Response:
    body = {"url": url, "models": [], "stats": {"loaded": [], "active": 0, "queued": 0,
            "free_memory_bytes": None, "decode_tokens_per_second": {},
            "capabilities": capabilities(), "heartbeat_seconds": 1.0, "num_ctx": 512,
            "num_seq": 1}}  # fmt: skip
    headers = {"Authorization": f"Bearer {credential}"}
    return httpx.post(
        f"{plane.url}/api/fleet/heartbeat", json=body, headers=headers, timeout=TIMEOUT
    )


def audited(plane: Node, kind: str) -> list[dict[str, Any]]:
    """The audit records of ``kind``, newest first."""
    params: dict[str, Any] = {"kind": kind, "limit": 500}
    listed = httpx.get(f"{plane.url}/api/audit/records", params=params, timeout=TIMEOUT)
    assert listed.status_code == 200, listed.text
    return [entry["record"] for entry in listed.json()["records"]]


def remove(plane: Node, *names: str) -> None:
    for name in names:
        removed = httpx.delete(f"{plane.url}/api/fleet/nodes/{name}", timeout=TIMEOUT)
        assert removed.status_code == 204, removed.text


def token_row(plane: Node, token: str) -> dict[str, Any]:
    listed = httpx.get(f"{plane.url}/api/fleet/tokens", timeout=TIMEOUT).json()["tokens"]
    found: dict[str, Any] = next(t for t in listed if t["prefix"] == token[:12])
    return found


def test_a_token_admits_one_node_unless_made_for_more_and_expires(plane: Node) -> None:
    created = httpx.post(f"{plane.url}/api/fleet/tokens", json={}, timeout=TIMEOUT).json()
    lifetime = datetime.fromisoformat(created["expires_at"]) - datetime.now(UTC)
    assert created["uses"] == 1 and timedelta(minutes=55) < lifetime <= timedelta(hours=1)
    once = created["token"]
    assert join_as(plane, "once-a", once).status_code == 201
    reused = join_as(plane, "once-b", once)
    assert reused.status_code == 401 and "used" in reused.json()["error"], reused.text
    assert (token_row(plane, once)["state"], token_row(plane, once)["uses"]) == ("used", 1)

    thrice = new_token(plane, uses=3)
    assert [join_as(plane, f"thrice-{n}", thrice).status_code for n in range(4)] == [
        201, 201, 201, 401,
    ]  # fmt: skip
    assert (token_row(plane, thrice)["uses"], token_row(plane, thrice)["max_uses"]) == (3, 3)

    aged = new_token(plane)
    age(Database(plane_home(plane) / "blackroad.db"), aged)
    expired = join_as(plane, "too-late", aged)
    assert expired.status_code == 401 and "expired" in expired.json()["error"], expired.text

    for body in ({"uses": 0}, {"expires_in": 31 * 86400}, {"expires_in": None}):
        refused = httpx.post(f"{plane.url}/api/fleet/tokens", json=body, timeout=TIMEOUT)
        assert refused.status_code == 400, refused.text
    made = blackroad("nodes", "token", "create", "--uses", "2", home=plane_home(plane))
    assert made.returncode == 0 and "2 joins" in made.stdout, made.stdout + made.stderr
    listing = blackroad("nodes", "token", "list", home=plane_home(plane)).stdout
    assert made.stdout.strip().splitlines()[-1][:12] in listing and "0/2" in listing
    remove(plane, "once-a", "thrice-0", "thrice-1", "thrice-2")


def test_two_joins_racing_for_a_one_use_token_admit_exactly_one(plane: Node) -> None:
    contenders = 4
    for round_ in range(3):
        token = new_token(plane)
        start = threading.Barrier(contenders)

        def contend(name: str, token: str = token, start: threading.Barrier = start) -> int:
            start.wait()
            return join_as(plane, name, token).status_code

        with ThreadPoolExecutor(contenders) as pool:
            answers = sorted(pool.map(contend, [f"racer-{round_}-{n}" for n in range(contenders)]))
        assert answers == [201] + [401] * (contenders - 1), answers
        assert token_row(plane, token)["uses"] == 1
    remove(plane, *(name for name in fleet(plane) if name.startswith("racer-")))


def test_a_name_in_the_fleet_is_taken_only_by_its_node_or_an_admin(plane: Node) -> None:
    first = join_as(plane, "victim", new_token(plane), url="http://127.0.0.1:9")
    assert first.status_code == 201, first.text
    credential = first.json()["credential"]
    other = join_as(plane, "bystander", new_token(plane)).json()["credential"]

    # A stranger with a token of its own cannot take the name, nor spends the token.
    stranger = new_token(plane)
    hijack = join_as(plane, "victim", stranger, url="http://attacker.example:11434")
    assert hijack.status_code == 409 and "in the fleet" in hijack.json()["error"], hijack.text
    assert token_row(plane, stranger)["uses"] == 0
    foreign = join_as(plane, "victim", stranger, credential=other)  # another node's credential
    assert foreign.status_code == 403, foreign.text
    assert fleet(plane)["victim"]["url"] == "http://127.0.0.1:9"
    assert beat(plane, credential, "http://127.0.0.1:9").status_code == 200  # still its own

    # The node itself joins again with its credential (no token): a new one replaces it.
    again = join_as(plane, "victim", credential=credential, url="http://127.0.0.1:8")
    assert again.status_code == 201, again.text
    assert beat(plane, credential, "http://127.0.0.1:8").status_code == 401
    renewed = again.json()["credential"]
    assert fleet(plane)["victim"]["url"] == "http://127.0.0.1:8"

    # An admin may replace it (a machine rebuilt without its node.json); a user may not.
    made = httpx.post(
        f"{plane.url}/api/admin/users", json={"name": "fleet-user", "role": "user"}, timeout=TIMEOUT
    )
    assert made.status_code == 201, made.text
    user_key = blackroad("keys", "create", "fleet-user", home=plane_home(plane)).stdout.split()[-1]
    as_user = {"Authorization": f"Bearer {user_key}"}
    denied = join_as(plane, "victim", stranger, replace=True, headers=as_user)
    assert denied.status_code == 403, denied.text
    replaced = join_as(plane, "victim", stranger, url="http://127.0.0.1:7", replace=True)
    assert replaced.status_code == 201, replaced.text
    assert beat(plane, renewed, "http://127.0.0.1:8").status_code == 401
    assert fleet(plane)["victim"]["url"] == "http://127.0.0.1:7"

    joins = [r for r in audited(plane, "fleet.join") if r["node"] == "victim"]
    assert [(r["how"], r["url"], r["previous_url"]) for r in joins[:3]] == [
        ("replaced", "http://127.0.0.1:7", "http://127.0.0.1:8"),
        ("rejoined", "http://127.0.0.1:8", "http://127.0.0.1:9"),
        ("joined", "http://127.0.0.1:9", None),
    ]
    assert joins[0]["replaced_by"] == "local" and joins[0]["token"] == stranger[:12]
    remove(plane, "victim", "bystander")


def test_a_heartbeat_moves_only_its_own_node_and_every_move_is_audited(plane: Node) -> None:
    mover = join_as(plane, "mover", new_token(plane)).json()["credential"]
    bystander = join_as(plane, "stayer", new_token(plane)).json()["credential"]
    # Another node's credential moves that node, never this one.
    assert beat(plane, bystander, "http://127.0.0.1:6").status_code == 200
    assert fleet(plane)["mover"]["url"] == "http://127.0.0.1:9"
    stale = beat(plane, "brn-" + "x" * 43, "http://attacker.example:11434")
    assert stale.status_code == 401
    assert beat(plane, mover, "http://127.0.0.1:5").status_code == 200
    assert beat(plane, mover, "http://127.0.0.1:5").status_code == 200  # not a move
    assert fleet(plane)["mover"]["url"] == "http://127.0.0.1:5"
    moves = [(r["node"], r["from"], r["to"]) for r in audited(plane, "fleet.move")]
    assert moves[:2] == [
        ("mover", "http://127.0.0.1:9", "http://127.0.0.1:5"),
        ("stayer", "http://127.0.0.1:9", "http://127.0.0.1:6"),
    ]
    assert all(to != "http://attacker.example:11434" for _, _, to in moves)
    remove(plane, "mover", "stayer")


class Hostile(BaseHTTPRequestHandler):
    """Whatever a node's URL might point at: it answers every request with junk."""

    REPLY = (
        "\x1b[2J\x1b]8;;http://evil.example\x07click\x1b]8;;\x07\r\nforged: line\n"
        + "A" * 400
        + "SECRET-AT-THE-END"
    ).encode()

    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", str(len(self.REPLY)))
        self.end_headers()
        self.wfile.write(self.REPLY)

    def log_message(self, *args: object) -> None:
        pass


def test_what_a_node_answers_is_kept_bounded_and_printable(plane: Node) -> None:
    hostile = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hostile.server_address[1]}"
        assert join_as(plane, "junk", new_token(plane), url=url).status_code == 201

        def failed() -> str | None:
            listed = fleet(plane)["junk"]
            return listed["last_error"] if listed["state"] == "down" else None

        error = eventually(failed, "the node probed down")
        assert "answered 500" in error and len(error) <= 200 and error.isprintable(), error
        assert "SECRET-AT-THE-END" not in error and "\x1b" not in error
        listing = blackroad("fleet", home=plane_home(plane)).stdout
        assert "\x1b" not in listing and "forged: line" not in listing.splitlines()
    finally:
        hostile.shutdown()
        remove(plane, "junk")


def test_a_restarted_node_joins_again_under_its_own_credential(plane: Node, tmp_path: Path) -> None:
    home, token = tmp_path / "n5", new_token(plane)
    node = node_process(plane, home, "--token", token, "--name", "n5").start()
    try:
        eventually(lambda: fleet(plane).get("n5", {}).get("stats"), "the node's first report")
        joined = membership(home)
        node.stop()
        # Started again as its unit file starts it, the same (spent) token on its command line.
        node = node_process(plane, home, "--token", token, "--name", "n5").start()
        again = membership(home)
        assert again["credential"] != joined["credential"] and again["key"] != joined["key"]
        eventually(lambda: fleet(plane)["n5"]["url"] == node.url, "the node at its new address")
        last = next(r for r in audited(plane, "fleet.join") if r["node"] == "n5")
        assert (last["how"], last["token"]) == ("rejoined", None)
        # Another machine with a token of its own cannot take the name.
        thief = blackroad(
            "node", "--join", plane.url, "--token", new_token(plane), "--name", "n5",
            home=tmp_path / "thief",
        )  # fmt: skip
        assert thief.returncode == 1 and "409" in thief.stdout, thief.stdout + thief.stderr
        assert fleet(plane)["n5"]["url"] == node.url
    finally:
        node.stop()
    remove(plane, "n5")


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


# -- several control planes --------------------------------------------------------


def chat_on(node: Node) -> str | None:
    """A chat answered by ``node`` itself, with the key its server requires."""
    client = openai.OpenAI(
        base_url=f"{node.url}/v1", api_key=node_key(node), max_retries=0, timeout=TIMEOUT
    )
    reply = client.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": "Say hi."}], max_tokens=3
    )
    return reply.choices[0].message.content


def test_a_node_heartbeats_to_whichever_replica_answers_and_serves_meanwhile(
    plane: Node, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    replica = Replica(plane)
    try:
        planes = [nowhere, replica.url, plane.url]
        home = tmp_path / "n6"
        node = node_process(
            plane, home, "--token", new_token(plane), "--name", "n6", join=",".join(planes)
        ).start()
        try:
            # The join went to the first replica that answered, and the node keeps every URL.
            assert replica.forwarded.get("/api/fleet/join") == 1
            assert membership(home)["control_planes"] == planes
            # Its heartbeats pass the unreachable URL by and go through the replica.
            eventually(
                lambda: replica.forwarded.get("/api/fleet/heartbeat", 0) >= 2,
                "heartbeats through the replica",
            )
            assert chat_on(node)

            # The replica fails (5xx): the beats go on to the next URL, the node serves on.
            failed = replica.fail()
            listed = eventually(lambda: beating_since(plane, "n6", failed), "a beat past it")
            assert listed["url"] == node.url and listed["stats"]
            assert chat_on(node)
            assert node.alive
            # The node logs the move once the plane's answer is back: after the plane kept the beat.
            eventually(lambda: f"in the fleet of {plane.url}" in node.log.read_text(), "the log")
            assert f"in the fleet of {replica.url}" in node.log.read_text()
        finally:
            node.stop()
    finally:
        replica.close()
    remove(plane, "n6")

    # A join that no replica answers says why for each of them.
    lost = blackroad(
        "node", "--join", f"{nowhere},{replica.url}", "--token", new_token(plane),
        home=tmp_path / "lost",
    )  # fmt: skip
    assert lost.returncode == 1, lost.stdout + lost.stderr
    output = " ".join(lost.stdout.split())  # rich wraps long lines
    assert nowhere in output and replica.url in output and "unreachable" in output


def test_a_membership_file_of_one_control_plane_still_loads(tmp_path: Path) -> None:
    """``node.json`` as written before replicas: one URL under ``control_plane``."""
    path = tmp_path / "node.json"
    old = {"control_plane": "http://control:11434", "credential": "brn-c", "key": "k", "name": "n"}
    path.write_text(json.dumps(old))
    loaded = NodeFile.load(path)
    assert loaded is not None and loaded.control_planes == ("http://control:11434",)
    assert (loaded.credential, loaded.key, loaded.name) == ("brn-c", "k", "n")
    loaded.save(path)
    assert json.loads(path.read_text())["control_planes"] == ["http://control:11434"]
    path.write_text(json.dumps({**old, "control_plane": None, "control_planes": "http://x"}))
    with pytest.raises(BlackRoadError, match="not a node's membership file"):
        NodeFile.load(path)
