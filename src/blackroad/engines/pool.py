"""The engines of this node, one per model, created on first use."""

from __future__ import annotations

import asyncio

from blackroad.engines.llamacpp import LlamaCppEngine, LlamaCppOptions
from blackroad.models.types import ModelEntry


class EnginePool:
    def __init__(self, options: LlamaCppOptions) -> None:
        self.options = options
        self._engines: dict[str, LlamaCppEngine] = {}

    def get(self, entry: ModelEntry) -> LlamaCppEngine:
        engine = self._engines.get(entry.name)
        if engine is None or engine.entry.path != entry.path:
            # A name now pointing at another file gets a fresh engine; the old
            # one is left to finish its running job and be collected.
            engine = self._engines[entry.name] = LlamaCppEngine(entry, self.options)
        return engine

    def engines(self) -> list[LlamaCppEngine]:
        return list(self._engines.values())

    async def close(self) -> None:
        await asyncio.gather(*(engine.unload() for engine in self._engines.values()))
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
