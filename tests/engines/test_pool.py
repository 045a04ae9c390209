"""The engine pool: one engine per model name, replaced when the name moves to another file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from blackroad.engines.llamacpp import LlamaCppOptions
from blackroad.engines.pool import EnginePool
from blackroad.models.bundled import bundled_models
from blackroad.models.metadata import read_metadata
from blackroad.models.types import ModelEntry
from tests.conftest import GEMMA3, SMOLLM2

pytestmark = pytest.mark.anyio
MODIFIED = datetime(2026, 1, 1, tzinfo=UTC)


def entry(name: str, model: str) -> ModelEntry:
    path = bundled_models()[model]
    return ModelEntry(name, path, "added", 0, MODIFIED, read_metadata(path))


async def test_same_name_same_engine_new_file_new_engine() -> None:
    pool = EnginePool(LlamaCppOptions(2048, 2, 512, 4, 1), max_loaded=2, max_memory=1 << 40)
    first = pool.get(entry("mine:latest", SMOLLM2))
    await first.load()
    assert pool.get(entry("mine:latest", SMOLLM2)) is first

    second = pool.get(entry("mine:latest", GEMMA3))
    assert second is not first
    await pool.close()
    assert not first.health().loaded
    assert first._executor._shutdown  # the old engine's worker thread is gone
