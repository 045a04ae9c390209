"""The nodes a router drives: this machine's engine pool, and peers reached over HTTP.

A member turns a job into an engine of its own and hears when the job is
done. This machine serves a model when its catalog has it, from the engine
pool (which makes room for it and runs its keep-alive); a peer serves the
models it last listed, through the engine of its protocol. The local node
has no concurrency limit of the router's: each of its models admits work by
its own queue and refuses the rest with ``QueueFull``, which the router
takes as "busy, ask another node".
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from blackroad.engines.base import Engine, Message, SamplingParams
from blackroad.engines.llamacpp import LlamaCppEngine
from blackroad.engines.pool import EnginePool
from blackroad.engines.remote import RemoteEngine
from blackroad.models.types import ModelEntry


@dataclass(frozen=True)
class Job:
    """One request as the router runs it: a chat (``messages``) or a raw ``prompt``.

    A job without ``messages`` or ``prompt`` generates nothing: it asks a node
    for a call of the model (embed, load) that the router retries elsewhere
    as it retries streams.
    """

    model: str
    params: SamplingParams
    # The model in this node's catalog; None when only peers serve it.
    entry: ModelEntry | None = None
    local_only: bool = False  # sent here by another node's router: no peer may take it
    messages: Sequence[Message] | None = None
    prompt: str | None = None
    suffix: str | None = None  # with ``prompt``: fill in the middle
    template: str | None = None
    continue_final: bool = False
    truncate: bool = False  # a chat too long loses its oldest messages (Ollama's /api/chat)
    keep_alive: float | None = None
    n_ctx: int | None = None
    n_threads: int | None = None
    # Requests of one conversation share this, so they go to the node holding its KV cache.
    affinity: str | None = None
    # Told the name of each node that serves (part of) the job.
    on_node: Callable[[str], None] | None = field(default=None, compare=False)

    def resumed(self, text: str, tokens: int) -> Job:
        """The same job, to continue after ``text`` (``tokens`` tokens) was delivered."""
        params = self.params
        if params.max_tokens is not None:
            params = replace(params, max_tokens=max(1, params.max_tokens - tokens))
        if self.messages is None:
            return replace(self, prompt=(self.prompt or "") + text, params=params)
        messages = list(self.messages)
        if self.continue_final:
            last = messages.pop()
            text = str(last.get("content") or "") + text
        messages.append({"role": "assistant", "content": text})
        return replace(self, messages=messages, continue_final=True, params=params)


class Member(abc.ABC):
    """A node of the fleet as the router uses it."""

    name: str
    # Jobs the router sends at once; None: the node's own queues decide.
    limit: int | None
    remote: bool  # reached over the network (so it can be cut off by a partition)

    @property
    def draining(self) -> bool:
        """Routed no new jobs: an admin is taking it out of service."""
        return False

    @abc.abstractmethod
    def serves(self, job: Job) -> bool: ...

    @abc.abstractmethod
    async def engine(self, job: Job) -> Engine:
        """The engine that runs ``job`` here, ready to take it."""

    @abc.abstractmethod
    async def done(self, engine: Engine, job: Job) -> None:
        """``job`` ended on ``engine`` (however it ended)."""


class LocalMember(Member):
    """This machine: the models of its catalog, in its engine pool."""

    limit = None
    remote = False

    def __init__(self, name: str, pool: EnginePool) -> None:
        self.name = name
        self.pool = pool

    def serves(self, job: Job) -> bool:
        # The service looked the model up in this node's catalog already.
        return job.entry is not None

    async def engine(self, job: Job) -> LlamaCppEngine:
        assert job.entry is not None, "the router asks only a member that serves the job"
        engine = self.pool.get(job.entry, job.n_ctx, job.n_threads)
        await self.pool.make_room(engine)
        return engine

    async def done(self, engine: Engine, job: Job) -> None:
        assert isinstance(engine, LlamaCppEngine)
        await self.pool.finished(engine, job.keep_alive)


@dataclass(frozen=True)
class PeerAccess:
    """How to reach a peer, as the database keeps it (its key included)."""

    name: str
    kind: str
    url: str
    api_key: str | None
    models: tuple[str, ...]
    stats: Mapping[str, Any] | None = None
    draining: bool = False


class RemoteMember(Member):
    """A peer: the models it listed, each through one pooled engine of its protocol."""

    remote = True

    def __init__(self, access: PeerAccess, engine_type: type[RemoteEngine], limit: int) -> None:
        self.name = access.name
        self.access = access
        self.limit = limit
        self.models = frozenset(access.models)
        self._placed: dict[str, float] = {}  # model -> when placement put it here
        self._engine_type = engine_type
        self._engines: dict[str, RemoteEngine] = {}

    def listed(self, models: Iterable[str], asked_at: float) -> None:
        """The peer listed ``models`` in answer to a probe sent at ``asked_at`` (monotonic).

        A model placed here after the probe was sent stays: the answer may
        predate it, and dropping it would take a fresh replica out of the
        rotation until the next round.
        """
        self._placed = {model: at for model, at in self._placed.items() if at > asked_at}
        self.models = frozenset(models) | self._placed.keys()

    def placed(self, model: str) -> None:
        """Placement put ``model`` on the peer: route it now, before the next probe."""
        self._placed[model] = time.monotonic()
        self.models = self.models | {model}

    @property
    def draining(self) -> bool:
        return self.access.draining  # the database's, as of the last sync

    def serves(self, job: Job) -> bool:
        # A chat template of the request's own cannot travel (the peer renders
        # its own), and the peers' protocols have no fill-in-the-middle.
        return (
            job.model in self.models
            and job.template is None
            and job.suffix is None
            and not job.local_only
        )

    async def engine(self, job: Job) -> RemoteEngine:
        engine = self._engines.get(job.model)
        if engine is None:
            engine = self._engines[job.model] = self._engine_type(
                job.model, self.access.url, self.access.api_key
            )
        return engine

    async def done(self, engine: Engine, job: Job) -> None:
        """Nothing to do: the peer keeps its models loaded by its own keep-alive."""

    async def close(self) -> None:
        await asyncio.gather(*(engine.close() for engine in self._engines.values()))
