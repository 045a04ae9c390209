"""Placement: the fleet keeps N healthy replicas of a model on nodes it chooses.

An admin says how many replicas of a model the fleet should hold
(``blackroad models place MODEL --replicas N``); the placements live in the
database. Every probe round, for each placement, the control plane counts
the nodes that serve the model and whose breaker is closed. While there are
fewer than N it chooses more among the joined BlackRoad nodes (the only
kind it can tell what to do) that are up, do not have the model, and have
the memory for it, most free memory first, and has each pull the model from
the organisation's registry (the node verifies every sha256) and load it to
stay. A node that dies no longer counts, so another takes its place; one
that comes back is simply one replica more (nothing is unloaded behind a
user's back).

Memory needed on a node: the model's blobs, as the registry's manifest
lists them, plus the KV cache the node will reserve (its ``num_ctx`` and
``num_seq``, from its heartbeat) estimated from the embedding length the
manifest's config records; for a model whose config does not, the file's
size again. A node with less free memory (``MemAvailable``, from its
heartbeat) is not chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from blackroad.engines.llamacpp import estimated_state_bytes
from blackroad.engines.ollama_peer import OllamaPeer
from blackroad.errors import BlackRoadError, InvalidRequest, NotFound
from blackroad.fleet.members import RemoteMember
from blackroad.fleet.router import Router, Target
from blackroad.models import names
from blackroad.models.registry import open_registry
from blackroad.models.store import Manifest
from blackroad.store.database import Database
from blackroad.store.schema import Placement

log = logging.getLogger(__name__)
JOINED = "blackroad"  # the kind of node the control plane can have pull a model
RETRY_SECONDS = 60.0  # after a failed placement on a node, before it is asked again
MAX_REPLICAS = 64


@dataclass(frozen=True)
class Footprint:
    """What a model takes on a node, from the registry's manifest."""

    file_bytes: int
    embedding_length: int | None

    def on(self, stats: Mapping[str, Any]) -> int:
        """Bytes the model needs on a node that reports ``stats``."""
        if self.embedding_length is None:
            return 2 * self.file_bytes
        kv = estimated_state_bytes(
            int(stats.get("num_seq") or 1), int(stats.get("num_ctx") or 0), self.embedding_length
        )
        return self.file_bytes + kv


@dataclass(frozen=True)
class PlacementStatus:
    model: str
    replicas: int  # wanted
    serving: list[str]  # healthy nodes that serve the model now
    placing: list[str]  # nodes pulling or loading it now


class Placements:
    """The placements in the database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def set(self, model: str, replicas: int) -> None:
        """Keep ``replicas`` of ``model``; 0 stops placing it (its replicas stay)."""
        if not 0 <= replicas <= MAX_REPLICAS:
            raise InvalidRequest(f"replicas must be 0 to {MAX_REPLICAS}", "replicas")
        model = names.normalize(model)
        with self.database.session() as session, session.begin():
            row = session.scalar(select(Placement).where(Placement.model == model))
            if replicas == 0:
                if row is None:
                    raise NotFound(f"{model} is not placed")
                session.delete(row)
            elif row is None:
                session.add(Placement(model=model, replicas=replicas, created_at=datetime.now(UTC)))
            else:
                row.replicas = replicas

    def wanted(self) -> dict[str, int]:
        """Each placed model and the replicas wanted of it."""
        with self.database.session() as session:
            return {p.model: p.replicas for p in session.scalars(select(Placement))}


def footprint(registry: str, registry_key: str | None, model: str) -> Footprint:
    """The model's size and embedding length, read from the registry (blocking)."""
    with contextlib.closing(open_registry(registry, api_key=registry_key)) as source:
        manifest = Manifest.from_bytes(source.read_manifest(model))
        with source.open_blob(manifest.config.digest) as blob:
            config: dict[str, Any] = json.loads(b"".join(blob.chunks))
    width = config.get("blackroad.embedding_length")
    return Footprint(
        sum(layer.size for layer in manifest.layers),
        int(width) if isinstance(width, int) and width > 0 else None,
    )


class Placer:
    """Each round, brings every placed model up to its replicas; one placement task per node."""

    def __init__(self, placements: Placements, registry: str | None, key: str | None) -> None:
        self.placements = placements
        self.registry = registry
        self.key = key
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}  # (model, node)
        self._failed: dict[tuple[str, str], float] = {}  # when a node last failed a model
        self._footprints: dict[str, Footprint] = {}

    def status(self, router: Router, wanted: Mapping[str, int]) -> list[PlacementStatus]:
        """Each placement with the healthy nodes serving its model, and those being given it."""
        return [
            PlacementStatus(
                model,
                replicas,
                sorted(t.name for t in _peers(router) if _holds(t, model) and _healthy(t)),
                self.placing(model),
            )
            for model, replicas in sorted(wanted.items())
        ]

    def placing(self, model: str) -> list[str]:
        """The nodes pulling or loading ``model`` now."""
        return sorted(node for (m, node) in self._running if m == model)

    async def round(self, router: Router) -> None:
        wanted = await asyncio.to_thread(self.placements.wanted)
        joined = [t for t in _peers(router) if _member(t).access.kind == JOINED]
        for model, replicas in wanted.items():
            healthy = [t for t in _peers(router) if _holds(t, model) and _healthy(t)]
            missing = replicas - len(healthy) - len(self.placing(model))
            if missing > 0:
                await self._add(model, missing, joined)

    async def _add(self, model: str, count: int, joined: list[Target]) -> None:
        if self.registry is None:
            log.warning("cannot place %s: no registry is configured (BLACKROAD_REGISTRY)", model)
            return
        need = self._footprints.get(model)
        if need is None:
            try:
                need = await asyncio.to_thread(footprint, self.registry, self.key, model)
            except BlackRoadError as exc:
                log.warning("cannot place %s: %s", model, exc.message)
                return
            self._footprints[model] = need
        now = time.monotonic()
        candidates = []
        for target in joined:
            stats = _member(target).access.stats or {}
            free = stats.get("free_memory_bytes")
            if (
                _healthy(target)
                and not _holds(target, model)
                and (model, target.name) not in self._running
                and now - self._failed.get((model, target.name), -RETRY_SECONDS) >= RETRY_SECONDS
                and isinstance(free, int)
                and free >= need.on(stats)
            ):
                candidates.append((free, target))
        candidates.sort(key=lambda pair: pair[0], reverse=True)
        for _, target in candidates[:count]:
            key = (model, target.name)
            self._running[key] = asyncio.get_running_loop().create_task(self._place(target, model))

    async def _place(self, target: Target, model: str) -> None:
        member = _member(target)
        engine = OllamaPeer(model, member.access.url, member.access.api_key)
        log.info("placing %s on node %s", model, target.name)
        try:
            await engine.place()
            member.placed(model)
            log.info("placed %s on node %s", model, target.name)
        except BlackRoadError as exc:
            self._failed[(model, target.name)] = time.monotonic()
            log.warning("placing %s on node %s failed: %s", model, target.name, exc.message)
        finally:
            await engine.close()
            del self._running[(model, target.name)]

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _peers(router: Router) -> list[Target]:
    return [t for t in router.targets.values() if isinstance(t.member, RemoteMember)]


def _healthy(target: Target) -> bool:
    return target.breaker.state == "closed"


def _member(target: Target) -> RemoteMember:
    member = target.member
    assert isinstance(member, RemoteMember)
    return member


def _holds(target: Target, model: str) -> bool:
    return model in _member(target).models
