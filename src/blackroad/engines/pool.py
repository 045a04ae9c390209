"""The engines of this node, one per model, created on first use."""

from __future__ import annotations

import asyncio

from blackroad.engines.llamacpp import LlamaCppEngine, LlamaCppOptions
from blackroad.models.types import ModelEntry


class EnginePool:
    def __init__(self, options: LlamaCppOptions) -> None:
        self.options = options
        self._engines: dict[str, LlamaCppEngine] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def get(self, entry: ModelEntry) -> LlamaCppEngine:
        """The engine for ``entry``; a name now pointing at another file gets a new one."""
        engine = self._engines.get(entry.name)
        if engine is not None and engine.entry.path == entry.path:
            return engine
        if engine is not None:
            task = asyncio.get_running_loop().create_task(self._shut(engine))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        engine = self._engines[entry.name] = LlamaCppEngine(entry, self.options)
        return engine

    @staticmethod
    async def _shut(engine: LlamaCppEngine) -> None:
        # unload() waits its turn behind running jobs, so they finish first.
        await engine.unload()
        await asyncio.to_thread(engine.close)

    async def close(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        await asyncio.gather(*self._retiring, *(self._shut(e) for e in engines))
