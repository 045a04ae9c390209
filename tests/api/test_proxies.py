"""X-Forwarded-For is believed from the proxies an admin lists only, on real servers.

Every request here comes from 127.0.0.1; the addresses it forwards are from
the documentation ranges (RFC 5737). Each server has a lockout of its own
with a small threshold (3 failures) and no delays, so that a lockout shows at
once and locks nothing of other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from blackroad.api.proxies import TrustedProxies
from blackroad.errors import BlackRoadError
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server
from tests.support.wait import until

KEY = "br-proxies-test-key-0123456789"
PASSWORD = "a-password-for-the-proxy-tests"
LOCKOUT = {"lockout_attempts": "3", "lockout_slow_after": "10", "lockout_seconds": "600"}


def chat(server: Server, key: str, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    body = {"model": "none", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{server.v1}/chat/completions", json=body, headers=headers, timeout=HTTP_TIMEOUT
    )


def models(server: Server, forwarded_for: str | None = None) -> int:
    """The status of a request with the right key, as (or through) ``forwarded_for``."""
    headers = {"Authorization": f"Bearer {KEY}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.get(f"{server.v1}/models", headers=headers, timeout=HTTP_TIMEOUT).status_code


def fail_three_times(server: Server, forwarded_for: list[str]) -> None:
    for n, sent in enumerate(forwarded_for):
        assert chat(server, f"br-wrong-key-{n}-0123456789", sent).status_code == 401


def logged(server: Server, text: str) -> None:
    until(lambda: text in server.log.read_text(), what=f"logged: {text}")


def audited_clients(server: Server, forwarded_for: str) -> list[str]:
    """The clients of the inference records, newest first (read as ``forwarded_for``)."""
    listed = httpx.get(
        f"{server.url}/api/audit/records",
        params={"kind": "inference", "limit": 500},
        headers={"Authorization": f"Bearer {KEY}", "X-Forwarded-For": forwarded_for},
        timeout=HTTP_TIMEOUT,
    )
    assert listed.status_code == 200, listed.text
    return [entry["record"]["client"] for entry in listed.json()["records"]]


def test_a_forged_x_forwarded_for_from_anyone_else_is_ignored(tmp_path: Path) -> None:
    with running_server(tmp_path, api_key=KEY, **LOCKOUT) as server:
        # Three wrong keys, each claiming another address: all three are 127.0.0.1's.
        fail_three_times(server, ["203.0.113.1", "203.0.113.2", "203.0.113.3"])
        assert models(server) == 429
        assert models(server, forwarded_for="203.0.113.4") == 429  # no way out by a header
        logged(server, "locked out 127.0.0.1 ")
        assert "203.0.113" not in server.log.read_text()


@pytest.fixture(scope="module")
def behind_proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server behind two proxies: one on 127.0.0.1, in front of it one in 10.0.0.0/8."""
    with running_server(
        tmp_path_factory.mktemp("proxied"),
        api_key=KEY,
        trusted_proxies="127.0.0.1, 10.0.0.0/8",
        allowed_hosts="blackroad.example",
        admin_password=PASSWORD,
        **LOCKOUT,
    ) as server:
        yield server


def test_behind_a_trusted_proxy_the_forwarded_client_is_locked_out_not_the_proxy(
    behind_proxies: Server,
) -> None:
    server = behind_proxies
    # What the client wrote itself (6.6.6.6) proves nothing; the proxies appended the rest.
    fail_three_times(server, [f"6.6.6.{n}, 198.51.100.1, 10.1.2.3" for n in range(3)])
    assert models(server, forwarded_for="198.51.100.1, 10.1.2.3") == 429
    assert models(server, forwarded_for="198.51.100.1") == 429
    logged(server, "locked out 198.51.100.1 ")
    # Another client through the same proxies, and the proxies themselves, are not locked.
    assert models(server, forwarded_for="198.51.100.2, 10.1.2.3") == 200
    assert models(server, forwarded_for="10.1.2.3") == 200
    assert models(server) == 200
    # The request log (and so each request's audit record) keeps the client.
    clients = audited_clients(server, forwarded_for="198.51.100.2")
    assert clients[:3] == ["198.51.100.1"] * 3, clients


def session_cookie(server: Server, headers: dict[str, str]) -> str:
    """The Set-Cookie of a browser session opened on ``blackroad.example``."""
    opened = httpx.post(
        f"{server.url}/api/session",
        json={"name": "admin", "password": PASSWORD},
        headers={"Host": "blackroad.example", **headers},
        timeout=HTTP_TIMEOUT,
    )
    assert opened.status_code == 201, opened.text
    cookie: str = next(v for k, v in opened.headers.multi_items() if k == "set-cookie")
    return cookie.lower()


def test_the_scheme_a_trusted_proxy_forwards_decides_secure_cookies(
    behind_proxies: Server,
) -> None:
    # TLS ends at the proxy: the browser's https is what the proxy says it was.
    assert "secure" in session_cookie(behind_proxies, {"X-Forwarded-Proto": "https"})
    assert "secure" not in session_cookie(behind_proxies, {})


def test_x_forwarded_proto_from_anyone_else_is_ignored(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"allowed_hosts": "blackroad.example", "admin_password": PASSWORD}
    with running_server(tmp_path, trusted_proxies="10.0.0.0/8", **settings) as server:
        assert "secure" not in session_cookie(server, {"X-Forwarded-Proto": "https"})


def test_the_trusted_proxies_setting_is_checked() -> None:
    proxies = TrustedProxies.parse(" 127.0.0.1 ,10.0.0.0/8,, 2001:db8::/32")
    assert len(proxies.networks) == 3
    # The right-most address that is not a trusted proxy, ports and brackets dropped.
    assert proxies.client("127.0.0.1", ["1.2.3.4, 10.0.0.1:4711", "10.9.9.9"]) == "1.2.3.4"
    assert proxies.client("::ffff:127.0.0.1", ["[2001:db9::5]:80"]) == "2001:db9::5"
    assert proxies.client("127.0.0.1", ["2001:db8::1"]) == "2001:db8::1"  # all trusted
    assert proxies.client("127.0.0.1", ["1.2.3.4, junk, 10.0.0.1"]) == "10.0.0.1"
    assert proxies.client("127.0.0.1", []) == "127.0.0.1"
    assert proxies.client("192.0.2.1", ["1.2.3.4"]) == "192.0.2.1"  # not a proxy of ours
    with pytest.raises(BlackRoadError, match=r"'10\.0\.0\.300'"):
        TrustedProxies.parse("127.0.0.1,10.0.0.300")


def test_a_server_with_a_wrong_trusted_proxy_does_not_start(tmp_path: Path) -> None:
    started = blackroad("up", home=tmp_path, trusted_proxies="caddy.lan")
    assert started.returncode == 1, started.stdout + started.stderr
    assert "'caddy.lan' is not an IP address" in " ".join((started.stdout + started.stderr).split())
