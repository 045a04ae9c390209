"""The local model store: Ollama-style manifests and sha256-named blobs.

    $BLACKROAD_HOME/models/manifests/<name>/<tag>   manifest (JSON, Ollama's format)
    $BLACKROAD_HOME/models/blobs/sha256-<hex>       content, named by its digest

A blob is written under a temporary name, verified, fsynced and then renamed,
and a manifest is written (atomically) only after every blob it names is in
place, so a crash or a failed transfer never leaves a half model visible.
The same layout is what a registry serves (``models/registry.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blackroad.errors import InvalidRequest

MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
_CHUNK = 1 << 20
# An uploaded blob waits this long for the /api/create that will use it.
UPLOAD_GRACE_SECONDS = 3600


def valid_digest(digest: str) -> bool:
    algorithm, _, value = digest.partition(":")
    return (
        algorithm == "sha256" and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def fsync_replace(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` over ``target`` durably: data, then the directory entry."""
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layer:
        layer = cls(str(data["mediaType"]), str(data["digest"]), int(data["size"]))
        if not valid_digest(layer.digest) or layer.size < 0:
            raise InvalidRequest(f"invalid layer in manifest: {data!r}")
        return layer


@dataclass(frozen=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...]

    def layer(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)

    def blobs(self) -> list[Layer]:
        return [self.config, *self.layers]

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": self.config.to_json(),
                "layers": [layer.to_json() for layer in self.layers],
            },
            indent=2,
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            return cls(
                Layer.from_json(data["config"]),
                tuple(Layer.from_json(layer) for layer in data["layers"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(f"invalid manifest: {exc}") from exc


class ModelStore:
    """Manifests and blobs under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.manifests_dir = root / "manifests"

    # -- blobs -------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        if not valid_digest(digest):
            raise InvalidRequest(f"invalid digest {digest!r}; expected sha256:<64 hex digits>")
        return self.blobs_dir / digest.replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def partial_path(self, digest: str) -> Path:
        """Where a pull writes ``digest``'s blob, resumable across attempts."""
        return self.blob_path(digest).with_name(self.blob_path(digest).name + "-partial")

    def private_partial(self, digest: str) -> Path:
        """A temporary name for one writer of ``digest``'s blob: two writers of one blob
        at once (two creates from one file, two uploads) must never share a file."""
        name = self.blob_path(digest).name
        return self.blobs_dir / f"{name}-{uuid.uuid4().hex}-partial"

    def commit_partial(self, digest: str, partial: Path | None = None) -> None:
        """Verify a fully written partial blob (``partial_path`` unless named) and move it
        into place, or delete it."""
        partial = partial or self.partial_path(digest)
        actual = file_digest(partial)
        if actual != digest:
            partial.unlink()
            raise InvalidRequest(f"digest mismatch: expected {digest}, got {actual}")
        fsync_replace(partial, self.blob_path(digest))

    def add_bytes(self, data: bytes, media_type: str) -> Layer:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if not self.has_blob(digest):
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            partial = self.private_partial(digest)
            partial.write_bytes(data)
            self.commit_partial(digest, partial)
        return Layer(media_type, digest, len(data))

    def add_file(self, source: Path, media_type: str) -> Layer:
        """Import a file as a blob: a hard link where possible, else a copy."""
        digest = file_digest(source)
        size = source.stat().st_size
        if not self.has_blob(digest):
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            partial = self.private_partial(digest)
            try:
                os.link(source, partial)
            except OSError:
                shutil.copyfile(source, partial)
            self.commit_partial(digest, partial)
            # Renamed onto a blob linked from the same source by another writer, it named
            # the same file: rename(2) then succeeds and does nothing, leaving it behind.
            partial.unlink(missing_ok=True)
        return Layer(media_type, digest, size)

    def text(self, layer: Layer) -> str:
        return self.blob_path(layer.digest).read_text(encoding="utf-8")

    def json(self, layer: Layer) -> Any:
        return json.loads(self.blob_path(layer.digest).read_bytes())

    # -- manifests ---------------------------------------------------------

    def manifest_path(self, name: str) -> Path:
        model, _, tag = name.partition(":")
        return self.manifests_dir / model / (tag or "latest")

    def write_manifest(self, name: str, manifest: Manifest) -> None:
        self.write_manifest_bytes(name, manifest.to_bytes())

    def write_manifest_bytes(self, name: str, raw: bytes) -> Manifest:
        """Atomically write a manifest's exact bytes (a pulled one keeps its digest).

        Refuses one naming a missing blob. The temporary name is unique per writer.
        """
        manifest = Manifest.from_bytes(raw)
        missing = [layer.digest for layer in manifest.blobs() if not self.has_blob(layer.digest)]
        if missing:
            raise InvalidRequest(f"manifest for {name} names missing blobs: {', '.join(missing)}")
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(raw)
            fsync_replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return manifest

    def read_manifest(self, name: str) -> Manifest | None:
        try:
            return Manifest.from_bytes(self.manifest_path(name).read_bytes())
        except (OSError, InvalidRequest):
            return None

    def names(self) -> Iterator[str]:
        if not self.manifests_dir.is_dir():
            return
        for path in sorted(self.manifests_dir.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                model = path.parent.relative_to(self.manifests_dir).as_posix()
                yield f"{model}:{path.name}"

    def delete(self, name: str) -> bool:
        """Remove a manifest and every blob no other manifest uses."""
        path = self.manifest_path(name)
        if not path.is_file():
            return False
        path.unlink()
        self.collect_garbage()
        return True

    def collect_garbage(self) -> None:
        """Delete blobs no manifest uses, sparing fresh uploads not yet in a manifest."""
        used: set[str] = set()
        for other in self.names():
            manifest = self.read_manifest(other)
            if manifest is not None:
                used.update(layer.digest.replace(":", "-") for layer in manifest.blobs())
        if self.blobs_dir.is_dir():
            for blob in self.blobs_dir.iterdir():
                fresh = time.time() - blob.stat().st_mtime < UPLOAD_GRACE_SECONDS
                if blob.name not in used and not blob.name.endswith("-partial") and not fresh:
                    blob.unlink()
