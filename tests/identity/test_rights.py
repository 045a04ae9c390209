"""Rights never outlive the role: demoting, disabling or a new password count from the next request.

A real server requiring keys. Each person holds the three kinds of credential
there are: an API key, a session key from ``/api/login`` (Bearer) and a
desktop session (the cookie, from ``/api/session``). What a key may do is
its scopes intersected with its user's role now; a change of role, disabling
and a new password end the sessions, while API keys go on within the role.
Demotion is checked against every admin route the app has (the isolation
matrix's list, which fails when a route is added without an entry).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie

import httpx
import pytest

from blackroad.api.auth import CSRF_COOKIE, SESSION_COOKIE
from tests.api.test_isolation import PROBES
from tests.conftest import SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server

ADMIN_ROUTES = sorted((route, probe) for route, probe in PROBES.items() if probe.kind == "admin")


@dataclass(frozen=True)
class Credentials:
    """One person's API key, Bearer session key and desktop session cookie."""

    key: str
    session: str
    cookie: str  # the Cookie header a browser sends

    def clients(self, server: Server) -> dict[str, httpx.Client]:
        bearer = {"key": self.key, "session": self.session}
        found = {
            name: httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            )
            for name, key in bearer.items()
        }
        found["cookie"] = httpx.Client(
            base_url=server.url, headers={"Cookie": self.cookie}, timeout=120
        )
        return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("rights")
    # Every ended session's refusal counts against 127.0.0.1: no lockout in these tests.
    lockout = {"lockout_slow_after": "1000", "lockout_attempts": "1000"}
    with running_server(home, auth="on", **lockout) as started:
        yield started


@pytest.fixture(scope="module")
def root(server: Server) -> Iterator[httpx.Client]:
    assert blackroad("users", "add", "root", "--role", "admin", home=server.home).returncode == 0
    created = blackroad(
        "keys", "create", "root", "--scope", "admin", "--scope", "inference", home=server.home
    )
    key = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        yield client


def _log_in(server: Server, name: str, password: str) -> tuple[str, str]:
    """A Bearer session key, and a desktop session's Cookie header, for name and password."""
    body = {"name": name, "password": password}
    login = httpx.post(f"{server.url}/api/login", json=body, timeout=120)
    assert login.status_code == 201, login.text
    desktop = httpx.post(f"{server.url}/api/session", json=body, timeout=120)
    assert desktop.status_code == 201, desktop.text
    # Secure cookies: httpx keeps them to https, a browser sends them to 127.0.0.1.
    cookies: SimpleCookie = SimpleCookie()
    for header in desktop.headers.get_list("set-cookie"):
        cookies.load(header)
    sent = "; ".join(f"{name}={cookies[name].value}" for name in (SESSION_COOKIE, CSRF_COOKIE))
    return login.json()["key"], sent


def _person(server: Server, root: httpx.Client, name: str, role: str) -> Credentials:
    password = f"{name} has a long password"
    made = root.post("/api/admin/users", json={"name": name, "role": role, "password": password})
    assert made.status_code == 201, made.text
    scopes = ["admin", "inference"] if role == "admin" else ["inference"]
    key = root.post("/api/admin/keys", json={"user": name, "scopes": scopes})
    assert key.status_code == 201, key.text
    return Credentials(key.json()["key"], *_log_in(server, name, password))


def _admin_request(client: httpx.Client, route: tuple[str, str]) -> httpx.Response:
    method, template = route
    probe = PROBES[route]
    path = (probe.path or template).format(alice_prefix="br-nobody0000")
    return client.request(method, path, json=probe.body, params=probe.extra, files=probe.files)


def test_a_demoted_admin_loses_every_admin_route_and_their_sessions(
    server: Server, root: httpx.Client
) -> None:
    dana = _person(server, root, "dana", "admin")
    clients = dana.clients(server)
    for client in clients.values():
        assert client.get("/api/admin/users").status_code == 200
    users = {u["name"] for u in root.get("/api/admin/users").json()["users"]}

    demoted = root.patch("/api/admin/users/dana", json={"role": "user"})
    assert demoted.status_code == 200, demoted.text

    # The key goes on as a user's (403 on admin routes); sessions opened as an admin end (401).
    for name, refused in (("key", 403), ("session", 401), ("cookie", 401)):
        for route, _ in ADMIN_ROUTES:
            answer = _admin_request(clients[name], route)
            assert answer.status_code == refused, f"{name} {route}: {answer.text}"
    key = clients["key"]
    me = key.get("/api/me").json()
    assert (me["role"], me["scopes"]) == ("user", ["inference"])
    assert key.get("/v1/models").status_code == 200
    for name in ("session", "cookie"):
        assert clients[name].get("/api/me").status_code == 401, name
    # Made an admin again, the key has what it was made with; the sessions stay ended.
    assert root.patch("/api/admin/users/dana", json={"role": "admin"}).status_code == 200
    assert key.get("/api/admin/users").status_code == 200
    assert clients["session"].get("/api/me").status_code == 401
    # Nobody was made, changed or removed by the demoted key's attempts.
    assert {u["name"] for u in root.get("/api/admin/users").json()["users"]} == users


def test_a_disabled_user_is_refused_everywhere_and_comes_back_without_sessions(
    server: Server, root: httpx.Client
) -> None:
    eve = _person(server, root, "eve", "admin")
    clients = eve.clients(server)
    assert root.patch("/api/admin/users/eve", json={"disabled": True}).status_code == 200
    for name, client in clients.items():
        for route, _ in ADMIN_ROUTES:
            answer = _admin_request(client, route)
            assert answer.status_code == 401, f"{name} {route}: {answer.text}"
        assert client.get("/api/me").status_code == 401, name
    assert root.patch("/api/admin/users/eve", json={"disabled": False}).status_code == 200
    assert clients["key"].get("/api/admin/users").status_code == 200
    for name in ("session", "cookie"):
        assert clients[name].get("/api/me").status_code == 401, name


def test_a_new_password_ends_sessions_but_not_the_api_keys_one_made(
    server: Server, root: httpx.Client
) -> None:
    finn = _person(server, root, "finn", "user")
    clients = finn.clients(server)
    own = clients["session"].post("/api/keys", json={"name": "script"})
    assert own.status_code == 201, own.text
    script = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {own.json()['key']}"}, timeout=120
    )
    changed = root.patch("/api/admin/users/finn", json={"password": "a new long password"})
    assert changed.status_code == 200, changed.text
    for name in ("session", "cookie"):
        assert clients[name].get("/api/me").status_code == 401, name
    for client in (script, clients["key"]):
        me = client.get("/api/me")
        assert me.status_code == 200 and me.json()["scopes"] == ["inference"], me.text
        chat = {"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        assert client.get("/api/admin/users").status_code == 403
    states = {k["name"]: k["state"] for k in root.get("/api/admin/keys?user=finn").json()["keys"]}
    assert states == {"default": "active", "script": "active", "session": "revoked"}
    old = {"name": "finn", "password": "finn has a long password"}
    assert httpx.post(f"{server.url}/api/login", json=old, timeout=HTTP_TIMEOUT).status_code == 401
    new = {"name": "finn", "password": "a new long password"}
    assert httpx.post(f"{server.url}/api/login", json=new, timeout=HTTP_TIMEOUT).status_code == 201


def test_the_cli_demotes_and_sets_passwords_to_the_same_effect(
    server: Server, root: httpx.Client
) -> None:
    gus = _person(server, root, "gus", "admin")
    clients = gus.clients(server)
    demoted = blackroad("users", "role", "gus", "user", home=server.home)
    assert demoted.returncode == 0, demoted.stdout + demoted.stderr
    assert clients["key"].get("/api/admin/users").status_code == 403
    assert clients["session"].get("/api/me").status_code == 401
    session, _ = _log_in(server, "gus", "gus has a long password")
    reset = blackroad("users", "password", "gus", home=server.home, stdin="a new long password\n")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    me = httpx.get(
        f"{server.url}/api/me", headers={"Authorization": f"Bearer {session}"}, timeout=HTTP_TIMEOUT
    )
    assert me.status_code == 401
    assert clients["key"].get("/api/me").status_code == 200
    short = blackroad("users", "password", "gus", home=server.home, stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stdout
    assert blackroad("users", "role", "gus", "owner", home=server.home).returncode == 1
