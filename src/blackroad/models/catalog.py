"""The catalog: every model this node can serve, by name.

Three sources, in order of precedence: models added by name
(``blackroad models add``), GGUF files dropped into ``$BLACKROAD_HOME/models``,
and the bundled models. The catalog is re-read on every call (a directory
listing and a few ``stat`` calls; GGUF headers are cached), so a file dropped
into the directory appears without a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from blackroad.errors import InvalidRequest, ModelNotFound
from blackroad.models import names
from blackroad.models.bundled import bundled_models
from blackroad.models.metadata import read_metadata
from blackroad.models.types import ModelEntry, ModelSource
from blackroad.store.database import Database


class Catalog:
    def __init__(self, models_dir: Path, database: Database) -> None:
        self.models_dir = models_dir
        self.database = database
        models_dir.mkdir(parents=True, exist_ok=True)

    def _paths(self) -> dict[str, tuple[Path, ModelSource]]:
        found: dict[str, tuple[Path, ModelSource]] = {
            name: (path, "bundled") for name, path in bundled_models().items()
        }
        for path in sorted(self.models_dir.glob("*.gguf")):
            found[names.from_filename(path.stem)] = (path, "directory")
        for added in self.database.added_models():
            found[added.name] = (Path(added.path), "added")
        return found

    def _entry(self, name: str, path: Path, source: ModelSource) -> ModelEntry | None:
        try:
            stat = path.stat()
            metadata = read_metadata(path)
        except (OSError, InvalidRequest):
            return None  # a vanished or broken file is not servable; skip it
        return ModelEntry(
            name=name,
            path=path,
            source=source,
            size=stat.st_size,
            modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
            metadata=metadata,
        )

    def list(self) -> list[ModelEntry]:
        entries = (self._entry(name, *where) for name, where in self._paths().items())
        return sorted((e for e in entries if e is not None), key=lambda e: e.name)

    def get(self, name: str) -> ModelEntry:
        try:
            canonical = names.normalize(name)
        except InvalidRequest:
            raise ModelNotFound(name) from None
        where = self._paths().get(canonical)
        entry = None if where is None else self._entry(canonical, *where)
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
