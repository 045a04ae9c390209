"""Per-user and per-key limits on a real server: 429s in both APIs' formats, official clients.

Limits are set with the CLI (``blackroad users add|limits``, ``blackroad keys
create|limits``); each test uses users and keys of its own, so counts do not
mix across tests on the one server of this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from blackroad.identity.directory import KEY_PREFIX_LENGTH
from tests.conftest import SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a long story about a dragon and a knight."}
]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("limits"), auth="on") as server:
        yield server


def add_user(server: Server, user: str, *limits: str) -> None:
    added = blackroad("users", "add", user, *limits, home=server.home)
    assert added.returncode == 0, added.stdout + added.stderr


def new_key(server: Server, user: str, *limits: str) -> str:
    created = blackroad("keys", "create", user, *limits, home=server.home)
    assert created.returncode == 0, created.stdout + created.stderr
    return created.stdout.strip().splitlines()[-1]


def set_limits(server: Server, what: str, name: str, *limits: str) -> None:
    changed = blackroad(what, "limits", name, *limits, home=server.home)
    assert changed.returncode == 0, changed.stdout + changed.stderr


def openai_client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0)


def ollama_client(server: Server, key: str) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"})


def chat(server: Server, key: str) -> int:
    """One tiny chat through the OpenAI client; the tokens it used."""
    reply = openai_client(server, key).chat.completions.create(
        model=SMOLLM2, messages=HI, max_tokens=1
    )
    assert reply.usage is not None
    return reply.usage.total_tokens


def ollama_chat(server: Server, key: str) -> None:
    reply = ollama_client(server, key).chat(
        model=SMOLLM2, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 1}
    )
    assert reply.done


def openai_refusal(request: Callable[[], Any]) -> tuple[dict[str, Any], int]:
    """The OpenAI error of a request refused with 429, and its Retry-After."""
    with pytest.raises(openai.RateLimitError) as refused:
        request()
    assert refused.value.status_code == 429
    body = refused.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    retry_after = int(refused.value.response.headers["retry-after"])
    assert retry_after > 0
    return body, retry_after


def ollama_refusal(request: Callable[[], Any]) -> str:
    """The Ollama error of a request refused with 429."""
    with pytest.raises(ollama.ResponseError) as refused:
        request()
    assert refused.value.status_code == 429
    return refused.value.error


def raw_ollama_refusal(server: Server, key: str) -> httpx.Response:
    """A native API request answered 429: ``{"error": "..."}`` with Retry-After."""
    response = httpx.post(
        f"{server.url}/api/chat",
        json={"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi"}], "stream": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 429
    assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)
    assert int(response.headers["retry-after"]) > 0
    return response


def test_rpm_refuses_the_third_request_in_the_openai_format(limited: Server) -> None:
    add_user(limited, "rpm-openai")
    key = new_key(limited, "rpm-openai", "--rpm", "2")
    chat(limited, key)
    chat(limited, key)
    error, retry_after = openai_refusal(lambda: chat(limited, key))
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "RPM" in error["message"] and key[:KEY_PREFIX_LENGTH] in error["message"]
    assert retry_after <= 60
    assert key not in error["message"]


def test_rpm_refuses_the_third_request_in_the_ollama_format(limited: Server) -> None:
    add_user(limited, "rpm-ollama")
    key = new_key(limited, "rpm-ollama", "--rpm", "2")
    ollama_chat(limited, key)
    ollama_chat(limited, key)
    assert "RPM" in ollama_refusal(lambda: ollama_chat(limited, key))
    assert "RPM" in raw_ollama_refusal(limited, key).json()["error"]


def test_concurrency_refuses_while_a_stream_is_in_progress(limited: Server) -> None:
    add_user(limited, "concurrent")
    key = new_key(limited, "concurrent", "--concurrent", "1")
    client = openai_client(limited, key)
    # 2000 tokens take tens of seconds: the stream is in progress until closed.
    stream = client.chat.completions.create(
        model=SMOLLM2, messages=STORY, max_tokens=2000, stream=True
    )
    try:
        next(iter(stream))
        error, _ = openai_refusal(lambda: client.models.list())
        assert error["type"] == "requests" and "Concurrency" in error["message"]
        assert "Concurrency" in ollama_refusal(lambda: ollama_client(limited, key).list())
    finally:
        stream.close()
    # The slot is freed when the closed stream's request is recorded.
    deadline = time.monotonic() + 30
    while True:
        try:
            chat(limited, key)
            break
        except openai.RateLimitError:
            if time.monotonic() > deadline:
                pytest.fail("the concurrency slot was not freed after the stream was closed")
            time.sleep(0.1)


def test_tpm_refuses_once_the_minutes_tokens_are_used(limited: Server) -> None:
    add_user(limited, "tpm")
    key = new_key(limited, "tpm", "--tpm", "10")
    assert chat(limited, key) > 10  # the request that crosses the limit finishes
    error, retry_after = openai_refusal(lambda: chat(limited, key))
    assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    assert "TPM" in error["message"]
    assert retry_after <= 60
    assert "TPM" in ollama_refusal(lambda: ollama_chat(limited, key))


def test_a_daily_budget_refuses_with_insufficient_quota(limited: Server) -> None:
    add_user(limited, "daily", "--daily-tokens", "10")
    key = new_key(limited, "daily")
    assert chat(limited, key) > 10
    error, retry_after = openai_refusal(lambda: chat(limited, key))
    assert error["type"] == "insufficient_quota" and error["code"] == "insufficient_quota"
    assert "daily token budget of user 'daily'" in error["message"]
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert abs(retry_after - (midnight - now).total_seconds()) <= 5  # the budget renews then
    assert "budget" in ollama_refusal(lambda: ollama_chat(limited, key))
    assert "budget" in raw_ollama_refusal(limited, key).json()["error"]


def test_a_monthly_key_budget_refuses_with_insufficient_quota(limited: Server) -> None:
    add_user(limited, "monthly")
    key = new_key(limited, "monthly", "--monthly-tokens", "10")
    assert chat(limited, key) > 10
    error, _ = openai_refusal(lambda: chat(limited, key))
    assert error["code"] == "insufficient_quota"
    assert f"monthly token budget of key {key[:KEY_PREFIX_LENGTH]}" in error["message"]
    assert chat(limited, new_key(limited, "monthly")) > 0  # the user's other key is not limited


def test_a_user_limit_counts_all_their_keys(limited: Server) -> None:
    add_user(limited, "two-keys", "--rpm", "2")
    first, second = new_key(limited, "two-keys"), new_key(limited, "two-keys")
    chat(limited, first)
    chat(limited, second)
    for key in (first, second):
        error, _ = openai_refusal(partial(chat, limited, key))
        assert "user 'two-keys'" in error["message"]
    add_user(limited, "someone-else", "--rpm", "2")
    chat(limited, new_key(limited, "someone-else"))


def test_limits_changed_with_the_cli_apply_from_the_next_request(limited: Server) -> None:
    add_user(limited, "changing")
    key = new_key(limited, "changing", "--rpm", "1")
    chat(limited, key)
    openai_refusal(lambda: chat(limited, key))
    set_limits(limited, "keys", key[:KEY_PREFIX_LENGTH], "--clear")
    chat(limited, key)
    chat(limited, key)
    set_limits(limited, "users", "changing", "--rpm", "1")
    chat(limited, key)
    error, _ = openai_refusal(lambda: chat(limited, key))
    assert "user 'changing'" in error["message"]
    set_limits(limited, "users", "changing", "--clear")
    chat(limited, key)


def test_a_request_refused_for_its_scope_costs_no_quota(limited: Server) -> None:
    add_user(limited, "no-admin")
    key = new_key(limited, "no-admin", "--rpm", "1")
    for _ in range(3):
        response = httpx.get(
            f"{limited.url}/api/admin/users",
            headers={"Authorization": f"Bearer {key}"},
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 403, response.text
    chat(limited, key)
    openai_refusal(lambda: chat(limited, key))
