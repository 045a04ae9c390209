"""Managing models: create (from a GGUF, an uploaded blob or another model), copy, delete.

Every model made here lands in the model store as a manifest over
sha256-named blobs, so it is listed by both APIs at once and can be pushed
to a registry. Progress is reported as Ollama's status objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from blackroad.errors import InvalidRequest
from blackroad.models import names
from blackroad.models.catalog import Catalog
from blackroad.models.metadata import read_metadata
from blackroad.models.modelfile import Modelfile, parameter_value
from blackroad.models.store import (
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
)
from blackroad.models.templates import ChatTemplate
from blackroad.models.types import ModelEntry

Progress = Iterator[dict[str, Any]]


class ModelManager:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.store = catalog.store

    def _import(self, entry: ModelEntry) -> Layer:
        """The model layer of ``entry``, importing its file into the store if needed."""
        if entry.source == "store":
            manifest = self.store.read_manifest(entry.name)
            layer = manifest.layer(MEDIA_MODEL) if manifest else None
            if layer is not None:
                return layer
        return self.store.add_file(entry.path, MEDIA_MODEL)

    def _base(self, spec: Modelfile, files: Mapping[str, str] | None) -> tuple[Layer, Modelfile]:
        """The GGUF layer to build on, and the settings inherited from a base model."""
        if files:
            ggufs = [digest for filename, digest in files.items() if filename.endswith(".gguf")]
            if len(ggufs) != 1:
                raise InvalidRequest("files must name exactly one .gguf blob", param="files")
            if not self.store.has_blob(ggufs[0]):
                raise InvalidRequest(f"blob {ggufs[0]} not found; upload it first", param="files")
            layer = Layer(MEDIA_MODEL, ggufs[0], self.store.blob_path(ggufs[0]).stat().st_size)
            read_metadata(self.store.blob_path(ggufs[0]))  # must be a GGUF
            return layer, Modelfile()
        if spec.base is None:
            raise InvalidRequest("nothing to create from: give 'from' or 'files'", param="from")
        path = Path(spec.base).expanduser()
        if path.is_absolute() or spec.base.startswith("."):
            if not path.is_file():
                raise InvalidRequest(f"no such file: {spec.base}", param="from")
            read_metadata(path)
            return self.store.add_file(path, MEDIA_MODEL), Modelfile()
        entry = self.catalog.get(spec.base)
        inherited = Modelfile(
            template=entry.config.template,
            system=entry.config.system,
            parameters=dict(entry.config.parameters),
            messages=[dict(m) for m in entry.config.messages],
            license=list(entry.config.license),
        )
        return self._import(entry), inherited

    def create(
        self, name: str, spec: Modelfile, files: Mapping[str, str] | None = None
    ) -> Progress:
        """Create ``name``; everything is checked before the first status is reported."""
        canonical = names.normalize(name)
        model, inherited = self._base(spec, files)
        parameters = {**inherited.parameters}
        for key, value in spec.parameters.items():
            parameters[key] = (
                [parameter_value(key, v) for v in value]
                if isinstance(value, list)
                else parameter_value(key, value)
            )
        template = spec.template or inherited.template
        if template:
            metadata = read_metadata(self.store.blob_path(model.digest))
            # Render once now, so a broken template fails the create, not every chat.
            ChatTemplate.for_model(metadata, template).render([{"role": "user", "content": "hi"}])
        merged = Modelfile(
            parameters=parameters,
            template=template,
            system=spec.system or inherited.system,
            messages=spec.messages or inherited.messages,
            license=spec.license or inherited.license,
        )
        return self._write(canonical, model, merged)

    def _write(self, name: str, model: Layer, spec: Modelfile) -> Progress:
        yield {"status": "parsing modelfile"}
        yield {"status": f"using existing layer {model.digest}"}
        layers = [model]
        for media_type, text in ((MEDIA_TEMPLATE, spec.template), (MEDIA_SYSTEM, spec.system)):
            if text:
                layers.append(self.store.add_bytes(text.encode(), media_type))
        if spec.parameters:
            params = json.dumps(spec.parameters).encode()
            layers.append(self.store.add_bytes(params, MEDIA_PARAMS))
        if spec.messages:
            messages = json.dumps(spec.messages).encode()
            layers.append(self.store.add_bytes(messages, MEDIA_MESSAGES))
        for text in spec.license:
            layers.append(self.store.add_bytes(text.encode(), MEDIA_LICENSE))
        for layer in layers[1:]:
            yield {"status": f"creating new layer {layer.digest}"}
        config = self._config(model)
        yield {"status": "writing manifest"}
        self.store.write_manifest(name, Manifest(config, tuple(layers)))
        yield {"status": "success"}

    def _config(self, model: Layer) -> Layer:
        metadata = read_metadata(self.store.blob_path(model.digest))
        config = {
            "model_format": "gguf",
            "model_family": metadata.architecture,
            "model_families": [metadata.architecture],
            "model_type": metadata.parameter_size,
            "file_type": metadata.quantization,
            # BlackRoad's own: what the fleet needs to estimate a model's
            # memory on a node before the node has the file (fleet/placement.py).
            "blackroad.embedding_length": metadata.embedding_length,
        }
        return self.store.add_bytes(json.dumps(config).encode(), MEDIA_CONFIG)

    def copy(self, source: str, destination: str) -> None:
        entry = self.catalog.get(source)
        target = names.normalize(destination)
        manifest = self.store.read_manifest(entry.name) if entry.source == "store" else None
        if manifest is None:
            model = self._import(entry)
            manifest = Manifest(self._config(model), (model,))
        self.store.write_manifest(target, manifest)

    def delete(self, name: str) -> None:
        entry = self.catalog.get(name)
        if entry.source == "store":
            self.store.delete(entry.name)
        elif entry.source == "added":
            self.catalog.database.remove_added_model(entry.name)
        elif entry.source == "directory":
            entry.path.unlink()
        else:
            raise InvalidRequest(f"{entry.name} is a bundled model and cannot be deleted")
