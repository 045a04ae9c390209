"""schemathesis over every operation of the server's own OpenAPI document: never a 5xx.

A few generated cases per operation, against real servers: the default install
(loopback, no key: every caller is the local admin), and one with keys
required, called with an admin's key and with none. After every case the
server must still answer ``/health/live``. ``tests/support/schema_fuzz.py``
keeps the cases bounded (inference on a real small model, a few tokens out);
``fuzz/api_schema.py`` runs the long campaigns (``fuzz/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Ok

from tests.support.schema_fuzz import server_alive
from tests.support.server import Server, blackroad, running_server

# The lockout would soon refuse the fuzzer's own address (its passwords and node
# credentials are wrong), and every later case would be a 429: tested on its own.
NO_LOCKOUT = {"lockout_slow_after": "1000000000", "lockout_attempts": "1000000000"}
CHECKS: list[CheckFunction] = [not_a_server_error, server_alive]
FEW = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def default_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("fuzz-default"), **NO_LOCKOUT) as server:
        yield server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    home = tmp_path_factory.mktemp("fuzz-keyed")
    with running_server(home, auth="on", **NO_LOCKOUT) as server:
        assert blackroad("users", "add", "fuzzer", "--role", "admin", home=home).returncode == 0
        created = blackroad(
            "keys", "create", "fuzzer", "--scope", "admin", "--scope", "inference", home=home
        )
        assert created.returncode == 0, created.stderr
        yield server, created.stdout.strip().splitlines()[-1]


def examples(strategy: st.SearchStrategy[schemathesis.Case[Any]]) -> list[schemathesis.Case[Any]]:
    """A few cases drawn from ``strategy``, the same on every run."""
    drawn: list[schemathesis.Case[Any]] = []

    @FEW
    @given(case=strategy)
    def draw(case: schemathesis.Case[Any]) -> None:
        drawn.append(case)

    draw()
    return drawn


def fuzzed(server: Server, key: str | None = None) -> Iterator[tuple[str, schemathesis.Case[Any]]]:
    """Each operation's label and its generated cases, valid and invalid, few per operation."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(
        f"{server.url}/openapi.json", headers=headers, timeout=120
    )
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        strategy = st.one_of([operation.as_strategy(mode) for mode in modes])
        yield from ((operation.label, case) for case in examples(strategy))


def failures(server: Server, key: str | None, expect: Callable[[str, int], bool]) -> list[str]:
    """What went wrong over every operation: a check that failed, or a status ``expect`` refuses."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    found: list[str] = []
    called: set[str] = set()
    for label, case in fuzzed(server, key):
        called.add(label)
        try:
            response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=120)
        except Exception as error:  # a failed check, or no answer at all
            found.append(f"{label}: {error}")
            continue
        if not expect(case.operation.path, response.status_code):
            found.append(f"{label}: {response.status_code} {response.text[:200]}")
    assert len(called) > 100  # every operation was called (the document has over a hundred)
    return found


def test_the_default_install(default_install: Server) -> None:
    assert failures(default_install, None, lambda path, status: True) == []


def test_an_admin_key(keyed: tuple[Server, str]) -> None:
    server, key = keyed
    assert failures(server, key, lambda path, status: True) == []


# Routes that answer without a key: they are how a key or a credential is had.
OPEN = frozenset({"/api/login", "/api/session", "/api/fleet/join", "/api/fleet/heartbeat"})


def test_no_key_where_keys_are_required(keyed: tuple[Server, str]) -> None:
    server, _ = keyed

    def refused(path: str, status: int) -> bool:
        return path in OPEN or status in (400, 401, 404, 405, 413, 422)

    assert failures(server, None, refused) == []
