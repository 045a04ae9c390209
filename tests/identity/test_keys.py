"""Per-user API keys on a server that requires them: the official clients, both APIs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import ollama
import openai
import pytest

from blackroad.identity.directory import Directory
from blackroad.identity.passwords import hash_password, verify_password
from blackroad.store.database import Database
from tests.conftest import GEMMA3, SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server

HI: list[dict[str, str]] = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("secured"), auth="on") as server:
        yield server


def new_key(server: Server, user: str, *options: str, role: str = "user") -> str:
    blackroad("users", "add", user, "--role", role, home=server.home)  # may exist already
    created = blackroad("keys", "create", user, *options, home=server.home)
    assert created.returncode == 0, created.stdout + created.stderr
    return created.stdout.strip().splitlines()[-1]


def chat(server: Server, key: str, model: str = SMOLLM2) -> str | None:
    client = openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0)
    reply = client.chat.completions.create(model=model, messages=HI, max_tokens=2)  # type: ignore[arg-type]
    return reply.choices[0].message.content


def test_no_key_is_refused_in_both_formats(secured: Server) -> None:
    v1 = httpx.get(f"{secured.v1}/models", timeout=HTTP_TIMEOUT)
    assert v1.status_code == 401
    assert v1.json()["error"]["code"] == "invalid_api_key"
    api = httpx.get(f"{secured.url}/api/tags", timeout=HTTP_TIMEOUT)
    assert api.status_code == 401
    assert "API key" in api.json()["error"]


def test_a_users_key_works_with_both_official_clients(secured: Server) -> None:
    key = new_key(secured, "alice")
    assert key.startswith("br-")
    assert chat(secured, key) is not None
    client = ollama.Client(host=secured.url, headers={"Authorization": f"Bearer {key}"})
    assert client.chat(model=SMOLLM2, messages=HI, options={"num_predict": 2}).done
    assert key not in secured.log.read_text()
    with sqlite3.connect(secured.home / "blackroad.db") as db:
        callers = db.execute("SELECT DISTINCT user, key_prefix FROM requests WHERE user = 'alice'")
        assert callers.fetchall() == [("alice", key[:12])]


def test_a_revoked_key_is_refused_on_the_very_next_request(secured: Server) -> None:
    key = new_key(secured, "bob")
    assert chat(secured, key) is not None
    assert blackroad("keys", "revoke", key[:12], home=secured.home).returncode == 0
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        chat(secured, key)


def test_expired_keys_and_disabled_users_are_refused(secured: Server) -> None:
    directory = Directory(Database(secured.home / "blackroad.db"))
    directory.add_user("carol")
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = directory.create_key("carol", expires_at=past).secret
    with pytest.raises(openai.AuthenticationError, match="expired"):
        chat(secured, expired)
    key = directory.create_key("carol").secret
    assert chat(secured, key) is not None
    directory.update_user("carol", disabled=True)
    with pytest.raises(openai.AuthenticationError):
        chat(secured, key)


def test_a_model_allowlist_limits_what_a_key_sees_and_uses(secured: Server) -> None:
    key = new_key(secured, "dave", "--model", SMOLLM2)
    client = openai.OpenAI(base_url=secured.v1, api_key=key, max_retries=0)
    assert {m.id for m in client.models.list()} == {SMOLLM2}
    with pytest.raises(openai.PermissionDeniedError):
        chat(secured, key, GEMMA3)
    tags = httpx.get(
        f"{secured.url}/api/tags", headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT
    )
    assert [m["name"] for m in tags.json()["models"]] == [SMOLLM2]


def test_model_management_needs_the_admin_scope(secured: Server) -> None:
    user_key = new_key(secured, "erin")
    body = {"source": SMOLLM2, "destination": "erins-copy"}
    refused = httpx.post(
        f"{secured.url}/api/copy",
        json=body,
        headers={"Authorization": f"Bearer {user_key}"},
        timeout=HTTP_TIMEOUT,
    )
    assert refused.status_code == 403
    assert "admin" in refused.json()["error"]
    admin_key = new_key(secured, "root", "--scope", "admin", "--scope", "inference", role="admin")
    allowed = httpx.post(  # a copy of a 98 MB file: more than httpx's 5 s on a loaded machine
        f"{secured.url}/api/copy",
        json=body,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=120,
    )
    assert allowed.status_code == 200


def test_only_an_admin_gets_the_admin_scope(secured: Server) -> None:
    blackroad("users", "add", "frank", home=secured.home)
    result = blackroad("keys", "create", "frank", "--scope", "admin", home=secured.home)
    assert result.returncode == 1
    assert "only an admin" in result.stdout


def test_passwords_are_salted_scrypt_and_verify() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$") and first != second
    assert verify_password("correct horse", first)
    assert not verify_password("wrong horse", first)
    assert not verify_password("correct horse", "not-a-hash")


def test_usage_is_per_user_and_only_admins_see_everyone(secured: Server) -> None:
    gina, hank = new_key(secured, "gina"), new_key(secured, "hank")
    chat(secured, gina)
    chat(secured, gina)
    chat(secured, hank)

    def usage(key: str, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.get(
            f"{secured.url}/api/usage", params=params, headers=headers, timeout=HTTP_TIMEOUT
        )

    own = usage(gina).json()["usage"]
    assert {row["user"] for row in own} == {"gina"}
    assert sum(row["requests"] for row in own if row["model"] == SMOLLM2) == 2
    assert all(row["completion_tokens"] >= 1 for row in own)
    assert usage(gina, user="hank").status_code == 403

    admin = new_key(secured, "root", "--scope", "admin", "--scope", "inference", role="admin")
    everyone = {row["user"] for row in usage(admin).json()["usage"]}
    assert {"gina", "hank"} <= everyone
    assert {row["user"] for row in usage(admin, user="hank").json()["usage"]} == {"hank"}

    table = blackroad("usage", "--user", "gina", home=secured.home)
    assert table.returncode == 0
    assert "gina" in table.stdout and "hank" not in table.stdout
