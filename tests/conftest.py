"""Shared fixtures: one real server process for the session, and official clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.postgres import Postgres, running_postgres
from tests.support.server import Server, running_server

SMOLLM2 = "smollm2:135m"
MINILM = "all-minilm:l6-v2"
GEMMA3 = "gemma3:270m"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("home"), max_body_bytes=str(1024 * 1024)) as s:
        yield s


@pytest.fixture(scope="session")
def small_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose models have 512 tokens of context: chats soon outgrow it."""
    with running_server(tmp_path_factory.mktemp("small"), num_ctx="512") as s:
        yield s


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL (pgserver) for the session; each user takes a new database of it."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store's test keeps its data: a new SQLite file, then a new PostgreSQL database.

    What ``Database`` opens; a test that takes it runs once on each.
    """
    if request.param == "sqlite":
        return tmp_path / "blackroad.db"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.new_database()


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


@pytest.fixture
async def async_client(server: Server) -> AsyncIterator[openai.AsyncOpenAI]:
    # Closed in the test's own event loop: left to the garbage collector, its
    # connection pool would be closed later, in another test's loop, and fail there.
    async with openai.AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """Raw HTTP on the session server, for what the official clients cannot send."""
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client
