"""Admin routes under /api/admin, groups' model access, and the caller's own account routes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.conftest import GEMMA3, MINILM, SMOLLM2
from tests.support.server import (
    BLACKROAD,
    HTTP_TIMEOUT,
    Server,
    blackroad,
    running_server,
    server_env,
)

HI: list[dict[str, str]] = [{"role": "user", "content": "Hi"}]
EVERY = {SMOLLM2, GEMMA3, MINILM}  # the bundled models


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("admin"), auth="on") as server:
        yield server


@pytest.fixture(scope="module")
def admin(secured: Server) -> Iterator[httpx.Client]:
    assert blackroad("users", "add", "root", "--role", "admin", home=secured.home).returncode == 0
    created = blackroad(
        "keys", "create", "root", "--scope", "admin", "--scope", "inference", home=secured.home
    )
    key = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"{secured.url}/api/admin", headers=headers, timeout=120) as client:
        yield client


def user_with_key(admin: httpx.Client, name: str, **user: Any) -> str:
    assert admin.post("/users", json={"name": name, **user}).status_code == 201
    created = admin.post("/keys", json={"user": name})
    assert created.status_code == 201, created.text
    secret: str = created.json()["key"]
    return secret


def visible_models(server: Server, key: str) -> tuple[set[str], set[str]]:
    """The models a key sees through the OpenAI API and through the Ollama API."""
    v1 = openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0).models.list()
    tags = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"}).list()
    return {m.id for m in v1}, {m.model or "" for m in tags.models}


def test_users_are_created_listed_changed_and_disabled(
    secured: Server, admin: httpx.Client
) -> None:
    body = {"name": "ivy", "password": "a long passphrase", "limits": {"rpm": 30}}
    created = admin.post("/users", json=body)
    assert created.status_code == 201
    assert created.json()["limits"]["rpm"] == 30 and created.json()["role"] == "user"
    assert "password" not in created.text and "scrypt" not in created.text
    assert "ivy" in {u["name"] for u in admin.get("/users").json()["users"]}
    key = admin.post("/keys", json={"user": "ivy", "name": "laptop"}).json()["key"]
    client = openai.OpenAI(base_url=secured.v1, api_key=key, max_retries=0)
    assert client.models.list().data

    changed = admin.patch("/users/ivy", json={"disabled": True, "limits": {"rpm": None}})
    assert changed.json()["disabled"] is True and changed.json()["limits"]["rpm"] is None
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert admin.patch("/users/ivy", json={"disabled": False}).status_code == 200
    assert client.models.list().data


def test_keys_are_created_limited_and_revoked_through_the_api(
    secured: Server, admin: httpx.Client
) -> None:
    admin.post("/users", json={"name": "jack"})
    created = admin.post(
        "/keys", json={"user": "jack", "models": [SMOLLM2], "expires_in": 3600}
    ).json()
    key, prefix = created["key"], created["prefix"]
    assert key.startswith(prefix) and created["state"] == "active" and created["expires_at"]
    assert prefix in {
        k["prefix"] for k in admin.get("/keys", params={"user": "jack"}).json()["keys"]
    }
    assert all("key" not in k for k in admin.get("/keys").json()["keys"])  # never shown again

    limited = admin.patch(f"/keys/{prefix}", json={"limits": {"max_concurrent": 2}})
    assert limited.json()["limits"]["max_concurrent"] == 2
    agent = ollama.Client(host=secured.url, headers={"Authorization": f"Bearer {key}"})
    assert agent.chat(model=SMOLLM2, messages=HI, options={"num_predict": 1}).done
    assert admin.delete(f"/keys/{prefix}").status_code == 204
    with pytest.raises(ollama.ResponseError) as refused:
        agent.chat(model=SMOLLM2, messages=HI, options={"num_predict": 1})
    assert refused.value.status_code == 401


def test_groups_decide_which_models_their_members_use(secured: Server, admin: httpx.Client) -> None:
    kim = user_with_key(admin, "kim")
    assert visible_models(secured, kim) == (EVERY, EVERY)  # no group

    group = admin.post("/groups", json={"name": "small", "models": [SMOLLM2], "members": ["kim"]})
    assert group.status_code == 201
    assert group.json() == {**group.json(), "models": [SMOLLM2], "members": ["kim"]}
    assert visible_models(secured, kim) == ({SMOLLM2}, {SMOLLM2})
    client = openai.OpenAI(base_url=secured.v1, api_key=kim, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=GEMMA3, messages=HI, max_tokens=1)  # type: ignore[arg-type]
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=secured.url, headers={"Authorization": f"Bearer {kim}"}).generate(
            model=GEMMA3, prompt="Hi", options={"num_predict": 1}
        )
    assert refused.value.status_code == 403

    # A second group adds its models (a pattern here); taking them away works as well.
    admin.post("/groups", json={"name": "gemmas", "models": ["gemma3:*"], "members": ["kim"]})
    assert visible_models(secured, kim) == ({SMOLLM2, GEMMA3}, {SMOLLM2, GEMMA3})
    admin.patch("/groups/gemmas", json={"remove": ["kim"]})
    assert visible_models(secured, kim) == ({SMOLLM2}, {SMOLLM2})
    # A group without a model list gives every model; deleting it takes that away.
    admin.patch("/groups/gemmas", json={"models": None, "add": ["kim"]})
    assert visible_models(secured, kim) == (EVERY, EVERY)
    assert admin.delete("/groups/gemmas").status_code == 204
    assert visible_models(secured, kim) == ({SMOLLM2}, {SMOLLM2})
    assert [g["name"] for g in admin.get("/groups").json()["groups"]] == ["small"]


def test_a_keys_allowlist_narrows_what_its_users_groups_give(
    secured: Server, admin: httpx.Client
) -> None:
    admin.post("/users", json={"name": "lee", "groups": ["small"]})
    admin.patch("/groups/small", json={"models": ["smollm2:*", "gemma3:*"]})
    narrow = admin.post("/keys", json={"user": "lee", "models": [GEMMA3]}).json()["key"]
    assert visible_models(secured, narrow) == ({GEMMA3}, {GEMMA3})
    admin.patch("/groups/small", json={"models": [SMOLLM2]})
    assert visible_models(secured, narrow) == (set(), set())


def test_admins_use_every_model_whatever_their_groups(secured: Server, admin: httpx.Client) -> None:
    boss = user_with_key(admin, "boss", role="admin", groups=["small"])
    assert visible_models(secured, boss) == (EVERY, EVERY)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", "/users", {"name": "x", "limits": {"rpm": -1}}, 400, "limits.rpm"),
        # Past SQLite's integers, and past datetime's years: both were a 500.
        ("POST", "/users", {"name": "x", "limits": {"tpm": 2**63}}, 400, "limits.tpm"),
        ("POST", "/keys", {"user": "kim", "expires_in": 10**12}, 400, "expires_in"),
        ("POST", "/users", {"name": "bad name!"}, 400, "name"),
        ("POST", "/users", {"name": "x", "role": "root"}, 400, "role"),
        ("POST", "/users", {"name": "x", "colour": "red"}, 400, "colour"),
        ("POST", "/users", {"name": "x", "groups": ["no-such-group"]}, 404, "no-such-group"),
        ("PATCH", "/users/nobody", {"disabled": True}, 404, "nobody"),
        ("POST", "/keys", {"user": "nobody"}, 404, "nobody"),
        ("POST", "/keys", {"user": "kim", "scopes": ["admin"]}, 400, "only an admin"),
        ("POST", "/keys", {"user": "kim", "scopes": []}, 400, "scopes"),
        ("POST", "/keys", {"user": "kim", "models": ["../etc"]}, 400, "invalid model name"),
        ("DELETE", "/keys/br-nothing", None, 404, "br-nothing"),
        ("POST", "/groups", {"name": "small"}, 400, "already exists"),
        ("DELETE", "/groups/none", None, 404, "none"),
    ],
)
def test_bad_admin_requests_get_a_precise_error(
    admin: httpx.Client, method: str, path: str, body: Any, status: int, fragment: str
) -> None:
    answer = admin.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"]  # the Ollama-style format of /api


def test_users_manage_their_own_keys(secured: Server, admin: httpx.Client) -> None:
    mia = user_with_key(admin, "mia")
    own = httpx.Client(
        base_url=secured.url, headers={"Authorization": f"Bearer {mia}"}, timeout=HTTP_TIMEOUT
    )
    me = own.get("/api/me").json()
    assert me["user"] == "mia" and me["scopes"] == ["inference"] and me["key_prefix"] == mia[:12]
    made = own.post("/api/keys", json={"name": "script", "limits": {"rpm": 5}})
    assert made.status_code == 201 and made.json()["limits"]["rpm"] == 5
    assert own.post("/api/keys", json={"scopes": ["admin"]}).status_code == 403
    assert {k["name"] for k in own.get("/api/keys").json()["keys"]} == {"default", "script"}
    assert own.delete(f"/api/keys/{made.json()['prefix']}").status_code == 204
    states = {k["name"]: k["state"] for k in own.get("/api/keys").json()["keys"]}
    assert states == {"default": "active", "script": "revoked"}


def test_a_name_and_password_buy_a_session_key(secured: Server, admin: httpx.Client) -> None:
    admin.post("/users", json={"name": "pia", "password": "correct horse battery"})
    login = httpx.post(
        f"{secured.url}/api/login",
        json={"name": "pia", "password": "correct horse battery", "expires_in": 600},
        timeout=HTTP_TIMEOUT,
    )
    assert login.status_code == 201, login.text
    session = login.json()["key"]
    me = httpx.get(
        f"{secured.url}/api/me",
        headers={"Authorization": f"Bearer {session}"},
        timeout=HTTP_TIMEOUT,
    )
    assert me.json()["user"] == "pia" and me.json()["scopes"] == ["inference"]
    keys = admin.get("/keys", params={"user": "pia"}).json()["keys"]
    assert [(k["name"], k["state"]) for k in keys] == [("session", "active")]
    assert keys[0]["expires_at"] is not None
    for name, password in (("pia", "wrong horse"), ("nobody", "correct horse battery")):
        refused = httpx.post(
            f"{secured.url}/api/login",
            json={"name": name, "password": password},
            timeout=HTTP_TIMEOUT,
        )
        assert refused.status_code == 401
        assert refused.json() == {"error": "Incorrect user name or password."}
    admin.patch("/users/pia", json={"disabled": True})
    again = {"name": "pia", "password": "correct horse battery"}
    refused = httpx.post(f"{secured.url}/api/login", json=again, timeout=HTTP_TIMEOUT)
    assert refused.status_code == 401
    assert "correct horse" not in secured.log.read_text()


def test_the_local_admin_has_no_keys_of_its_own(http: httpx.Client) -> None:
    assert http.get("/api/me").json()["user"] == "local"
    refused = http.post("/api/keys", json={})
    assert refused.status_code == 400 and "/api/admin/keys" in refused.json()["error"]


def test_docs_pages_that_load_from_a_cdn_are_not_served(http: httpx.Client) -> None:
    assert http.get("/docs").status_code == 404
    assert http.get("/redoc").status_code == 404


def test_a_non_loopback_bind_needs_a_usable_key(tmp_path: Path) -> None:
    assert blackroad("users", "add", "nina", home=tmp_path).returncode == 0
    key = blackroad("keys", "create", "nina", home=tmp_path).stdout.strip().splitlines()[-1]
    assert blackroad("keys", "revoke", key[:12], home=tmp_path).returncode == 0
    result = subprocess.run(
        [str(BLACKROAD), "up", "--host", "0.0.0.0"],
        env=server_env(tmp_path, 0),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "there is none" in result.stderr and key not in result.stderr


def test_the_cli_manages_groups_and_limits(tmp_path: Path) -> None:
    def run(*args: str) -> str:
        result = blackroad(*args, home=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    run("users", "add", "olga", "--rpm", "10", "--daily-tokens", "5000")
    run("groups", "add", "lab", "--model", "smollm2", "--member", "olga")
    assert "smollm2:latest" in run("groups", "list") and "olga" in run("groups", "list")
    run("groups", "models", "lab", "--all")
    assert "all" in run("groups", "list")
    listing = run("users", "list")
    assert "lab" in listing and "rpm=10" in listing and "daily_tokens=5000" in listing
    assert "rpm=10 tpm=100" in run("users", "limits", "olga", "--tpm", "100")
    assert "tpm=100" in run("users", "limits", "olga", "--tpm", "100", "--clear")
    assert "rpm" not in run("users", "limits", "olga", "--tpm", "100", "--clear")
    key = run("keys", "create", "olga", "--concurrent", "2").strip().splitlines()[-1]
    assert "max_concurrent=2" in run("keys", "limits", key[:12])
    assert run("keys", "limits", key[:12], "--clear").split(": ")[-1].strip() == "-"
    run("groups", "members", "lab", "--remove", "olga")
    assert "olga" not in run("groups", "list")
    run("groups", "rm", "lab")
    assert "lab" not in run("groups", "list")
    missing = blackroad("groups", "rm", "lab", home=tmp_path)
    assert missing.returncode == 1 and "no group named 'lab'" in missing.stdout
