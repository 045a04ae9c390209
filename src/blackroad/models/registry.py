"""Registries (directory or HTTP), and ``pull``/``push`` between them and the store.

A registry holds the model store's layout (``models/store.py``): a directory
(a share, a USB disk) or an HTTP server of it (``models/registry_server.py``).
Nothing here reaches the internet, only the configured ``BLACKROAD_REGISTRY``.
``pull`` and ``push`` yield Ollama's ``/api/pull`` and ``/api/push`` progress.

Errors: a manifest the registry lacks is ``ModelNotFound``; a registry that
cannot be reached, fails (5xx) or drops a transfer is ``ServiceUnavailable``
(the partial blob stays, and the next pull resumes from it); anything wrong
with what the registry holds or answers (bad manifest, missing blob, wrong
size, digest mismatch, a 4xx) is ``InvalidRequest``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from blackroad.errors import BlackRoadError, InvalidRequest, ModelNotFound, ServiceUnavailable
from blackroad.models import names
from blackroad.models.metadata import read_metadata
from blackroad.models.store import (
    MEDIA_MANIFEST,
    MEDIA_MODEL,
    Layer,
    Manifest,
    ModelStore,
    valid_digest,
)

_CHUNK = 1 << 20
# Ollama's clients redraw a bar per event; ten a second is smooth and cheap.
_PROGRESS_INTERVAL = 0.1
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass
class BlobStream:
    """A blob being read: its bytes from ``start`` on, and its full size."""

    start: int
    total: int
    chunks: Iterator[bytes]


class Registry(ABC):
    """Where models are pulled from and pushed to. Names are canonical ``name:tag``."""

    location: str

    @abstractmethod
    def read_manifest(self, name: str) -> bytes:
        """The manifest's raw bytes; ``ModelNotFound`` if the registry lacks it."""

    @abstractmethod
    def open_blob(self, digest: str, offset: int = 0) -> AbstractContextManager[BlobStream]:
        """Read a blob from ``offset``; the stream may start at 0 instead (check ``start``)."""

    @abstractmethod
    def has_blob(self, digest: str) -> bool: ...

    @abstractmethod
    def write_blob(self, digest: str, source: Path) -> Iterator[int]:
        """Upload ``source`` as blob ``digest``, yielding the bytes sent so far."""

    @abstractmethod
    def write_manifest(self, name: str, raw: bytes) -> None:
        """Store a manifest; refused if it names a blob the registry lacks."""

    def close(self) -> None:  # use with ``contextlib.closing``
        return None


class DirectoryRegistry(Registry):
    """A registry in a local (or mounted) directory."""

    def __init__(self, root: Path) -> None:
        self.location = str(root)
        self._store = ModelStore(root)

    @contextlib.contextmanager
    def _guard(self, missing: BlackRoadError) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        except OSError as exc:  # a share that went away: worth retrying
            raise ServiceUnavailable(f"registry {self.location}: {exc}") from exc

    def read_manifest(self, name: str) -> bytes:
        with self._guard(ModelNotFound(name)):
            return self._store.manifest_path(names.normalize(name)).read_bytes()

    @contextlib.contextmanager
    def open_blob(self, digest: str, offset: int = 0) -> Iterator[BlobStream]:
        with self._guard(InvalidRequest(f"registry {self.location} has no blob {digest}")):
            f = self._store.blob_path(digest).open("rb")
        with f:
            total = os.fstat(f.fileno()).st_size
            if offset > total:
                raise InvalidRequest(f"registry blob {digest} is shorter than {offset} bytes")
            f.seek(offset)
            yield BlobStream(offset, total, self._chunks(f))

    def _chunks(self, f: IO[bytes]) -> Iterator[bytes]:
        with self._guard(ServiceUnavailable(f"registry {self.location} lost a blob")):
            while block := f.read(_CHUNK):
                yield block

    def has_blob(self, digest: str) -> bool:
        return self._store.has_blob(digest)

    def write_blob(self, digest: str, source: Path) -> Iterator[int]:
        # The registry is a store: its commit_partial verifies the digest and renames.
        partial = self._store.partial_path(digest)
        partial.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as f, partial.open("wb") as out:
            while block := f.read(_CHUNK):
                out.write(block)
                yield out.tell()
        self._store.commit_partial(digest)

    def write_manifest(self, name: str, raw: bytes) -> None:
        self._store.write_manifest_bytes(names.normalize(name), raw)


class HTTPRegistry(Registry):
    """A registry behind HTTP(S): ``blackroad registry serve`` or any server of the layout."""

    def __init__(self, url: str, *, api_key: str | None = None) -> None:
        base = httpx.URL(url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host or base.query or base.userinfo:
            raise InvalidRequest(f"invalid registry URL {url!r}", param="registry")
        self.location = str(base)
        self._origin = (base.scheme, base.host, base.port)
        headers = {"Accept-Encoding": "identity"}  # byte ranges of a compressed body: no
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            headers=headers,
            # Reads wait long enough for the server to fsync a multi-GB upload.
            timeout=httpx.Timeout(60.0, connect=10.0),
            follow_redirects=True,
            event_hooks={"request": [self._same_origin]},
        )

    def _same_origin(self, request: httpx.Request) -> None:
        # A redirect to another host could leak the API key or pull from the internet.
        if (request.url.scheme, request.url.host, request.url.port) != self._origin:
            raise InvalidRequest(f"registry {self.location} redirected to {request.url}")

    def close(self) -> None:
        self._client.close()

    def _url(self, kind: str, name: str = "", digest: str = "") -> str:
        if digest and not valid_digest(digest):
            raise InvalidRequest(f"invalid digest {digest!r}")
        # normalize() keeps a name to [a-z0-9._-/] without "..": safe in a URL path.
        path = names.normalize(name).replace(":", "/") if name else digest.replace(":", "-")
        return f"{self.location}/{kind}/{path}"

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except httpx.HTTPError as exc:  # refused, reset, timed out, cut off mid-body
            raise ServiceUnavailable(f"registry {self.location} unreachable: {exc}") from exc

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        response.read()
        try:
            message = str(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        text = f"registry {self.location}: {what}: {response.status_code} {message}"
        raise ServiceUnavailable(text) if response.status_code >= 500 else InvalidRequest(text)

    def read_manifest(self, name: str) -> bytes:
        with self._guard():
            response = self._client.get(self._url("manifests", name))
        if response.status_code == 404:
            raise ModelNotFound(name)
        self._check(response, f"manifest {name}")
        return response.content

    @contextlib.contextmanager
    def open_blob(self, digest: str, offset: int = 0) -> Iterator[BlobStream]:
        url, headers = self._url("blobs", digest=digest), {"Range": f"bytes={offset}-"}
        with self._guard(), self._client.stream("GET", url, headers=headers) as response:
            if response.status_code in (404, 416):
                raise InvalidRequest(f"registry {self.location} lacks {digest} from byte {offset}")
            self._check(response, f"blob {digest}")
            if response.status_code == 206:
                match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                if match is None or int(match[1]) != offset:
                    raise InvalidRequest(f"registry answered a bad range for {digest}")
                start, total = offset, int(match[3])
            else:  # a 200 to a range request: the whole blob, from 0
                start, total = 0, int(response.headers.get("content-length", "-1"))
            yield BlobStream(start, total, self._chunks(response))

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        with self._guard():
            yield from response.iter_bytes()

    def has_blob(self, digest: str) -> bool:
        with self._guard():
            response = self._client.head(self._url("blobs", digest=digest))
        if response.status_code != 404:
            self._check(response, f"blob {digest}")
        return response.status_code != 404

    def write_blob(self, digest: str, source: Path) -> Iterator[int]:
        # httpx uploads inside one blocking call; a thread runs it so this
        # generator can report the bytes sent while it goes.
        sent, stop = [0], threading.Event()

        def body() -> Iterator[bytes]:
            with source.open("rb") as f:
                while not stop.is_set() and (block := f.read(_CHUNK)):
                    yield block
                    sent[0] += len(block)

        def upload() -> None:
            url, length = self._url("blobs", digest=digest), str(source.stat().st_size)
            with self._guard():
                response = self._client.put(url, content=body(), headers={"Content-Length": length})
            self._check(response, f"upload of {digest}")

        with ThreadPoolExecutor(1, thread_name_prefix="push") as pool:
            upload_done = pool.submit(upload)
            try:
                while not upload_done.done():
                    wait([upload_done], timeout=_PROGRESS_INTERVAL)
                    yield sent[0]
            finally:
                stop.set()  # a consumer that gave up ends the upload early
        upload_done.result()  # the upload's error, if any

    def write_manifest(self, name: str, raw: bytes) -> None:
        url, headers = self._url("manifests", name), {"Content-Type": MEDIA_MANIFEST}
        with self._guard():
            response = self._client.put(url, content=raw, headers=headers)
        self._check(response, f"manifest {name}")


def open_registry(location: str, *, api_key: str | None = None) -> Registry:
    """A directory or http(s) registry; ``api_key`` goes to an HTTP one as a Bearer token."""
    location = location.strip()
    scheme, sep, _ = location.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        return HTTPRegistry(location, api_key=api_key)
    path = Path(location).expanduser()
    if sep or not location or not path.is_dir():
        raise InvalidRequest(
            f"registry {location!r} is neither an existing directory nor an http(s):// URL",
            param="registry",
        )
    return DirectoryRegistry(path)


def _progress(verb: str, layer: Layer, done: int) -> dict[str, Any]:
    status = f"{verb} {layer.digest[7:19]}"
    return {"status": status, "digest": layer.digest, "total": layer.size, "completed": done}


def _unique(manifest: Manifest) -> Iterable[Layer]:  # a blob listed twice is fetched once
    return {layer.digest: layer for layer in manifest.blobs()}.values()


def _download(
    store: ModelStore, registry: Registry, layer: Layer, held: ExitStack
) -> Iterator[dict[str, Any]]:
    """Append the rest of a blob to its partial file, which stays locked in ``held``."""
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    f = held.enter_context(store.partial_path(layer.digest).open("ab"))
    try:  # two pulls appending to one partial file would interleave their bytes
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ServiceUnavailable(f"{layer.digest} is being pulled by another process") from None
    size = os.fstat(f.fileno()).st_size
    completed = size if size <= layer.size else 0  # a longer file is not this blob's prefix
    yield _progress("pulling", layer, completed)
    if completed == layer.size:
        return
    next_report = time.monotonic() + _PROGRESS_INTERVAL
    with registry.open_blob(layer.digest, completed) as blob:
        if blob.total != layer.size:
            raise InvalidRequest(
                f"registry blob {layer.digest} has {blob.total} bytes, manifest says {layer.size}"
            )
        # Drops all of the partial if it was bad or the registry ignored the range.
        f.truncate(completed := blob.start)
        for chunk in blob.chunks:  # a longer blob fails verification like a corrupt one
            completed += len(chunk)
            f.write(chunk)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + _PROGRESS_INTERVAL
                yield _progress("pulling", layer, completed)
    f.flush()
    if completed < layer.size:  # the directory registry's file was cut short
        raise ServiceUnavailable(f"registry {registry.location} ended {layer.digest} early")
    yield _progress("pulling", layer, completed)


def pull(store: ModelStore, registry: Registry, name: str) -> Iterator[dict[str, Any]]:
    """Pull ``name`` into ``store``, yielding Ollama's ``/api/pull`` progress objects.

    Blobs the store has are skipped, others resume from their partial file; all
    are verified before the manifest is written, so a failed pull adds no model.
    """
    canonical = names.normalize(name)
    yield {"status": "pulling manifest"}
    raw = registry.read_manifest(canonical)
    manifest = Manifest.from_bytes(raw)  # validates every digest before anything is written
    with ExitStack() as held:
        fetched: list[Layer] = []
        for layer in _unique(manifest):
            if store.has_blob(layer.digest):
                yield _progress("pulling", layer, layer.size)
                continue
            yield from _download(store, registry, layer, held)
            fetched.append(layer)
        yield {"status": "verifying sha256 digest"}
        for layer in fetched:
            store.commit_partial(layer.digest)  # deletes the partial on a mismatch
    weights = manifest.layer(MEDIA_MODEL)
    if weights is not None:
        # Read the GGUF's header now, before the model is listed: the first
        # listing would otherwise parse it, for seconds, while probes wait.
        with contextlib.suppress(InvalidRequest):  # not a GGUF: the catalog skips it
            read_metadata(store.blob_path(weights.digest))
    yield {"status": "writing manifest"}
    store.write_manifest_bytes(canonical, raw)
    yield {"status": "success"}


def push(store: ModelStore, registry: Registry, name: str) -> Iterator[dict[str, Any]]:
    """Push ``name`` from ``store``, yielding Ollama's ``/api/push`` progress objects.

    Blobs the registry has are skipped; the manifest goes last. ``ModelNotFound``
    if the store has no manifest for ``name`` (bundled and added models have none).
    """
    canonical = names.normalize(name)
    yield {"status": "retrieving manifest"}
    try:
        raw = store.manifest_path(canonical).read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ModelNotFound(name) from None
    manifest = Manifest.from_bytes(raw)
    for layer in _unique(manifest):
        if registry.has_blob(layer.digest):
            yield _progress("pushing", layer, layer.size)
            continue
        source = store.blob_path(layer.digest)
        if not source.is_file():
            raise InvalidRequest(f"the local store lacks blob {layer.digest} of {canonical}")
        yield _progress("pushing", layer, 0)
        next_report = time.monotonic() + _PROGRESS_INTERVAL
        for sent in registry.write_blob(layer.digest, source):
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + _PROGRESS_INTERVAL
                yield _progress("pushing", layer, sent)
        yield _progress("pushing", layer, layer.size)
    yield {"status": "pushing manifest"}
    registry.write_manifest(canonical, raw)
    yield {"status": "success"}
