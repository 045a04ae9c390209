"""The engines of this node, one per model, and which of them stay loaded.

Model lifecycle, as Ollama defines it: after each request a model stays
loaded for its ``keep_alive`` (default 5 minutes; 0 unloads at once; a
negative value keeps it forever). Before a model loads, idle models are
evicted least recently used first while more than ``max_loaded`` would be
loaded or their memory would exceed ``max_memory`` bytes. A reaper task
unloads models whose keep-alive has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, replace

from blackroad.engines.base import EngineHealth
from blackroad.engines.llamacpp import LlamaCppEngine, LlamaCppOptions
from blackroad.errors import ServiceUnavailable
from blackroad.models.types import ModelEntry

DEFAULT_KEEP_ALIVE = 300.0


@dataclass
class _Residency:
    last_used: float = 0.0
    expires_at: float = 0.0  # wall-clock time.time(); inf keeps it forever


class EnginePool:
    def __init__(self, options: LlamaCppOptions, max_loaded: int, max_memory: int) -> None:
        self.options = options
        self.max_loaded = max_loaded
        self.max_memory = max_memory
        self._engines: dict[str, LlamaCppEngine] = {}
        self._residency: dict[str, _Residency] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    def _retire(self, engine: LlamaCppEngine) -> None:
        task = asyncio.get_running_loop().create_task(self._shut(engine))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def get(
        self, entry: ModelEntry, n_ctx: int | None = None, n_threads: int | None = None
    ) -> LlamaCppEngine:
        """The engine for ``entry``; a new one if its file, context or threads changed."""
        options = replace(
            self.options,
            n_ctx=n_ctx or self.options.n_ctx,
            n_threads=n_threads or self.options.n_threads,
        )
        engine = self._engines.get(entry.name)
        if engine is not None and engine.entry == entry and engine.options == options:
            return engine
        if engine is not None:
            self._retire(engine)
        engine = self._engines[entry.name] = LlamaCppEngine(entry, options)
        self._residency[entry.name] = _Residency()
        return engine

    def loaded(self) -> list[tuple[LlamaCppEngine, float]]:
        """Loaded engines and when each expires (``inf``: never)."""
        return [
            (engine, self._residency[name].expires_at)
            for name, engine in self._engines.items()
            if engine.loaded
        ]

    def health(self) -> list[EngineHealth]:
        """The state of each model's engine (loaded or not, busy, requests waiting)."""
        return [engine.health() for engine in self._engines.values()]

    async def make_room(self, engine: LlamaCppEngine) -> None:
        """Evict idle models, least recently used first, so ``engine`` fits.

        The model counts as used from now, with the default keep-alive until
        its request reports its own: a request that fails still lets it go.
        """
        residency = self._residency[engine.model]
        residency.last_used = time.monotonic()
        residency.expires_at = max(residency.expires_at, time.time() + DEFAULT_KEEP_ALIVE)
        if engine.loaded:
            return
        others = sorted(
            (e for e, _ in self.loaded() if e is not engine),
            key=lambda e: self._residency[e.model].last_used,
        )
        count = len(others) + 1
        memory = sum(e.memory_bytes for e in others) + engine.memory_bytes
        for victim in others:
            if count <= self.max_loaded and memory <= self.max_memory:
                return
            if victim.idle:
                freed = victim.memory_bytes
                await victim.unload()
                count -= 1
                memory -= freed
        if count > self.max_loaded:
            raise ServiceUnavailable(
                f"{count - 1} models are loaded and busy (limit {self.max_loaded}); retry later"
            )

    async def finished(self, engine: LlamaCppEngine, keep_alive: float | None) -> None:
        """Record a request's end; unload now if its keep_alive is 0."""
        keep = DEFAULT_KEEP_ALIVE if keep_alive is None else keep_alive
        residency = self._residency.get(engine.model)
        if residency is None or self._engines.get(engine.model) is not engine:
            return  # replaced meanwhile
        residency.last_used = time.monotonic()
        residency.expires_at = math.inf if keep < 0 else time.time() + keep
        if keep == 0:
            await engine.unload()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1)
            now = time.time()
            for engine, expires_at in self.loaded():
                if expires_at <= now and engine.idle:
                    await engine.unload()

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    @staticmethod
    async def _shut(engine: LlamaCppEngine) -> None:
        # unload() waits its turn behind running jobs, so they finish first.
        await engine.unload()
        await asyncio.to_thread(engine.close)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        engines, self._engines = list(self._engines.values()), {}
        await asyncio.gather(*self._retiring, *(self._shut(e) for e in engines))
