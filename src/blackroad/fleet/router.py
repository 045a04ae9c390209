"""Which node serves a request, and what happens when it fails: the fleet router.

On one machine the fleet is a fleet of one (the local member); the same
path serves seven. For each job the router takes the nodes that serve the
model and whose breaker lets requests through, prefers the node that served
the conversation before (its KV cache holds the prefix) unless that node is
full, and otherwise the one with the least outstanding work for its measured
speed. Peers have a concurrency limit; when every node that could serve is
full, or down, the job waits, in a bounded queue and for a bounded time
(``queue_timeout``), then gets 503 with Retry-After. A wait for a node to
come back is no polling of the dead: the probe that closes a node's breaker
wakes the jobs waiting (``succeeded``), as a node freed or added does.

When a node fails (``NodeUnavailable``: unreachable, a timeout, a 5xx, a cut
stream) its breaker hears of it and the job moves on. Before the first token
the job simply starts again elsewhere; after it, the next node is sent the
original prompt plus the text already delivered and continues it, so the
client's stream goes on. A node whose queue is full (``QueueFull``) is busy,
not broken: the job tries another. When every node that serves the model
is down (the job's own node among them) the job, or the rest of its stream,
waits within the same bound for one to come back, then starts or continues
there, so a rolling restart of every node loses nothing. A node that failed
the job is asked again only once it has recovered. The error reaches the
client only when the bound passes, or when no node is left that could come
back (each that serves the model is up and failed the job). Active probes
(``watch``) keep breakers and model lists current, so a node that comes back
rejoins by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Container, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

from blackroad.engines.base import Chunk, Engine, Finish
from blackroad.errors import NodeUnavailable, QueueFull, ServiceUnavailable
from blackroad.fleet.health import Breaker
from blackroad.fleet.members import Job, Member

log = logging.getLogger(__name__)
AFFINITY_ENTRIES = 4096  # conversations remembered, least recently used forgotten
SPEED_SMOOTHING = 0.3  # weight of the newest measurement in a node's tok/s
R = TypeVar("R")


@dataclass
class Target:
    """A member with what the router learns of it."""

    member: Member
    breaker: Breaker = field(default_factory=Breaker)
    outstanding: int = 0
    speed: float | None = None  # measured decode tok/s, smoothed
    watches: set[_Watch] = field(default_factory=set)  # its streams now

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def full(self) -> bool:
        limit = self.member.limit
        return limit is not None and self.outstanding >= limit

    def measured(self, tokens: int, seconds: float) -> None:
        if tokens < 2 or seconds <= 0:
            return
        rate = (tokens - 1) / seconds
        old = self.speed
        self.speed = rate if old is None else old + SPEED_SMOOTHING * (rate - old)


class _Failed:
    """The nodes that failed one job: none is given the job again until it has recovered.

    Recovered: its breaker closed again since (a probe or another request
    heard it answer), or it is a new member of the same name (a node that
    came back at another address).
    """

    def __init__(self) -> None:
        self._when: dict[str, tuple[Breaker, int]] = {}

    def add(self, target: Target) -> None:
        self._when[target.name] = (target.breaker, target.breaker.recoveries)

    def __contains__(self, target: object) -> bool:
        if not isinstance(target, Target) or target.name not in self._when:
            return False
        breaker, recoveries = self._when[target.name]
        return breaker is target.breaker and recoveries == breaker.recoveries


class _Watch:
    """One stream on one node, which the router can abandon while it waits for the node.

    Each chunk is awaited as a task of its own, raced against the node being
    lost. Not a timeout on the stream's task: the stream is read by the
    request handler for its first chunk and by the response's task after, so
    a cancellation aimed at one task would land in the other.
    """

    def __init__(self) -> None:
        self._lost = asyncio.Event()

    def lose(self) -> None:
        self._lost.set()

    async def over(self, chunks: AsyncIterator[Chunk], node: str) -> AsyncIterator[Chunk]:
        """``chunks``, until the node is lost: then ``NodeUnavailable``."""
        lost = asyncio.ensure_future(self._lost.wait())
        step: asyncio.Future[Chunk] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(chunks))
                await asyncio.wait((step, lost), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    break
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            lost.cancel()
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(BaseException):  # its end is not this stream's
                    await step
        raise NodeUnavailable(f"node {node} stopped answering its probes", dead=True)


class Router:
    def __init__(self, members: Iterable[Member], queue_size: int, queue_timeout: float) -> None:
        self.targets: dict[str, Target] = {m.name: Target(m) for m in members}
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self._waiting = 0
        self._changed = asyncio.Condition()
        self._affinity: OrderedDict[str, str] = OrderedDict()
        self.membership = asyncio.Lock()  # held while the members are made to match the database

    # Membership -----------------------------------------------------------

    def add(self, member: Member) -> Target:
        target = self.targets[member.name] = Target(member)
        self._wake()
        return target

    def remove(self, name: str) -> Member | None:
        target = self.targets.pop(name, None)
        return None if target is None else target.member

    def _wake(self) -> None:
        if not self._waiting:
            return

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):  # no running loop: nobody can be waiting
            asyncio.get_running_loop().create_task(notify())

    # Choosing -------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Jobs waiting for a node: every one that serves their model is full or down."""
        return self._waiting

    def serving(self, job: Job, exclude: Container[Target] = ()) -> list[Target]:
        """The nodes that could take ``job`` now, full or not."""
        now = time.monotonic()
        return [
            t
            for t in self.targets.values()
            if t not in exclude
            and not t.member.draining
            and t.member.serves(job)
            and t.breaker.available(now)
        ]

    def _down(self, job: Job) -> bool:
        """Is a node that would serve ``job`` down now (so it may come back)?"""
        return any(
            t.breaker.state != "closed" and not t.member.draining and t.member.serves(job)
            for t in self.targets.values()
        )

    def _choose(self, job: Job, candidates: list[Target]) -> Target | None:
        free = [t for t in candidates if not t.full]
        if not free:
            return None
        if job.affinity is not None:
            name = self._affinity.get(job.affinity)
            for target in free:
                if target.name == name:
                    return target
        known = [t.speed for t in self.targets.values() if t.speed]
        default = sum(known) / len(known) if known else 1.0
        return min(free, key=lambda t: (t.outstanding + 1) / (t.speed or default))

    async def _acquire(
        self, job: Job, failed: _Failed, failure: ServiceUnavailable | None, deadline: float
    ) -> Target:
        """Claim a node for ``job``: wait until ``deadline`` while all are full or down."""
        queued = False
        try:
            while True:
                candidates = self.serving(job, failed)
                target = self._choose(job, candidates)
                if target is not None:
                    break
                if not candidates and not self._down(job):
                    # Nothing to wait for: each node that serves the model is
                    # up and failed this job (or none serves it any more).
                    if failure is not None:
                        raise failure
                    raise ServiceUnavailable(f"no node that serves {job.model} is up", 2)
                if not queued:
                    if self._waiting >= self.queue_size:
                        state = "busy" if candidates else "down"
                        raise QueueFull(f"every node serving {job.model} is {state}", 2)
                    self._waiting += 1
                    queued = True
                left = deadline - time.monotonic()
                if left <= 0:
                    if candidates:
                        raise ServiceUnavailable(
                            f"every node serving {job.model} stayed busy; retry later", 2
                        )
                    raise NodeUnavailable(
                        f"no node serving {job.model} came back within "
                        f"{self.queue_timeout:g} s; retry later",
                        2,
                    )
                # Woken when a node is freed, added or heard again; the
                # timeout only lets a half-open breaker's trial be taken.
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        finally:
            if queued:
                self._waiting -= 1
        target.outstanding += 1
        target.breaker.begin()
        if job.affinity is not None:
            self._affinity[job.affinity] = target.name
            self._affinity.move_to_end(job.affinity)
            if len(self._affinity) > AFFINITY_ENTRIES:
                self._affinity.popitem(last=False)
        if job.on_node is not None:
            job.on_node(target.name)
        return target

    def view(self, name: str) -> dict[str, Any] | None:
        """What the router knows of node ``name``, for the operator; None if it routes none."""
        target = self.targets.get(name)
        if target is None:
            return None
        return {
            "breaker": target.breaker.state,
            "outstanding": target.outstanding,
            "limit": target.member.limit,
            "tokens_per_second": None if target.speed is None else round(target.speed, 1),
        }

    def lost(self, name: str) -> None:
        """The node ``name`` stopped answering probes: abandon its streams, which go on elsewhere.

        A node cut off by a partition sends no FIN: its streams would wait out
        the read timeout (minutes) instead of failing over.
        """
        target = self.targets.get(name)
        for watch in () if target is None else list(target.watches):
            watch.lose()

    def succeeded(self, target: Target) -> None:
        """``target`` answered (a probe, a request): its breaker closes; if it was down,
        the jobs waiting for a node try again."""
        if target.breaker.state != "closed":
            log.info("node %s is back", target.name)
            self._wake()
        target.breaker.success()

    def _release(self, target: Target) -> None:
        target.outstanding -= 1
        self._wake()

    @staticmethod
    def _failed(target: Target, exc: ServiceUnavailable) -> None:
        if isinstance(exc, NodeUnavailable):
            target.breaker.failure(exc.dead, exc.refused)
            log.warning("node %s failed: %s", target.name, exc.message)

    # Running --------------------------------------------------------------

    async def _on(
        self, job: Job, failed: _Failed, failure: ServiceUnavailable | None, deadline: float
    ) -> tuple[Target, Engine]:
        target = await self._acquire(job, failed, failure, deadline)
        try:
            return target, await target.member.engine(job)
        except BaseException:
            self._release(target)
            raise

    @staticmethod
    def _generate(engine: Engine, job: Job) -> AsyncIterator[Chunk]:
        if job.messages is not None:
            return engine.stream_chat(
                job.messages, job.params, job.template, job.continue_final, job.truncate
            )
        if job.suffix is not None:
            return engine.stream_infill(job.prompt or "", job.suffix, job.params)
        return engine.stream_completion(job.prompt or "", job.params)

    async def stream(self, job: Job) -> AsyncIterator[Chunk]:
        """Generate ``job`` on the fleet; the stream survives the nodes that die under it."""
        failed = _Failed()
        failure: ServiceUnavailable | None = None
        deadline = time.monotonic() + self.queue_timeout
        delivered: list[str] = []
        tokens = 0  # chunks delivered: one token each, as every engine streams them
        current = job
        while True:
            target, engine = await self._on(current, failed, failure, deadline)
            first: float | None = None
            earlier = tokens  # delivered by the nodes before this one
            watch = _Watch()
            target.watches.add(watch)
            try:
                generation = cast(AsyncGenerator[Chunk], self._generate(engine, current))
                async with contextlib.aclosing(generation) as chunks:
                    # A node over the network can be cut off without a word.
                    stream = watch.over(chunks, target.name) if target.member.remote else chunks
                    async for chunk in stream:
                        if first is None:
                            first = time.monotonic()
                            self.succeeded(target)
                        if chunk.finish is not None:
                            seconds = time.monotonic() - first
                            target.measured(chunk.finish.completion_tokens, seconds)
                            if earlier:
                                chunk = replace(chunk, finish=_resumed(chunk.finish, earlier))
                        elif chunk.text:
                            delivered.append(chunk.text)
                            tokens += 1
                        yield chunk
                return
            except (NodeUnavailable, QueueFull) as exc:
                self._failed(target, exc)
                failed.add(target)
                failure = exc
                if first is not None:  # it served: the wait for the next node starts now
                    deadline = time.monotonic() + self.queue_timeout
                limit = job.params.max_tokens
                if limit is not None and tokens >= limit:  # it died after its last token
                    yield Chunk("", Finish("length", 0, tokens))
                    return
                if delivered:
                    log.info("continuing %s on the next node after %d tokens", job.model, tokens)
                    current = job.resumed("".join(delivered), tokens)
            finally:
                target.watches.discard(watch)
                self._release(target)
                await target.member.done(engine, current)

    async def on_any(self, job: Job, work: Callable[[Engine], Awaitable[R]]) -> R:
        """Run one call (not a stream) on a node that serves the model, as ``stream`` retries."""
        failed = _Failed()
        failure: ServiceUnavailable | None = None
        deadline = time.monotonic() + self.queue_timeout
        while True:
            target, engine = await self._on(job, failed, failure, deadline)
            try:
                result = await work(engine)
                self.succeeded(target)
                return result
            except (NodeUnavailable, QueueFull) as exc:
                self._failed(target, exc)
                failed.add(target)
                failure = exc
            finally:
                self._release(target)
                await target.member.done(engine, job)


def _resumed(finish: Finish, delivered: int) -> Finish:
    """A continuation's finish, counted for the whole stream.

    The continuation's prompt held the text delivered before; those tokens
    were the first node's output, so they move from prompt to completion.
    """
    return replace(
        finish,
        prompt_tokens=max(0, finish.prompt_tokens - delivered),
        completion_tokens=finish.completion_tokens + delivered,
    )
