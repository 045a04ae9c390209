"""The catalog: every model this node can serve, by name.

Four sources; a later one wins a name clash: the bundled models, GGUF files
dropped into ``$BLACKROAD_HOME/models``, files added by name (``blackroad
models add``), and the model store (models pulled, created or copied, with
their Modelfile settings). The catalog is re-read on every call (a directory
listing and a few ``stat`` calls; GGUF headers are cached), so a file dropped
into the directory appears without a restart. Looking up one name reads only
what could hold that name (its manifest, not every one): every request for a
model only peers serve misses here first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from blackroad.errors import InvalidRequest, ModelNotFound
from blackroad.models import names
from blackroad.models.bundled import bundled_model, bundled_models
from blackroad.models.metadata import read_metadata
from blackroad.models.store import (
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Manifest,
    ModelStore,
)
from blackroad.models.types import ModelConfig, ModelEntry, ModelSource
from blackroad.store.database import Database


@dataclass(frozen=True)
class _Location:
    path: Path
    source: ModelSource
    config: ModelConfig = field(default_factory=ModelConfig)
    digest: str | None = None


class Catalog:
    def __init__(self, models_dir: Path, database: Database) -> None:
        self.models_dir = models_dir
        self.database = database
        self.store = ModelStore(models_dir)
        models_dir.mkdir(parents=True, exist_ok=True)

    def _from_manifest(self, raw: bytes, manifest: Manifest) -> _Location | None:
        model = manifest.layer(MEDIA_MODEL)
        if model is None:
            return None
        store = self.store

        def text(media_type: str) -> str | None:
            layer = manifest.layer(media_type)
            return None if layer is None else store.text(layer)

        params, messages = manifest.layer(MEDIA_PARAMS), manifest.layer(MEDIA_MESSAGES)
        config = ModelConfig(
            template=text(MEDIA_TEMPLATE),
            system=text(MEDIA_SYSTEM),
            parameters=store.json(params) if params else {},
            messages=tuple(store.json(messages)) if messages else (),
            license=tuple(
                store.text(layer) for layer in manifest.layers if layer.media_type == MEDIA_LICENSE
            ),
        )
        digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
        return _Location(store.blob_path(model.digest), "store", config, digest)

    def _locations(self) -> dict[str, _Location]:
        found = {name: _Location(path, "bundled") for name, path in bundled_models().items()}
        for path in sorted(self.models_dir.glob("*.gguf")):
            found[names.from_filename(path.stem)] = _Location(path, "directory")
        for name, added_path in self.database.added_models():
            found[name] = _Location(Path(added_path), "added")
        for name in self.store.names():
            try:
                raw = self.store.manifest_path(name).read_bytes()
                location = self._from_manifest(raw, Manifest.from_bytes(raw))
            except (OSError, ValueError, InvalidRequest):
                continue  # a manifest being replaced or broken is not servable
            if location is not None:
                found[name] = location
        return found

    def _location(self, name: str) -> _Location | None:
        """``_locations().get(name)``, from the sources in reverse order (a later one wins)."""
        try:
            raw = self.store.manifest_path(name).read_bytes()
            location = self._from_manifest(raw, Manifest.from_bytes(raw))
        except (OSError, ValueError, InvalidRequest):
            location = None  # none, or being replaced, or broken: not servable from the store
        if location is not None:
            return location
        for added, added_path in self.database.added_models():
            if added == name:
                return _Location(Path(added_path), "added")
        dropped = [p for p in self.models_dir.glob("*.gguf") if names.from_filename(p.stem) == name]
        if dropped:
            return _Location(max(dropped), "directory")  # the last in the listing's order
        bundled = bundled_model(name)
        return None if bundled is None else _Location(bundled, "bundled")

    def _entry(self, name: str, where: _Location) -> ModelEntry | None:
        try:
            stat = where.path.stat()
            metadata = read_metadata(where.path)
        except (OSError, InvalidRequest):
            return None  # a vanished or broken file is not servable; skip it
        return ModelEntry(
            name=name,
            path=where.path,
            source=where.source,
            size=stat.st_size,
            modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
            metadata=metadata,
            config=where.config,
            digest=where.digest,
        )

    def list(self) -> list[ModelEntry]:
        entries = (self._entry(name, where) for name, where in self._locations().items())
        return sorted((e for e in entries if e is not None), key=lambda e: e.name)

    def get(self, name: str) -> ModelEntry:
        try:
            canonical = names.normalize(name)
        except InvalidRequest:
            raise ModelNotFound(name) from None
        where = self._location(canonical)
        entry = None if where is None else self._entry(canonical, where)
        if entry is None:
            raise ModelNotFound(name)
        return entry

    def add(self, path: Path, name: str | None = None) -> ModelEntry:
        """Register a GGUF file under ``name`` (default: from its file name)."""
        path = path.expanduser().resolve()
        if not path.is_file():
            raise InvalidRequest(f"{path} is not a file", param="path")
        canonical = names.normalize(name) if name else names.from_filename(path.stem)
        read_metadata(path)  # refuse anything that is not a GGUF before recording it
        self.database.add_model(canonical, path)
        return self.get(canonical)
