"""Inference on this node: from a model name and a request to a running engine.

On one machine the fleet is a fleet of one; this is the seam where the fleet
router will choose among nodes. Here a model's Modelfile settings meet the
request (default system message and conversation, default parameters), the
engine pool makes room for the model, and every request's end is reported
back for keep-alive. The API layer asks here and never touches the catalog
or the pool directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from blackroad.engines.base import OLLAMA_SAMPLING, Chunk, Message, SamplingParams
from blackroad.engines.llamacpp import LlamaCppEngine
from blackroad.engines.pool import EnginePool
from blackroad.errors import Forbidden, InvalidRequest
from blackroad.identity.types import Principal
from blackroad.models.catalog import Catalog
from blackroad.models.types import ModelEntry


def sampling_from_ollama(options: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama options to ``SamplingParams`` fields; num_predict < 0 means no limit."""
    fields = {OLLAMA_SAMPLING[k]: v for k, v in options.items() if k in OLLAMA_SAMPLING}
    if isinstance(fields.get("max_tokens"), int) and fields["max_tokens"] < 0:
        del fields["max_tokens"]
    if isinstance(fields.get("stop"), str):
        fields["stop"] = [fields["stop"]]
    return fields


class Inference:
    def __init__(self, catalog: Catalog, pool: EnginePool) -> None:
        self.catalog = catalog
        self.pool = pool

    async def models(self, caller: Principal) -> list[ModelEntry]:
        """The models ``caller`` may use."""
        # The catalog stats files and reads GGUF headers: keep it off the event loop.
        entries = await asyncio.to_thread(self.catalog.list)
        return [entry for entry in entries if caller.may_use(entry.name)]

    async def catalog_names(self) -> list[str]:
        """Every model this node serves, whoever asks."""
        return [entry.name for entry in await asyncio.to_thread(self.catalog.list)]

    async def model(self, name: str, caller: Principal) -> ModelEntry:
        entry = await asyncio.to_thread(self.catalog.get, name)
        if not caller.may_use(entry.name):
            raise Forbidden(f"this API key may not use the model '{entry.name}'")
        return entry

    async def engine(
        self,
        name: str,
        caller: Principal,
        n_ctx: int | None = None,
        n_threads: int | None = None,
    ) -> LlamaCppEngine:
        """The model's engine, with room made for it among the loaded models."""
        engine = self.pool.get(await self.model(name, caller), n_ctx, n_threads)
        await self.pool.make_room(engine)
        return engine

    @staticmethod
    def sampling(entry: ModelEntry, request: Mapping[str, Any]) -> SamplingParams:
        """Defaults, then the model's Modelfile parameters, then the request's own."""
        fields = {**sampling_from_ollama(entry.config.parameters), **request}
        if "stop" in fields:
            fields["stop"] = tuple(fields["stop"])
        try:
            return SamplingParams(**fields)
        except TypeError as exc:  # a Modelfile parameter of the wrong type
            raise InvalidRequest(f"invalid parameters for {entry.name}: {exc}") from exc

    @staticmethod
    def conversation(entry: ModelEntry, messages: Sequence[Message]) -> list[Message]:
        """The model's default system message and Modelfile messages, then the request's."""
        has_system = any(m.get("role") == "system" for m in messages)
        head: list[Message] = []
        if entry.config.system and not has_system:
            head.append({"role": "system", "content": entry.config.system})
        return [*head, *entry.config.messages, *messages]

    async def held(
        self, engine: LlamaCppEngine, stream: AsyncIterator[Chunk], keep_alive: float | None
    ) -> AsyncIterator[Chunk]:
        """Pass a stream through, then start the model's keep-alive when it ends."""
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await self.pool.finished(engine, keep_alive)

    async def release(self, engine: LlamaCppEngine, keep_alive: float | None) -> None:
        await self.pool.finished(engine, keep_alive)

    async def close(self) -> None:
        await self.pool.close()
