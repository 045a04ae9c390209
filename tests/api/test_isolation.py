"""The isolation matrix: for every route the app has, user B cannot read or change user A's things.

The routes are enumerated from the application itself (every ``APIRouter``
of ``blackroad.api`` and the app's own routes), so a route added without an
entry in ``PROBES`` fails ``test_every_route_has_a_probe``, and an entry
that claims a check the route does not make fails its probe. Each probe says
what the route is:

- ``public``: answers anyone, and holds nothing of anyone's;
- ``admin``: B's own key (inference scope) is refused with 403;
- ``caller``: answers B about B only, checked by the probe's ``check``;
- ``credentials``: takes a name and password (or a node's join token or
  credential) instead of a key, and refuses B's attempt at A's with 401
  whatever key B sends.

Every non-public route also refuses a request without a key (401), and no
answer to B contains A's name or key prefix. At the end, A's account, keys
and groups are exactly as they were, and A's key still works.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from fastapi import APIRouter
from starlette.routing import Route

import blackroad.api as api_package
from blackroad.api.app import create_app
from blackroad.config import Settings
from blackroad.web.vendor import SOURCE_MODULES, installed
from tests.conftest import SMOLLM2
from tests.support.agents import Agents
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server

ALICE, BOB = "alice-7f3a", "bob-91c2"
GROUP = "team-of-alice"
BLOB = "sha256:" + "0" * 64
Check = Callable[[httpx.Response, "World"], None]


@dataclass(frozen=True)
class World:
    server: Server
    root: str  # an admin's key
    alice: str
    bob: str
    things: dict[str, int] = field(default_factory=dict)  # A's things by name, for probe paths

    @property
    def alice_prefix(self) -> str:
        return self.alice[:12]


@dataclass(frozen=True)
class Probe:
    kind: Literal["public", "admin", "caller", "credentials"]
    path: str | None = None  # the path to call, when the template has parameters
    body: dict[str, Any] | None = None
    check: Check | None = None
    extra: dict[str, str] = field(default_factory=dict)  # query parameters
    files: dict[str, tuple[str, bytes]] | None = None  # a multipart body instead of JSON


def _ok(response: httpx.Response, _: World) -> None:
    assert response.status_code == 200, response.text


def _me(response: httpx.Response, _: World) -> None:
    assert response.status_code == 200 and response.json()["user"] == BOB


def _own_keys(response: httpx.Response, world: World) -> None:
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys and {k["user"] for k in keys} == {BOB}


def _new_own_key(response: httpx.Response, _: World) -> None:
    assert response.status_code == 201 and response.json()["user"] == BOB


def _no_content(response: httpx.Response, _: World) -> None:
    assert response.status_code == 204, response.text


def _not_found(response: httpx.Response, _: World) -> None:
    assert response.status_code == 404, response.text


def _listed_without_a_s(key: str, thing: str) -> Check:
    """B's list of ``key``, which must not hold A's ``thing``."""

    def check(response: httpx.Response, world: World) -> None:
        assert response.status_code == 200, response.text
        assert world.things[thing] not in [item["id"] for item in response.json()[key]]

    return check


def _no_approvals_of_others(response: httpx.Response, _: World) -> None:
    assert response.status_code == 200, response.text
    assert {item["run"]["owner"] for item in response.json()["approvals"]} <= {BOB}


def _new_of_b(response: httpx.Response, _: World) -> None:
    assert response.status_code == 201, response.text


def _own_usage(response: httpx.Response, _: World) -> None:
    assert response.status_code == 200
    assert response.json()["user"] == BOB
    assert {row["user"] for row in response.json()["usage"]} <= {BOB}


A_CHAT, A_MEMORY = "/api/conversations/{chat}", "/api/memories/{memory}"
A_AGENT, A_RUN = "/api/agents/{agent}", "/api/agents/runs/{run}"
A_AGENT_DEFINITION = {"name": "a-agent", "model": SMOLLM2, "tools": ["calculator"],
                      "tool_choice": ["none"], "max_steps": 1, "max_tokens": 16}  # fmt: skip
A_KB, A_DOCUMENT = "/api/kb/{kb}", "/api/kb/{kb}/documents/{document}"
UPLOAD = {"files": ("b.txt", b"B was here")}
CHAT = {"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
OLLAMA = {"model": SMOLLM2, "stream": False, "options": {"num_predict": 1}}
# A vendor file of the desktop, at the version `npm ci` installed in web/.
MARKED = installed(SOURCE_MODULES).get("marked.js")
VENDOR_FILE = f"/desktop/vendor/{MARKED.version if MARKED else 'missing'}/marked.js"
CAPABILITIES = {"arch": "x86_64", "cores": 1, "simd": [], "accelerators": []}
JOIN = {
    "token": "brj-" + "0" * 43,
    "name": "b-node",
    "url": "http://127.0.0.1:9",
    "key": "b-key",
    "capabilities": CAPABILITIES,
}
HEARTBEAT = {
    "models": [SMOLLM2],
    "stats": {
        "loaded": [],
        "active": 0,
        "queued": 0,
        "free_memory_bytes": None,
        "decode_tokens_per_second": {},
        "capabilities": CAPABILITIES,
        "heartbeat_seconds": 2.0,
        "num_ctx": 4096,
        "num_seq": 4,
    },
}
PROBES: dict[tuple[str, str], Probe] = {
    ("GET", "/"): Probe("public"),
    ("HEAD", "/"): Probe("public"),
    ("GET", "/health/live"): Probe("public"),
    ("HEAD", "/health/live"): Probe("public"),
    ("GET", "/health/ready"): Probe("public"),
    ("HEAD", "/health/ready"): Probe("public"),
    ("GET", "/openapi.json"): Probe("public"),
    ("HEAD", "/openapi.json"): Probe("public"),
    # The desktop's files: code and styles, nobody's data.
    ("GET", "/desktop/manifest.json"): Probe("public"),
    ("GET", "/desktop/vendor/{version}/{name}"): Probe("public", VENDOR_FILE),
    ("HEAD", "/desktop/vendor/{version}/{name}"): Probe("public", VENDOR_FILE),
    ("GET", "/desktop/{path:path}"): Probe("public", "/desktop/shell.js"),
    ("HEAD", "/desktop/{path:path}"): Probe("public", "/desktop/shell.js"),
    # Shared by everyone who may infer: models and inference. B gets answers, never A's data.
    ("GET", "/v1/models"): Probe("caller", check=_ok),
    ("GET", "/v1/models/{model_id:path}"): Probe("caller", f"/v1/models/{SMOLLM2}", check=_ok),
    ("POST", "/v1/chat/completions"): Probe("caller", body=CHAT, check=_ok),
    ("POST", "/v1/completions"): Probe(
        "caller", body={"model": SMOLLM2, "prompt": "Hi", "max_tokens": 1}, check=_ok
    ),
    ("POST", "/v1/embeddings"): Probe("caller", body={"model": SMOLLM2, "input": "Hi"}, check=_ok),
    ("GET", "/api/version"): Probe("caller", check=_ok),
    ("GET", "/api/tags"): Probe("caller", check=_ok),
    ("GET", "/api/ps"): Probe("caller", check=_ok),
    ("POST", "/api/show"): Probe("caller", body={"model": SMOLLM2}, check=_ok),
    ("POST", "/api/generate"): Probe("caller", body={**OLLAMA, "prompt": "Hi"}, check=_ok),
    ("POST", "/api/chat"): Probe(
        "caller", body={**OLLAMA, "messages": CHAT["messages"]}, check=_ok
    ),
    ("POST", "/api/embed"): Probe("caller", body={"model": SMOLLM2, "input": "Hi"}, check=_ok),
    ("POST", "/api/embeddings"): Probe(
        "caller", body={"model": SMOLLM2, "prompt": "Hi"}, check=_ok
    ),
    ("POST", "/api/login"): Probe(
        "credentials", body={"name": ALICE, "password": "not-alices-password"}
    ),
    ("POST", "/api/session"): Probe(
        "credentials", body={"name": ALICE, "password": "not-alices-password"}
    ),
    # With a Bearer key and no session cookie there is no session to end.
    ("DELETE", "/api/session"): Probe("caller", check=_no_content),
    # The caller's own things.
    ("GET", "/api/me"): Probe("caller", check=_me),
    ("GET", "/api/keys"): Probe("caller", check=_own_keys),
    ("POST", "/api/keys"): Probe("caller", body={"name": "second"}, check=_new_own_key),
    ("DELETE", "/api/keys/{prefix}"): Probe("caller", "/api/keys/{alice_prefix}", check=_not_found),
    ("GET", "/api/usage"): Probe("caller", check=_own_usage),
    ("GET", "/api/conversations"): Probe(
        "caller", extra={"q": "Lisbon"}, check=_listed_without_a_s("conversations", "chat")
    ),
    ("POST", "/api/conversations"): Probe("caller", body={"title": "B's"}, check=_new_of_b),
    ("GET", "/api/agents"): Probe("caller", check=_listed_without_a_s("agents", "agent")),
    ("POST", "/api/agents"): Probe(
        "caller", body={**A_AGENT_DEFINITION, "name": "b-agent"}, check=_new_of_b
    ),
    ("GET", "/api/agents/tools"): Probe("caller", check=_ok),
    ("GET", "/api/agents/{agent_id}"): Probe("caller", A_AGENT, check=_not_found),
    ("PUT", "/api/agents/{agent_id}"): Probe(
        "caller", A_AGENT, body={**A_AGENT_DEFINITION, "tools": []}, check=_not_found
    ),
    ("DELETE", "/api/agents/{agent_id}"): Probe("caller", A_AGENT, check=_not_found),
    ("POST", "/api/agents/{agent_id}/runs"): Probe(
        "caller", f"{A_AGENT}/runs", body={"input": "Hi"}, check=_not_found
    ),
    ("GET", "/api/agents/runs"): Probe(
        "caller", extra={"all": "true"}, check=_listed_without_a_s("runs", "run")
    ),
    ("GET", "/api/agents/approvals"): Probe("caller", check=_no_approvals_of_others),
    ("GET", "/api/agents/runs/{run_id}"): Probe("caller", A_RUN, check=_not_found),
    ("GET", "/api/agents/runs/{run_id}/events"): Probe(
        "caller", f"{A_RUN}/events", check=_not_found
    ),
    ("POST", "/api/agents/runs/{run_id}/cancel"): Probe(
        "caller", f"{A_RUN}/cancel", check=_not_found
    ),
    ("POST", "/api/agents/runs/{run_id}/steps/{step_id}/decision"): Probe(
        "caller", f"{A_RUN}/steps/{{step}}/decision", body={"approve": True}, check=_not_found
    ),
    ("GET", "/api/conversations/{conversation_id}"): Probe("caller", A_CHAT, check=_not_found),
    ("PATCH", "/api/conversations/{conversation_id}"): Probe(
        "caller", A_CHAT, body={"title": "B's now"}, check=_not_found
    ),
    ("DELETE", "/api/conversations/{conversation_id}"): Probe("caller", A_CHAT, check=_not_found),
    ("GET", "/api/conversations/{conversation_id}/export"): Probe(
        "caller", A_CHAT + "/export", check=_not_found
    ),
    ("POST", "/api/conversations/{conversation_id}/memories"): Probe(
        "caller", A_CHAT + "/memories", check=_not_found
    ),
    ("GET", "/api/memories"): Probe("caller", check=_listed_without_a_s("memories", "memory")),
    ("POST", "/api/memories"): Probe("caller", body={"text": "B's fact"}, check=_new_of_b),
    ("POST", "/api/memories/recall"): Probe(
        "caller", body={"query": "Lisbon"}, check=_listed_without_a_s("memories", "memory")
    ),
    ("GET", "/api/memories/{memory_id}"): Probe("caller", A_MEMORY, check=_not_found),
    ("PATCH", "/api/memories/{memory_id}"): Probe(
        "caller", A_MEMORY, body={"text": "B's now"}, check=_not_found
    ),
    ("DELETE", "/api/memories/{memory_id}"): Probe("caller", A_MEMORY, check=_not_found),
    ("GET", "/api/memories/{memory_id}/history"): Probe(
        "caller", A_MEMORY + "/history", check=_not_found
    ),
    ("GET", "/api/kb"): Probe("caller", check=_listed_without_a_s("knowledge_bases", "kb")),
    ("POST", "/api/kb"): Probe("caller", body={"name": "b-base"}, check=_new_of_b),
    ("GET", "/api/kb/{ref}"): Probe("caller", A_KB, check=_not_found),
    ("DELETE", "/api/kb/{ref}"): Probe("caller", A_KB, check=_not_found),
    ("PUT", "/api/kb/{ref}/shares/{group}"): Probe(
        "caller", f"{A_KB}/shares/{GROUP}", body={"permission": "write"}, check=_not_found
    ),
    ("DELETE", "/api/kb/{ref}/shares/{group}"): Probe(
        "caller", f"{A_KB}/shares/{GROUP}", check=_not_found
    ),
    ("GET", "/api/kb/{ref}/documents"): Probe("caller", A_KB + "/documents", check=_not_found),
    ("POST", "/api/kb/{ref}/documents"): Probe(
        "caller", A_KB + "/documents", files=UPLOAD, check=_not_found
    ),
    ("GET", "/api/kb/{ref}/documents/{document_id}"): Probe("caller", A_DOCUMENT, check=_not_found),
    ("GET", "/api/kb/{ref}/documents/{document_id}/file"): Probe(
        "caller", A_DOCUMENT + "/file", check=_not_found
    ),
    ("DELETE", "/api/kb/{ref}/documents/{document_id}"): Probe(
        "caller", A_DOCUMENT, check=_not_found
    ),
    ("GET", "/api/kb/{ref}/search"): Probe(
        "caller", A_KB + "/search", extra={"q": "Lisbon"}, check=_not_found
    ),
    ("POST", "/api/kb/{ref}/search"): Probe(
        "caller", A_KB + "/search", body={"query": "Lisbon"}, check=_not_found
    ),
    # Admin only.
    ("GET", "/metrics"): Probe("admin"),
    ("GET", "/api/usage/cost"): Probe("admin"),
    ("GET", "/api/fleet"): Probe("admin"),
    ("POST", "/api/fleet/nodes"): Probe(
        "admin", body={"name": "b-node", "kind": "ollama", "url": "http://127.0.0.1:9"}
    ),
    ("DELETE", "/api/fleet/nodes/{name}"): Probe("admin", "/api/fleet/nodes/any"),
    ("POST", "/api/fleet/nodes/{name}/drain"): Probe(
        "admin", "/api/fleet/nodes/any/drain", body={"draining": True}
    ),
    ("POST", "/api/fleet/tokens"): Probe("admin", body={}),
    ("GET", "/api/fleet/tokens"): Probe("admin"),
    ("DELETE", "/api/fleet/tokens/{prefix}"): Probe("admin", "/api/fleet/tokens/brj-none"),
    ("GET", "/api/audit/checkpoint"): Probe("admin"),
    ("GET", "/api/audit/key"): Probe("admin"),
    ("GET", "/api/audit/proof"): Probe("admin", "/api/audit/proof?index=0"),
    ("GET", "/api/audit/consistency"): Probe("admin", "/api/audit/consistency?from=1"),
    ("GET", "/api/audit/records"): Probe("admin"),
    ("GET", "/api/audit/export"): Probe("admin"),
    ("POST", "/api/audit/verify"): Probe("admin"),
    ("GET", "/api/fleet/placements"): Probe("admin"),
    ("POST", "/api/fleet/placements"): Probe("admin", body={"model": "x:1", "replicas": 1}),
    ("DELETE", "/api/fleet/placements/{model:path}"): Probe("admin", "/api/fleet/placements/x:1"),
    # Nodes: a join token, or a joined node's credential, instead of a key.
    ("POST", "/api/fleet/join"): Probe("credentials", body=JOIN),
    ("POST", "/api/fleet/heartbeat"): Probe("credentials", body=HEARTBEAT),
    ("POST", "/api/create"): Probe("admin", body={"model": "x", "from": SMOLLM2}),
    ("POST", "/api/copy"): Probe("admin", body={"source": SMOLLM2, "destination": "x"}),
    ("DELETE", "/api/delete"): Probe("admin", body={"model": SMOLLM2}),
    ("HEAD", "/api/blobs/{digest}"): Probe("admin", f"/api/blobs/{BLOB}"),
    ("POST", "/api/blobs/{digest}"): Probe("admin", f"/api/blobs/{BLOB}"),
    ("POST", "/api/pull"): Probe("admin", body={"model": SMOLLM2}),
    ("POST", "/api/push"): Probe("admin", body={"model": SMOLLM2}),
    ("GET", "/api/admin/users"): Probe("admin"),
    ("POST", "/api/admin/users"): Probe("admin", body={"name": "mallory"}),
    ("GET", "/api/admin/users/{name}"): Probe("admin", f"/api/admin/users/{ALICE}"),
    ("PATCH", "/api/admin/users/{name}"): Probe(
        "admin", f"/api/admin/users/{ALICE}", body={"disabled": True}
    ),
    ("GET", "/api/admin/keys"): Probe("admin", extra={"user": ALICE}),
    ("POST", "/api/admin/keys"): Probe("admin", body={"user": ALICE, "scopes": ["inference"]}),
    ("PATCH", "/api/admin/keys/{prefix}"): Probe(
        "admin", "/api/admin/keys/{alice_prefix}", body={"limits": {"rpm": 0}}
    ),
    ("DELETE", "/api/admin/keys/{prefix}"): Probe("admin", "/api/admin/keys/{alice_prefix}"),
    ("GET", "/api/admin/groups"): Probe("admin"),
    ("POST", "/api/admin/groups"): Probe("admin", body={"name": "b-team", "members": [ALICE]}),
    ("PATCH", "/api/admin/groups/{name}"): Probe(
        "admin", f"/api/admin/groups/{GROUP}", body={"remove": [ALICE]}
    ),
    ("DELETE", "/api/admin/groups/{name}"): Probe("admin", f"/api/admin/groups/{GROUP}"),
    ("GET", "/api/mcp/servers"): Probe("admin"),
    ("POST", "/api/mcp/servers"): Probe(
        "admin", body={"name": "b-tools", "transport": "stdio", "command": "/bin/true"}
    ),
    ("PATCH", "/api/mcp/servers/{name}"): Probe(
        "admin", "/api/mcp/servers/any", body={"trusted": True}
    ),
    ("DELETE", "/api/mcp/servers/{name}"): Probe("admin", "/api/mcp/servers/any"),
    ("GET", "/api/mcp/servers/{name}/tools"): Probe("admin", "/api/mcp/servers/any/tools"),
}


def app_routes(home: Path) -> set[tuple[str, str]]:
    """(method, path template) of every route: the app's own, each API router's, the desktop's."""
    app = create_app(Settings(home=home))
    found = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    api_modules = [f"blackroad.api.{m.name}" for m in pkgutil.iter_modules(api_package.__path__)]
    for module in [*api_modules, "blackroad.web.routes"]:
        router = getattr(importlib.import_module(module), "router", None)
        if isinstance(router, APIRouter):
            found |= {
                (method, route.path)
                for route in router.routes
                if isinstance(route, Route)
                for method in route.methods or ()
            }
    return found


def test_every_route_has_a_probe(tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    assert routes - PROBES.keys() == set(), "routes without an isolation probe"
    assert PROBES.keys() - routes == set(), "probes of routes that no longer exist"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("isolation")
    # A memory is embedded when it is written: by smollm2:135m until the bundled
    # embedding model is installed.
    with running_server(home, auth="on") as server:

        def key(user: str, *options: str) -> str:
            created = blackroad("keys", "create", user, *options, home=home)
            assert created.returncode == 0, created.stderr
            return created.stdout.strip().splitlines()[-1]

        for user, role in (("root", "admin"), (ALICE, "user"), (BOB, "user")):
            assert blackroad("users", "add", user, "--role", role, home=home).returncode == 0
        assert blackroad("groups", "add", GROUP, "--member", ALICE, home=home).returncode == 0
        found = World(
            server, key("root", "--scope", "admin", "--scope", "inference"), key(ALICE), key(BOB)
        )
        # A has used the server, so she has usage to hide.
        alice = httpx.post(
            f"{server.v1}/chat/completions", json=CHAT, headers=_auth(found.alice), timeout=120
        )
        assert alice.status_code == 200
        # And kept a conversation and a memory.
        for name, path, body in (
            ("chat", "/api/conversations", {"messages": [{"role": "user", "content": "Lisbon"}]}),
            ("memory", "/api/memories", {"text": "Lives in Lisbon"}),
            ("kb", "/api/kb", {"name": "a-base"}),
            ("agent", "/api/agents", A_AGENT_DEFINITION),
        ):
            kept = httpx.post(server.url + path, json=body, headers=_auth(found.alice), timeout=120)
            assert kept.status_code == 201, kept.text
            found.things[name] = kept.json()["id"]
        # And a knowledge base with a document, shared with her own group.
        base = f"{server.url}/api/kb/{found.things['kb']}"
        document = httpx.post(
            base + "/documents",
            files={"files": ("a.txt", b"A lives in Lisbon")},
            headers=_auth(found.alice),
            timeout=120,
        )
        assert document.status_code == 200, document.text
        found.things["document"] = document.json()["documents"][0]["document"]["id"]
        shared = httpx.put(
            f"{base}/shares/{GROUP}",
            json={"permission": "read"},
            headers=_auth(found.alice),
            timeout=HTTP_TIMEOUT,
        )
        assert shared.status_code == 200, shared.text
        # And an agent that has run once.
        run = httpx.post(
            f"{server.url}/api/agents/{found.things['agent']}/runs",
            json={"input": "Hi"},
            headers=_auth(found.alice),
            timeout=HTTP_TIMEOUT,
        )
        assert run.status_code == 201, run.text
        found.things["run"] = run.json()["id"]
        found.things["step"] = Agents(server.url, found.alice).wait_for_steps(run.json()["id"], 1)[
            0
        ]["id"]
        yield found


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _call(world: World, method: str, path: str, probe: Probe, key: str | None) -> httpx.Response:
    url = (probe.path or path).format(alice_prefix=world.alice_prefix, **world.things)
    body = probe.body if probe.body is not None or method in ("GET", "HEAD") else {}
    request = httpx.Request(
        method,
        world.server.url + url,
        json=None if probe.files else body,
        files=probe.files,
        params=probe.extra,
        headers=_auth(key) if key else {},
    )
    request.read()  # a multipart body streams; the leak check reads what was sent
    with httpx.Client(timeout=120) as client:
        return client.send(request)


def _snapshot(world: World) -> tuple[Any, ...]:
    admin = _auth(world.root)
    with httpx.Client(base_url=world.server.url, timeout=HTTP_TIMEOUT) as http:
        user = http.get(f"/api/admin/users/{ALICE}", headers=admin).json()
        keys = http.get("/api/admin/keys", params={"user": ALICE}, headers=admin).json()
        groups = http.get("/api/admin/groups", headers=admin).json()
        own = _auth(world.alice)  # what only A sees: her conversations and memories
        chats = http.get("/api/conversations", headers=own).json()
        chat = http.get(f"/api/conversations/{world.things['chat']}", headers=own).json()
        memories = http.get("/api/memories", headers=own).json()
        base = f"/api/kb/{world.things['kb']}"
        bases = (
            http.get(base, headers=own).json(),
            http.get(f"{base}/documents", headers=own).json(),
        )
        agent = http.get(f"/api/agents/{world.things['agent']}", headers=own).json()
        run = http.get(f"/api/agents/runs/{world.things['run']}", headers=own).json()
    return user, keys, groups, chats, chat, memories, bases, agent, run["status"]


ORDERED = sorted(PROBES.items(), key=lambda item: item[1].kind != "caller")


@pytest.mark.parametrize(("route", "probe"), ORDERED, ids=[f"{m} {p}" for (m, p), _ in ORDERED])
def test_b_cannot_reach_what_is_a_s(
    world: World, route: tuple[str, str], probe: Probe, snapshot: tuple[Any, ...]
) -> None:
    method, path = route
    anonymous = _call(world, method, path, probe, None)
    if probe.kind == "public":
        assert anonymous.status_code == 200
    elif probe.kind != "credentials":
        assert anonymous.status_code == 401, f"{method} {path} answers without a key"
    answer = _call(world, method, path, probe, world.bob)
    if probe.kind == "admin":
        assert answer.status_code == 403, f"{method} {path} lets a user do an admin's work"
    elif probe.kind == "credentials":
        assert anonymous.status_code == answer.status_code == 401
    elif probe.check is not None:
        probe.check(answer, world)
    sent = str(answer.request.url) + answer.request.content.decode()
    for secret in (ALICE, world.alice_prefix):
        # What B sent may be echoed in an error; anything else of A's is a leak.
        assert secret in sent or secret not in answer.text, f"{method} {path} shows A's {secret}"
    assert _snapshot(world) == snapshot, f"{method} {path} changed A's things"


@pytest.fixture(scope="module")
def snapshot(world: World) -> tuple[Any, ...]:
    return _snapshot(world)


def test_usage_of_another_user_is_refused(world: World) -> None:
    answer = httpx.get(
        f"{world.server.url}/api/usage",
        params={"user": ALICE},
        headers=_auth(world.bob),
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 403
    mine = httpx.get(
        f"{world.server.url}/api/usage", headers=_auth(world.alice), timeout=HTTP_TIMEOUT
    )
    assert {row["user"] for row in mine.json()["usage"]} == {ALICE}


def test_a_s_key_still_works_after_every_probe(world: World) -> None:
    models = httpx.get(
        f"{world.server.v1}/models", headers=_auth(world.alice), timeout=HTTP_TIMEOUT
    )
    assert models.status_code == 200
