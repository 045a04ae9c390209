"""Pull and push through the Ollama API, against a real registry server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest

from tests.conftest import SMOLLM2
from tests.support.registry import running_registry
from tests.support.server import Server, running_server


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory registry holding ``team/helper:v1``, pushed through /api/push."""
    root = tmp_path_factory.mktemp("mirror")
    with running_server(tmp_path_factory.mktemp("publisher"), registry=str(root)) as publisher:
        client = ollama.Client(host=publisher.url)
        client.create(model="team/helper:v1", from_=SMOLLM2, system="You help the team.")
        statuses = [p.status for p in client.push("team/helper:v1", stream=True)]
    assert statuses[0] == "retrieving manifest"
    assert statuses[-2:] == ["pushing manifest", "success"]
    return root


@pytest.fixture(scope="module")
def consumer(registry_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose registry is an HTTP mirror serving ``registry_dir``."""
    with (
        running_registry(registry_dir) as mirror,
        running_server(tmp_path_factory.mktemp("consumer"), registry=mirror.url) as server,
    ):
        yield server


def test_pull_streams_progress_and_the_model_is_served_by_both_apis(consumer: Server) -> None:
    client = ollama.Client(host=consumer.url)
    progress = list(client.pull("team/helper:v1", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    blobs = [p for p in progress if (p.status or "").startswith("pulling ") and p.total]
    assert blobs and all(p.digest and p.digest.startswith("sha256:") for p in blobs)
    assert max(p.total or 0 for p in blobs) == 98362432  # the GGUF, complete

    assert "team/helper:v1" in [m.model for m in client.list().models]
    assert "You help the team." in (client.show("team/helper:v1").modelfile or "")
    v1 = openai.OpenAI(base_url=f"{consumer.url}/v1", api_key="x", max_retries=0)
    assert "team/helper:v1" in {m.id for m in v1.models.list()}
    reply = v1.chat.completions.create(
        model="team/helper:v1", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_pulling_again_skips_what_is_there_and_stream_false_answers_success(
    consumer: Server,
) -> None:
    client = ollama.Client(host=consumer.url)
    client.pull("team/helper:v1")
    assert client.pull("team/helper:v1", stream=False).status == "success"


def test_pulling_a_model_the_registry_lacks_is_an_error(consumer: Server) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        list(ollama.Client(host=consumer.url).pull("nobody/nothing:v9", stream=True))
    assert "nobody/nothing" in str(missing.value)
    assert consumer.alive()
