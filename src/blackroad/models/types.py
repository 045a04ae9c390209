"""The contract of ``models/``: what the rest of BlackRoad knows about a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

ModelSource = Literal["bundled", "directory", "added", "store"]


@dataclass(frozen=True)
class GGUFMetadata:
    """The facts read from a GGUF file's header that BlackRoad uses."""

    architecture: str
    general_name: str | None
    parameter_count: int
    quantization: str
    context_length: int
    embedding_length: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    # llama.cpp's pooling enum, when the file declares one (embedding models do).
    pooling_type: int | None

    @property
    def embedding_only(self) -> bool:
        """An embedding model, which generates no text: it declares a pooling (Ollama's test)."""
        return self.pooling_type is not None

    @property
    def parameter_size(self) -> str:
        """Human size label as Ollama prints it, e.g. ``268.10M``."""
        count = float(self.parameter_count)
        for unit in ("", "K", "M", "B", "T"):
            if count < 1000 or unit == "T":
                return f"{count:.2f}{unit}" if unit else str(int(count))
            count /= 1000
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class ModelConfig:
    """What a Modelfile adds to a GGUF file (Ollama's TEMPLATE, SYSTEM, PARAMETER...)."""

    template: str | None = None  # a Jinja chat template replacing the GGUF's own
    system: str | None = None  # default system message
    parameters: Mapping[str, Any] = field(default_factory=dict)  # default options
    messages: tuple[Mapping[str, str], ...] = ()  # conversation prepended to every chat
    license: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """One model the catalog can serve, under its Ollama-style ``name:tag``."""

    name: str
    path: Path
    source: ModelSource
    size: int
    modified_at: datetime
    metadata: GGUFMetadata
    config: ModelConfig = field(default_factory=ModelConfig)
    digest: str | None = None  # of the manifest, for models in the store

    @property
    def family(self) -> str:
        return self.metadata.architecture
