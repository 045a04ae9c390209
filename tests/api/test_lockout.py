"""Wrong keys from one address are slowed, then locked out, on a real server of its own.

Every test client comes from 127.0.0.1, so a lockout here locks out every
test on the server: this module has a server to itself, with a small
threshold (4 failures) and a short lock (3 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server

LOCK_SECONDS = 3


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("lockout"),
        auth="on",
        lockout_slow_after="2",
        lockout_attempts="4",
        lockout_seconds=str(LOCK_SECONDS),
        lockout_window="60",
    ) as server:
        yield server


def new_key(server: Server, user: str) -> str:
    assert blackroad("users", "add", user, home=server.home).returncode == 0
    created = blackroad("keys", "create", user, home=server.home)
    assert created.returncode == 0, created.stdout + created.stderr
    return created.stdout.strip().splitlines()[-1]


def get(server: Server, path: str, key: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT
    )


def refused_openai(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"


def refused_ollama(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert set(response.json()) == {"error"} and "API key" in response.json()["error"]


def test_wrong_keys_lock_the_address_out_then_the_lock_expires(guarded: Server) -> None:
    valid = new_key(guarded, "alice")
    wrong = [
        "br-wrongwrongwrongwrongwrongwrongwrong1",
        valid[:-1] + ("A" if valid[-1] != "A" else "B"),  # the right prefix, a wrong secret
        "sk-not-even-ours-0123456789",
        "br-wrongwrongwrongwrongwrongwrongwrong4",
    ]
    refused_openai(get(guarded, "/v1/models", wrong[0]))
    refused_ollama(get(guarded, "/api/tags", wrong[1]))
    # A success does not clear the record of failures.
    assert get(guarded, "/v1/models", valid).status_code == 200
    refused_openai(get(guarded, "/v1/models", wrong[2]))
    refused_ollama(get(guarded, "/api/tags", wrong[3]))  # the 4th: locked out from now on

    locked = get(guarded, "/v1/models", valid)
    assert locked.status_code == 429, locked.text
    assert 1 <= int(locked.headers["retry-after"]) <= LOCK_SECONDS
    error = locked.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "failed authentication" in error["message"]
    ollama_locked = get(guarded, "/api/tags", valid)
    assert ollama_locked.status_code == 429
    assert "failed authentication" in ollama_locked.json()["error"]
    assert int(ollama_locked.headers["retry-after"]) >= 1

    deadline = time.monotonic() + HTTP_TIMEOUT  # a bound for a stuck log, not a speed test
    while "locked out 127.0.0.1" not in guarded.log.read_text():
        assert time.monotonic() < deadline, "the lockout was not logged"
        time.sleep(0.1)
    log = guarded.log.read_text()
    for secret in [valid, *wrong]:
        assert secret not in log

    # Requests refused while locked out are not failures: the lock still ends on time. (Were
    # each refusal to extend it, this polling would hold it locked past any deadline.)
    deadline = time.monotonic() + LOCK_SECONDS + HTTP_TIMEOUT
    while (response := get(guarded, "/v1/models", valid)).status_code == 429:
        assert time.monotonic() < deadline, "the lockout did not expire"
        time.sleep(0.2)
    assert response.status_code == 200
    client = openai.OpenAI(base_url=guarded.v1, api_key=valid, max_retries=0)
    reply = client.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    assert reply.choices
