"""Inference on the fleet: from a model name and a request to tokens from some node.

Here a model's Modelfile settings meet the request (default system message
and conversation, default parameters), and the request becomes a fleet
``Job`` that the router runs on whichever node serves the model: this
machine's engine pool when its catalog has the model, a peer otherwise or
as well. The API layer asks here and never touches the catalog, the pool or
the router directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blackroad.engines.base import OLLAMA_SAMPLING, Chunk, Embeddings, Message, SamplingParams
from blackroad.engines.llamacpp import sequence_context
from blackroad.engines.pool import EnginePool
from blackroad.errors import Forbidden, InvalidRequest, ModelNotFound
from blackroad.fleet.members import Job, RemoteMember
from blackroad.fleet.router import Router
from blackroad.identity.types import LOCAL_ADMIN, Principal
from blackroad.models import names
from blackroad.models.catalog import Catalog
from blackroad.models.types import ModelConfig, ModelEntry


def sampling_from_ollama(options: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama options to ``SamplingParams`` fields; num_predict < 0 means no limit."""
    fields = {OLLAMA_SAMPLING[k]: v for k, v in options.items() if k in OLLAMA_SAMPLING}
    if isinstance(fields.get("max_tokens"), int) and fields["max_tokens"] < 0:
        del fields["max_tokens"]
    if isinstance(fields.get("stop"), str):
        fields["stop"] = [fields["stop"]]
    return fields


def affinity_of(model: str, messages: Sequence[Message] | None, prompt: str | None) -> str:
    """What the requests of one conversation share: its opening, up to the first user turn.

    The second turn of a chat repeats the first, so both map to the node
    whose KV cache holds that prefix.
    """
    if messages is not None:
        opening: list[Message] = []
        for message in messages:
            opening.append(message)
            if message.get("role") == "user":
                break
        head = json.dumps([model, opening], sort_keys=True, default=str)
    else:
        head = json.dumps([model, (prompt or "")[:2048]])
    return hashlib.blake2b(head.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class ModelRef:
    """A model as a request names it: in this node's catalog, or only on peers."""

    name: str
    entry: ModelEntry | None
    local_only: bool = False

    @property
    def config(self) -> ModelConfig:
        return ModelConfig() if self.entry is None else self.entry.config


class Inference:
    def __init__(self, catalog: Catalog, pool: EnginePool, router: Router) -> None:
        self.catalog = catalog
        self.pool = pool
        self.router = router

    async def models(self, caller: Principal) -> list[ModelEntry]:
        """The models of this node's catalog that ``caller`` may use."""
        # The catalog stats files and reads GGUF headers: keep it off the event loop.
        entries = await asyncio.to_thread(self.catalog.list)
        return [entry for entry in entries if caller.may_use(entry.name)]

    def peer_models(self, caller: Principal, exclude: Sequence[str] = ()) -> list[str]:
        """Models only peers serve (not among ``exclude``) that ``caller`` may use."""
        return sorted(m for m in self._peer_models() - set(exclude) if caller.may_use(m))

    def _peer_models(self) -> set[str]:
        return {
            model
            for target in self.router.targets.values()
            if isinstance(target.member, RemoteMember)
            for model in target.member.models
        }

    async def catalog_names(self) -> list[str]:
        """Every model this node serves, whoever asks."""
        return [entry.name for entry in await asyncio.to_thread(self.catalog.list)]

    async def model(self, name: str, caller: Principal) -> ModelEntry:
        """A model of this node's catalog, if ``caller`` may use it."""
        entry = await asyncio.to_thread(self.catalog.get, name)
        self._check(entry.name, caller)
        return entry

    @staticmethod
    def _check(name: str, caller: Principal) -> None:
        if not caller.may_use(name):
            raise Forbidden(f"this API key may not use the model '{name}'")

    async def resolve(self, name: str, caller: Principal, forwarded: bool = False) -> ModelRef:
        """The model ``name``, here or on a peer; 404 when no node has it, 403 if not allowed.

        A request ``forwarded`` by another node's router is served here or not at all.
        """
        try:
            return ModelRef(name, await self.model(name, caller), local_only=forwarded)
        except ModelNotFound:
            if forwarded:
                raise
        served = self._peer_models()
        for candidate in (name, _normalized(name)):
            if candidate in served:
                self._check(candidate, caller)
                return ModelRef(candidate, None)
        raise ModelNotFound(name)

    @staticmethod
    def sampling(model: ModelRef, request: Mapping[str, Any]) -> SamplingParams:
        """Defaults, then the model's Modelfile parameters, then the request's own."""
        fields = {**sampling_from_ollama(model.config.parameters), **request}
        if "stop" in fields:
            fields["stop"] = tuple(fields["stop"])
        try:
            return SamplingParams(**fields)
        except TypeError as exc:  # a Modelfile parameter of the wrong type
            raise InvalidRequest(f"invalid parameters for {model.name}: {exc}") from exc

    @staticmethod
    def conversation(model: ModelRef, messages: Sequence[Message]) -> list[Message]:
        """The model's default system message and Modelfile messages, then the request's."""
        config = model.config
        has_system = any(m.get("role") == "system" for m in messages)
        head: list[Message] = []
        if config.system and not has_system:
            head.append({"role": "system", "content": config.system})
        return [*head, *config.messages, *messages]

    def generate(
        self,
        model: ModelRef,
        params: SamplingParams,
        *,
        messages: Sequence[Message] | None = None,
        prompt: str | None = None,
        suffix: str | None = None,
        template: str | None = None,
        continue_final: bool = False,
        truncate: bool = False,
        keep_alive: float | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        on_node: Callable[[str], None] | None = None,
    ) -> AsyncIterator[Chunk]:
        """Stream a chat reply (``messages``), a raw continuation (``prompt``) or an infill
        (``prompt`` and ``suffix``) from the fleet."""
        if model.entry is not None and model.entry.metadata.embedding_only:
            # Ollama's words, refused before any node makes room for the model.
            raise InvalidRequest(
                f'"{model.name}" does not support generate: it is an embedding model '
                "(use /v1/embeddings or /api/embed)",
                param="model",
            )
        job = Job(
            model.name,
            params,
            entry=model.entry,
            local_only=model.local_only,
            messages=messages,
            prompt=prompt,
            suffix=suffix,
            template=template,
            continue_final=continue_final,
            truncate=truncate,
            keep_alive=keep_alive,
            n_ctx=n_ctx,
            n_threads=n_threads,
            affinity=affinity_of(model.name, messages, prompt),
            on_node=on_node,
        )
        return self.router.stream(job)

    async def embed(
        self,
        model: ModelRef,
        inputs: Sequence[str],
        truncate: bool = False,
        keep_alive: float | None = None,
        on_node: Callable[[str], None] | None = None,
    ) -> Embeddings:
        job = Job(model.name, SamplingParams(), entry=model.entry, local_only=model.local_only,
                  keep_alive=keep_alive, on_node=on_node)  # fmt: skip
        return await self.router.on_any(job, lambda engine: engine.embed(inputs, truncate))

    def window(self, model: ModelRef) -> int:
        """The context, in tokens, one of ``model``'s sequences has (as configured on this node)."""
        configured = self.pool.options.n_ctx
        if model.entry is None:
            return configured  # a peer's: assume it is configured like this node
        return sequence_context(configured, model.entry)

    async def vectors(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embeddings of ``texts`` by ``model``, asked by the server itself (memory/).

        No caller's allowlist applies: whoever chose the model for a knowledge
        base or a memory store was checked when they chose it.
        """
        ref = await self.resolve(model, LOCAL_ADMIN)
        return (await self.embed(ref, texts, truncate=True)).vectors

    async def load(
        self,
        model: ModelRef,
        keep_alive: float | None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
    ) -> None:
        """Load the model on a node that serves it (Ollama's empty prompt)."""
        job = Job(model.name, SamplingParams(), entry=model.entry, local_only=model.local_only,
                  keep_alive=keep_alive, n_ctx=n_ctx, n_threads=n_threads)  # fmt: skip
        await self.router.on_any(job, lambda engine: engine.load())

    async def unload(self, model: ModelRef) -> None:
        """Unload the model from this node, where it runs here (Ollama's keep_alive 0)."""
        if model.entry is not None:
            await self.pool.get(model.entry).unload()

    async def close(self) -> None:
        await self.pool.close()


def _normalized(name: str) -> str:
    try:
        return names.normalize(name)
    except InvalidRequest:
        return name
