"""The HTTP registry server: a model store's layout served over HTTP.

``blackroad registry serve DIR`` runs this app; ``HTTPRegistry`` in
``models/registry.py`` is its client. Routes:

    GET/HEAD /manifests/<name>/<tag>        a manifest
    PUT      /manifests/<name>/<tag>        refused if it names a missing blob
    GET/HEAD /blobs/sha256-<hex>            a blob; ``Range: bytes=N-[M]`` gives 206
    PUT      /blobs/sha256-<hex>            streamed to a temporary file, verified

Every name and digest is validated strictly (``names.normalize``,
``valid_digest``) before it becomes a path, so nothing outside the root can be
read or written. ``max_rate`` throttles blob downloads (bytes per second, per
download) for thin links. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from blackroad.browser_guard import AllowedHosts, BrowserGuard
from blackroad.errors import BlackRoadError, InvalidRequest, PayloadTooLarge, Unauthorized
from blackroad.identity.keys import bearer_token, same_secret
from blackroad.models import names
from blackroad.models.store import MEDIA_MANIFEST, ModelStore, fsync_replace

_BLOB_NAME = re.compile(r"^sha256-[0-9a-f]{64}$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_MAX_MANIFEST_BYTES = 1 << 20
_CHUNK = 1 << 20


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _digest(request: Request) -> str:
    blob = str(request.path_params["blob"])
    if not _BLOB_NAME.fullmatch(blob):
        raise InvalidRequest(f"invalid blob name {blob!r}; expected sha256-<64 hex digits>")
    return blob.replace("-", ":", 1)


def _name(request: Request) -> str:
    """``team/model/tag`` from the path to the canonical ``team/model:tag``."""
    model, _, tag = str(request.path_params["name"]).rpartition("/")
    name = f"{model}:{tag}"
    # normalize() lower-cases; a name that changes is not the one on disk.
    if not model or names.normalize(name) != name:
        raise InvalidRequest(f"invalid model name {name!r}")
    return name


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte asked for; ``None`` for the whole blob."""
    match = _RANGE.fullmatch(header or "")
    if match is None:
        return None  # absent, or a form this server ignores (RFC 9110 allows that)
    first, last = int(match[1]), int(match[2]) if match[2] else size - 1
    if first >= size or last < first:
        raise HTTPException(416, f"range not satisfiable for {size} bytes")
    return first, min(last, size - 1)


async def _read(path: Path, first: int, last: int, max_rate: int | None) -> AsyncIterator[bytes]:
    chunk = _CHUNK if max_rate is None else max(4096, min(_CHUNK, max_rate // 20))
    started, sent = time.monotonic(), 0
    with path.open("rb") as f:
        f.seek(first)
        while sent <= last - first:
            block = await anyio.to_thread.run_sync(f.read, min(chunk, last - first + 1 - sent))
            if not block:
                return  # cannot happen for a content-addressed (immutable) blob
            sent += len(block)
            yield block
            if max_rate is not None:  # stay on the line sent = rate * elapsed
                await asyncio.sleep(max(0.0, started + sent / max_rate - time.monotonic()))


class _Registry:
    def __init__(self, root: Path, max_rate: int | None, allow_push: bool, api_key: str | None):
        self.store = ModelStore(root)
        self.max_rate = max_rate
        self.allow_push = allow_push
        self.api_key = api_key

    def authorize(self, request: Request, write: bool) -> None:
        if self.api_key is not None:
            token = bearer_token(request.headers.get("authorization", ""))
            if token is None or not same_secret(token, self.api_key):
                raise Unauthorized("missing or wrong API key (Authorization: Bearer <key>)")
        if write and not self.allow_push:
            raise HTTPException(403, "this registry is read-only")

    async def index(self, request: Request) -> Response:
        return JSONResponse({"registry": "blackroad", "push": self.allow_push})

    async def manifest(self, request: Request) -> Response:
        self.authorize(request, write=request.method == "PUT")
        name = _name(request)
        path = self.store.manifest_path(name)
        if request.method == "PUT":
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > _MAX_MANIFEST_BYTES:
                    raise PayloadTooLarge(f"a manifest is at most {_MAX_MANIFEST_BYTES} bytes")
            await anyio.to_thread.run_sync(self.store.write_manifest_bytes, name, bytes(raw))
            return JSONResponse({"status": "success"}, status_code=201)
        if not path.is_file():
            raise HTTPException(404, f"model {name} not found")
        raw_bytes = path.read_bytes()
        headers = {
            "Content-Length": str(len(raw_bytes)),
            "Docker-Content-Digest": f"sha256:{hashlib.sha256(raw_bytes).hexdigest()}",
        }
        body = b"" if request.method == "HEAD" else raw_bytes
        return Response(body, headers=headers, media_type=MEDIA_MANIFEST)

    async def blob(self, request: Request) -> Response:
        self.authorize(request, write=request.method == "PUT")
        digest = _digest(request)
        if request.method == "PUT":
            return await self._receive(request, digest)
        path = self.store.blob_path(digest)
        if not path.is_file():
            raise HTTPException(404, f"blob {digest} not found")
        size = path.stat().st_size
        span = _byte_range(request.headers.get("range"), size)
        first, last = span or (0, size - 1)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(last - first + 1)}
        if span is not None:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        status = 200 if span is None else 206
        if request.method == "HEAD" or size == 0:
            return Response(b"", status, headers, media_type="application/octet-stream")
        chunks = _read(path, first, last, self.max_rate)
        return StreamingResponse(chunks, status, headers, media_type="application/octet-stream")

    async def _receive(self, request: Request, digest: str) -> Response:
        """Stream an upload to a hidden temporary file; keep it only if its digest matches."""
        target = self.store.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".upload-{uuid.uuid4().hex}")
        sha = hashlib.sha256()
        try:
            with tmp.open("wb") as f:
                async for chunk in request.stream():
                    sha.update(chunk)
                    # Page-cache writes of a request chunk are quick; the slow fsync
                    # at the end runs in a thread.
                    f.write(chunk)
            actual = f"sha256:{sha.hexdigest()}"
            if actual != digest:
                raise InvalidRequest(f"digest mismatch: expected {digest}, got {actual}")
            await anyio.to_thread.run_sync(fsync_replace, tmp, target)
        except ClientDisconnect:
            return _error(400, "upload interrupted")
        finally:
            tmp.unlink(missing_ok=True)
        return JSONResponse({"status": "success"}, status_code=201)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), exc.headers)


async def _blackroad_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BlackRoadError)
    return _error(exc.status_code, exc.message)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _error(500, "internal error")  # the traceback goes to the server's log only


def _refused(path: str, exc: BlackRoadError) -> Response:
    return _error(exc.status_code, exc.message)


def create_registry_app(
    root: Path,
    max_rate: int | None = None,
    allow_push: bool = True,
    api_key: str | None = None,
    hosts: AllowedHosts | None = None,
) -> Starlette:
    """The registry app for ``root``; with ``api_key``, every route but ``/`` needs it.

    Like the API server it answers only the host names in ``hosts`` (by default
    those of a loopback server) and refuses cross-site writes (``browser_guard``).
    """
    if max_rate is not None and max_rate <= 0:
        raise InvalidRequest("max_rate must be a positive number of bytes per second")
    registry = _Registry(root, max_rate, allow_push, api_key)
    methods = ["GET", "HEAD", "PUT"]
    return Starlette(
        middleware=[Middleware(BrowserGuard, hosts=hosts or AllowedHosts(), respond=_refused)],
        routes=[
            Route("/", registry.index, methods=["GET", "HEAD"]),
            Route("/manifests/{name:path}", registry.manifest, methods=methods),
            Route("/blobs/{blob}", registry.blob, methods=methods),
        ],
        exception_handlers={
            HTTPException: _http_error,
            BlackRoadError: _blackroad_error,
            Exception: _internal_error,
        },
    )
