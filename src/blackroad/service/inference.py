"""Inference on this node: resolve a model name to a ready engine.

On one machine the fleet is a fleet of one; this is the seam where the
fleet router will choose among nodes. The API layer asks here and never
touches the catalog or the engine pool directly.
"""

from __future__ import annotations

import asyncio

from blackroad.engines.base import Engine
from blackroad.engines.pool import EnginePool
from blackroad.models.catalog import Catalog
from blackroad.models.types import ModelEntry


class Inference:
    def __init__(self, catalog: Catalog, pool: EnginePool) -> None:
        self.catalog = catalog
        self.pool = pool

    async def models(self) -> list[ModelEntry]:
        # The catalog stats files and reads GGUF headers: keep it off the event loop.
        return await asyncio.to_thread(self.catalog.list)

    async def model(self, name: str) -> ModelEntry:
        return await asyncio.to_thread(self.catalog.get, name)

    async def engine(self, name: str) -> Engine:
        return self.pool.get(await self.model(name))

    async def close(self) -> None:
        await self.pool.close()
