"""The offline registry: push, pull, resume and refuse, against real processes.

A model is put into a store, pushed with ``blackroad push`` to a directory
registry and to a ``blackroad registry serve`` process, and pulled back into
fresh homes: whole, corrupted, cut off by SIGKILL mid-transfer and resumed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from blackroad.errors import InvalidRequest, ModelNotFound, ServiceUnavailable
from blackroad.models.bundled import bundled_models
from blackroad.models.catalog import Catalog
from blackroad.models.registry import HTTPRegistry, open_registry, pull, push
from blackroad.models.store import (
    MEDIA_CONFIG,
    MEDIA_MODEL,
    Layer,
    Manifest,
    ModelStore,
    file_digest,
)
from blackroad.store.database import Database
from tests.conftest import SMOLLM2
from tests.support.registry import RegistryServer, running_registry
from tests.support.server import HTTP_TIMEOUT, blackroad

NAME = "team/tiny:v1"
pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Source:
    home: Path
    manifest: Manifest

    @property
    def model(self) -> Layer:
        layer = self.manifest.layers[0]
        assert layer.media_type == MEDIA_MODEL
        return layer


def manifest_file(root: Path) -> Path:
    return root / "manifests" / "team" / "tiny" / "v1"


def blob_file(root: Path, digest: str) -> Path:
    return root / "blobs" / digest.replace(":", "-")


def catalog_view(home: Path) -> dict[str, str | None]:
    database = Database(home / "blackroad.db")
    try:
        return {e.name: e.digest for e in Catalog(home / "models", database).list()}
    finally:
        database.close()


def pull_events(home: Path, location: str) -> list[dict[str, Any]]:
    with contextlib.closing(open_registry(location)) as registry:
        return list(pull(ModelStore(home / "models"), registry, NAME))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    home = tmp_path_factory.mktemp("source")
    store = ModelStore(home / "models")
    model = store.add_file(bundled_models()[SMOLLM2], MEDIA_MODEL)
    config = store.add_bytes(b'{"model_format":"gguf"}', MEDIA_CONFIG)
    manifest = Manifest(config, (model,))
    store.write_manifest(NAME, manifest)
    return Source(home, manifest)


@pytest.fixture(scope="module")
def dir_registry(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dir-registry")
    result = blackroad("push", NAME, "--registry", str(root), home=source.home)
    assert result.returncode == 0, result.stderr
    assert "success" in result.stdout
    return root


@pytest.fixture(scope="module")
def http_registry(
    source: Source, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    root = tmp_path_factory.mktemp("http-registry") / "root"
    with running_registry(root) as server:
        # Pushed through BLACKROAD_REGISTRY, the way a fleet is configured.
        result = blackroad("push", NAME, home=source.home, registry=server.url)
        assert result.returncode == 0, result.stderr
        yield server


def test_push_writes_the_store_layout_to_both_kinds_of_registry(
    source: Source, dir_registry: Path, http_registry: RegistryServer
) -> None:
    expected = manifest_file(source.home / "models").read_bytes()
    for root in (dir_registry, http_registry.root):
        assert manifest_file(root).read_bytes() == expected
        for layer in source.manifest.blobs():
            assert file_digest(blob_file(root, layer.digest)) == layer.digest
        assert not [p for p in (root / "blobs").iterdir() if p.name.startswith(".")]


def test_push_reports_ollama_statuses_and_skips_blobs_the_registry_has(
    source: Source, tmp_path: Path
) -> None:
    store = ModelStore(source.home / "models")
    with contextlib.closing(open_registry(str(tmp_path))) as registry:
        first = list(push(store, registry, NAME))
        again = list(push(store, registry, NAME))
    statuses = [e["status"] for e in first]
    assert statuses[0] == "retrieving manifest"
    assert statuses[-2:] == ["pushing manifest", "success"]
    model = source.model
    pushes = [e for e in first if e.get("digest") == model.digest]
    assert pushes[0]["status"] == f"pushing {model.digest[7:19]}"
    assert pushes[0]["completed"] == 0 and pushes[-1]["completed"] == model.size
    assert all(e["total"] == model.size for e in pushes)
    # The second push sends nothing: every blob is reported complete at once.
    assert [e["completed"] for e in again if "digest" in e] == [
        layer.size for layer in source.manifest.blobs()
    ]


def test_pull_over_http_adds_the_model_to_the_catalog(
    source: Source, http_registry: RegistryServer, tmp_path: Path
) -> None:
    before = catalog_view(tmp_path)
    assert NAME not in before
    events = pull_events(tmp_path, http_registry.url)

    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    for layer in source.manifest.blobs():
        mine = [e for e in events if e.get("digest") == layer.digest]
        assert mine and {e["status"] for e in mine} == {f"pulling {layer.digest[7:19]}"}
        assert mine[-1] == {**mine[-1], "total": layer.size, "completed": layer.size}

    raw = manifest_file(http_registry.root).read_bytes()
    after = catalog_view(tmp_path)
    assert after == {**before, NAME: f"sha256:{hashlib.sha256(raw).hexdigest()}"}
    models = tmp_path / "models"
    assert file_digest(blob_file(models, source.model.digest)) == source.model.digest
    assert not list((models / "blobs").glob("*-partial"))


def test_progress_arrives_while_bytes_do_at_most_about_ten_a_second(
    source: Source, http_registry: RegistryServer, tmp_path: Path
) -> None:
    with running_registry(http_registry.root, "--max-rate", "50000000") as slow:
        started = time.monotonic()
        events = pull_events(tmp_path, slow.url)
        elapsed = time.monotonic() - started
    done = [e["completed"] for e in events if e.get("digest") == source.model.digest]
    assert elapsed > 1.5  # 98 MB at 50 MB/s
    assert done == sorted(done) and done[-1] == source.model.size
    assert 5 <= len(done) <= elapsed * 10 + 3


def test_a_corrupted_registry_blob_fails_the_pull_and_adds_nothing(
    source: Source, http_registry: RegistryServer, tmp_path: Path
) -> None:
    root = tmp_path / "corrupt"
    shutil.copytree(http_registry.root, root)
    blob = blob_file(root, source.model.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    home = tmp_path / "home"
    before = catalog_view(home)

    with running_registry(root) as corrupt:
        result = blackroad("pull", NAME, "--registry", corrupt.url, home=home)
    assert result.returncode == 1
    assert "digest mismatch" in result.stderr and source.model.digest in result.stderr
    assert catalog_view(home) == before
    store = ModelStore(home / "models")
    assert store.read_manifest(NAME) is None
    assert not store.has_blob(source.model.digest)
    assert not store.partial_path(source.model.digest).exists()


def test_a_registry_killed_mid_transfer_fails_cleanly_and_the_next_pull_resumes(
    source: Source, http_registry: RegistryServer, tmp_path: Path
) -> None:
    model = source.model
    store = ModelStore(tmp_path / "models")
    seen: list[dict[str, Any]] = []

    def pull_and_kill_after_the_first_bytes(slow: RegistryServer) -> None:
        with contextlib.closing(HTTPRegistry(slow.url)) as registry:
            for event in pull(store, registry, NAME):
                seen.append(event)
                if event.get("digest") == model.digest and event["completed"] and slow.alive():
                    slow.kill()

    with (
        running_registry(http_registry.root, "--max-rate", "20000000") as slow,
        pytest.raises(ServiceUnavailable, match="unreachable"),
    ):
        pull_and_kill_after_the_first_bytes(slow)
    assert not slow.alive()
    assert "verifying sha256 digest" not in [e["status"] for e in seen]
    partial = store.partial_path(model.digest)
    kept = partial.stat().st_size
    assert 0 < kept < model.size
    assert store.read_manifest(NAME) is None and NAME not in catalog_view(tmp_path)

    with running_registry(http_registry.root) as restarted:
        events = pull_events(tmp_path, restarted.url)
    resumed = [e["completed"] for e in events if e.get("digest") == model.digest]
    assert resumed[0] == kept  # it started from the partial file, not from 0
    assert events[-1] == {"status": "success"}
    assert file_digest(store.blob_path(model.digest)) == model.digest
    assert not partial.exists()
    assert NAME in catalog_view(tmp_path)


def test_pull_from_a_directory_registry_with_the_cli(
    source: Source, dir_registry: Path, tmp_path: Path
) -> None:
    result = blackroad("pull", NAME, "--registry", str(dir_registry), home=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert f"pulling {source.model.digest[7:19]}: {source.model.size} bytes" in lines
    raw = manifest_file(dir_registry).read_bytes()
    assert catalog_view(tmp_path)[NAME] == f"sha256:{hashlib.sha256(raw).hexdigest()}"


def raw_status(port: int, method: str, target: str) -> int:
    """The status of a request sent byte for byte: no client normalises the path."""
    request = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{request}Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_hostile_requests_are_refused_and_the_registry_keeps_serving(
    source: Source, http_registry: RegistryServer
) -> None:
    server, root = http_registry, http_registry.root
    hex64 = source.model.digest[7:]
    for method, target in [
        ("GET", "/manifests/../../../etc/passwd"),
        ("GET", "/manifests/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
        ("GET", "/manifests/team/tiny/..%2f..%2f..%2fblobs"),
        ("GET", "/manifests/TEAM/tiny/v1"),
        ("GET", "/manifests/v1"),
        ("GET", "/blobs/../manifests/team/tiny/v1"),
        ("GET", "/blobs/sha256-..%2f..%2fmanifests%2fteam%2ftiny%2fv1"),
        ("GET", f"/blobs/sha256-{hex64.upper()}"),
        ("GET", f"/blobs/sha256-{hex64[:-1]}"),
        ("GET", f"/blobs/sha512-{hex64}"),
        ("HEAD", f"/blobs/sha256-{'0' * 64}"),
        ("PUT", "/manifests/../../evil/x"),
        ("PUT", "/blobs/sha256-..%2f..%2fevil"),
    ]:
        assert raw_status(server.port, method, target) in (400, 404), target
    assert not (root.parent / "evil").exists()

    with httpx.Client(base_url=server.url, timeout=30) as client:
        wrong = hashlib.sha256(b"a").hexdigest()
        response = client.put(f"/blobs/sha256-{wrong}", content=b"b")
        assert response.status_code == 400 and "digest mismatch" in response.json()["error"]
        assert not (root / "blobs" / f"sha256-{wrong}").exists()
        assert not [p for p in (root / "blobs").iterdir() if p.name.startswith(".")]

        missing = Layer(MEDIA_MODEL, f"sha256:{'1' * 64}", 5)
        bad_manifest = Manifest(source.manifest.config, (missing,)).to_bytes()
        response = client.put("/manifests/team/evil/v1", content=bad_manifest)
        assert response.status_code == 400 and "missing blobs" in response.json()["error"]
        assert client.put("/manifests/team/evil/v1", content=b"{not json").status_code == 400
        assert client.put("/manifests/team/evil/v1", content=b" " * (2 << 20)).status_code == 413
        assert not (root / "manifests" / "team" / "evil").exists()

        blob = f"/blobs/sha256-{hex64}"
        assert client.get(blob, headers={"Range": "bytes=999999999999-"}).status_code == 416
        ranged = client.get(blob, headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206
        assert ranged.headers["content-range"] == f"bytes 10-19/{source.model.size}"
        assert ranged.content == bundled_models()[SMOLLM2].read_bytes()[10:20]
        assert client.delete(blob).status_code == 405
        assert client.get("/").status_code == 200
        assert client.head("/manifests/team/tiny/v1").status_code == 200
    assert server.alive()


def test_read_only_and_keyed_registries(source: Source, http_registry: RegistryServer) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    with running_registry(http_registry.root, "--read-only") as read_only:
        response = httpx.put(
            f"{read_only.url}/blobs/sha256-{digest}", content=b"x", timeout=HTTP_TIMEOUT
        )
        assert response.status_code == 403 and "read-only" in response.json()["error"]
    with running_registry(http_registry.root, api_key="sesame") as keyed:
        manifest = httpx.get(f"{keyed.url}/manifests/team/tiny/v1", timeout=HTTP_TIMEOUT)
        assert manifest.status_code == 401
        with pytest.raises(InvalidRequest, match="401"):
            HTTPRegistry(keyed.url, api_key="wrong").read_manifest(NAME)
        with contextlib.closing(open_registry(keyed.url, api_key="sesame")) as registry:
            assert Manifest.from_bytes(registry.read_manifest(NAME)) == source.manifest


def test_pull_without_a_registry_names_blackroad_registry(tmp_path: Path) -> None:
    result = blackroad("pull", NAME, home=tmp_path)
    assert result.returncode == 1
    assert "BLACKROAD_REGISTRY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_models_and_bad_locations_are_clear_errors(
    http_registry: RegistryServer, dir_registry: Path, tmp_path: Path
) -> None:
    for location in (http_registry.url, str(dir_registry)):
        with contextlib.closing(open_registry(location)) as registry, pytest.raises(ModelNotFound):
            list(pull(ModelStore(tmp_path / "models"), registry, "nope:1"))
        result = blackroad("pull", "nope:1", "--registry", location, home=tmp_path)
        assert result.returncode == 1 and "nope:1 is not in the registry" in result.stderr
    result = blackroad("push", SMOLLM2, "--registry", str(dir_registry), home=tmp_path)
    assert result.returncode == 1 and "not in the local model store" in result.stderr
    for location in ("ftp://host/x", str(tmp_path / "absent"), "http://user:pw@host/", ""):
        with pytest.raises(InvalidRequest):
            open_registry(location)
    result = blackroad("registry", "serve", str(tmp_path), "--host", "0.0.0.0", home=tmp_path)
    assert result.returncode == 2 and "API key" in result.stderr


def test_a_blob_being_pulled_elsewhere_is_not_pulled_twice_at_once(
    source: Source, dir_registry: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    store.blobs_dir.mkdir(parents=True)
    with store.partial_path(source.model.digest).open("ab") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ServiceUnavailable, match="being pulled by another process"):
            pull_events(tmp_path, str(dir_registry))
    assert pull_events(tmp_path, str(dir_registry))[-1] == {"status": "success"}
