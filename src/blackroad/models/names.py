"""Ollama-style model names: ``name:tag``, with ``latest`` as the default tag."""

from __future__ import annotations

import re

from blackroad.errors import InvalidRequest

# Path segments (``team/model``) each start with a letter or digit, so a name
# never holds ``..`` or an empty segment: names become paths in the model store.
_SEGMENT = r"[a-z0-9][a-z0-9._-]{0,63}"
_NAME = re.compile(rf"^{_SEGMENT}(/{_SEGMENT}){{0,3}}(:[a-z0-9][a-z0-9._-]{{0,127}})?$")


def normalize(name: str) -> str:
    """Canonical form of a model name: lower case, with an explicit tag."""
    name = name.strip().lower()
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidRequest(f"invalid model name {name!r}", param="model")
    return name if ":" in name else f"{name}:latest"


def from_filename(stem: str) -> str:
    """The name a GGUF file dropped into the models directory appears under."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"
    return f"{cleaned}:latest"
