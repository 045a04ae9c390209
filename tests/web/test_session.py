"""Browser sessions: the cookie, its CSRF token, logging out; Bearer clients as before."""

from __future__ import annotations

from collections.abc import Callable
from http.cookies import SimpleCookie

import httpx
import pytest

from blackroad.api.auth import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from tests.support.server import HTTP_TIMEOUT, Server
from tests.web.conftest import ADMIN, PASSWORDS, USER


def session(server: Server, user: str) -> tuple[httpx.Client, str, SimpleCookie]:
    """A client sending ``user``'s session cookies, its CSRF token, and the cookies as set.

    httpx's cookie jar keeps Secure cookies to https, as it should; a browser
    sends them to http://127.0.0.1 (tests/web/test_desktop.py), so the client
    here sends them itself.
    """
    answer = httpx.post(
        f"{server.url}/api/session",
        json={"name": user, "password": PASSWORDS[user]},
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 201, answer.text
    cookies: SimpleCookie = SimpleCookie()
    for header in answer.headers.get_list("set-cookie"):
        cookies.load(header)
    sent = "; ".join(f"{name}={cookies[name].value}" for name in (SESSION_COOKIE, CSRF_COOKIE))
    client = httpx.Client(base_url=server.url, timeout=60, headers={"Cookie": sent})
    return client, answer.json()["csrf_token"], cookies


def test_wrong_password_is_refused_and_sets_no_cookie(desk_server: Server) -> None:
    answer = httpx.post(
        f"{desk_server.url}/api/session",
        json={"name": USER, "password": "not-it"},
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 401
    assert answer.json() == {"error": "Incorrect user name or password."}
    assert "set-cookie" not in answer.headers


def test_the_session_cookie_is_httponly_strict_and_secure(desk_server: Server) -> None:
    client, csrf, cookies = session(desk_server, USER)
    key = cookies[SESSION_COOKIE]
    assert key.value.startswith("br-")
    assert key["httponly"] and key["secure"] and key["samesite"].lower() == "strict"
    assert key["path"] == "/" and int(key["max-age"]) > 0
    token = cookies[CSRF_COOKIE]
    assert token.value == csrf and not token["httponly"]
    assert token["secure"] and token["samesite"].lower() == "strict"
    assert (
        key.value
        not in client.post(  # the key itself never comes back in a body
            "/api/session", json={"name": USER, "password": PASSWORDS[USER]}
        ).text
    )
    me = client.get("/api/me").json()
    assert (me["user"], me["scopes"]) == (USER, ["inference"])


def test_an_unsafe_request_by_cookie_needs_the_csrf_header(desk_server: Server) -> None:
    client, csrf, _ = session(desk_server, USER)
    body = {"title": "csrf probe"}
    refused = client.post("/api/conversations", json=body)
    assert refused.status_code == 403
    assert CSRF_HEADER in refused.json()["error"]
    wrong = client.post("/api/conversations", json=body, headers={CSRF_HEADER: csrf[:-1] + "0"})
    assert wrong.status_code == 403
    other, other_csrf, _ = session(desk_server, ADMIN)  # another session's token is no good
    assert (
        client.post("/api/conversations", json=body, headers={CSRF_HEADER: other_csrf}).status_code
        == 403
    )
    # On /v1 the refusal is an OpenAI error object.
    chat = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Hi"}]}
    openai_refusal = client.post("/v1/chat/completions", json=chat)
    assert openai_refusal.status_code == 403
    assert openai_refusal.json()["error"]["code"] == "permission_denied"
    made = client.post("/api/conversations", json=body, headers={CSRF_HEADER: csrf})
    assert made.status_code == 201, made.text
    # Reads need no token.
    assert client.get(f"/api/conversations/{made.json()['id']}").status_code == 200
    other.close()


def test_bearer_clients_are_unchanged(
    desk_server: Server, session_key: Callable[[Server, str], str]
) -> None:
    key = session_key(desk_server, USER)
    client, _, _ = session(desk_server, ADMIN)  # a browser's cookies beside the Bearer key
    answer = client.post(
        "/api/conversations",
        json={"title": "bearer"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 201, answer.text  # no CSRF token: the key is not ambient
    assert client.get("/api/me", headers={"Authorization": f"Bearer {key}"}).json()["user"] == USER
    assert httpx.get(f"{desk_server.url}/api/me", timeout=HTTP_TIMEOUT).status_code == 401


@pytest.mark.parametrize(("user", "status"), [(USER, 403), (ADMIN, 200)])
def test_admin_apis_refuse_a_users_cookie(desk_server: Server, user: str, status: int) -> None:
    client, _, _ = session(desk_server, user)
    answer = client.get("/api/admin/users")
    assert answer.status_code == status, answer.text
    if status == 403:
        assert "admin" in answer.json()["error"]


def test_logging_out_revokes_the_session(desk_server: Server) -> None:
    client, csrf, cookies = session(desk_server, USER)
    assert client.delete("/api/session").status_code == 403  # logging out is unsafe too
    answer = client.delete("/api/session", headers={CSRF_HEADER: csrf})
    assert answer.status_code == 204
    cleared: SimpleCookie = SimpleCookie()
    for header in answer.headers.get_list("set-cookie"):
        cleared.load(header)
    assert {cleared[SESSION_COOKIE].value, cleared[CSRF_COOKIE].value} <= {"", '""'}
    # The key is revoked, not merely forgotten by the browser.
    stolen = httpx.get(
        f"{desk_server.url}/api/me",
        cookies={SESSION_COOKIE: cookies[SESSION_COOKIE].value},
        timeout=HTTP_TIMEOUT,
    )
    assert stolen.status_code == 401
