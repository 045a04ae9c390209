"""The nodes of the fleet: peers added by URL, kept in the database, their models kept current.

A peer is added only once it answers its model listing (``/api/tags`` for
Ollama, ``/v1/models`` for OpenAI-compatible servers), so a typo in a URL is
refused at once. ``refresh`` asks every node again: its models are replaced
by what it lists now, and a node that does not answer is marked down with
the reason, until it answers again. Everything is in the database, so the
fleet survives a restart of the control plane.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from blackroad.errors import InvalidRequest, NodeUnavailable, NotFound
from blackroad.fleet.types import PEER_ENGINES, NodeInfo
from blackroad.store.database import Database
from blackroad.store.schema import Node

log = logging.getLogger(__name__)


def check_url(url: str) -> str:
    """An http(s) URL with a host and nothing secret in it, without a trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"a node's URL is http:// or https:// and a host, not {url!r}", "url")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidRequest("a node's URL carries no credentials, query or fragment", "url")
    return url.strip().rstrip("/")


def _info(node: Node) -> NodeInfo:
    return NodeInfo(
        name=node.name,
        kind=node.kind,
        url=node.url,
        state=node.state,
        models=tuple(node.models),
        last_seen=None if node.last_seen is None else node.last_seen.replace(tzinfo=UTC),
        last_error=node.last_error,
    )


class Nodes:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def add(self, name: str, kind: str, url: str, api_key: str | None = None) -> NodeInfo:
        """Add a peer once it lists its models; ``InvalidRequest`` if it cannot be reached."""
        if kind not in PEER_ENGINES:
            raise InvalidRequest(f"kind must be one of {', '.join(PEER_ENGINES)}", "kind")
        if not name.strip():
            raise InvalidRequest("a node needs a name", "name")
        url = check_url(url)
        try:
            models = await PEER_ENGINES[kind].discover(url, api_key)
        except NodeUnavailable as exc:
            raise InvalidRequest(f"not added: {exc.message}", "url") from None
        node = Node(
            name=name.strip(),
            kind=kind,
            url=url,
            api_key=api_key,
            models=models,
            state="up",
            last_seen=datetime.now(UTC),
            last_error=None,
            created_at=datetime.now(UTC),
        )
        try:
            await asyncio.to_thread(self._insert, node)
        except IntegrityError:
            raise InvalidRequest(f"a node named {name!r} exists already", "name") from None
        return _info(node)

    def _insert(self, node: Node) -> None:
        with self.database.session() as session, session.begin():
            session.add(node)

    def nodes(self) -> list[NodeInfo]:
        with self.database.session() as session:
            return [_info(node) for node in session.scalars(select(Node).order_by(Node.name))]

    def remove(self, name: str) -> None:
        with self.database.session() as session, session.begin():
            node = session.scalar(select(Node).where(Node.name == name))
            if node is None:
                raise NotFound(f"no node named {name!r}")
            session.delete(node)

    async def refresh(self) -> list[NodeInfo]:
        """Ask every node for its models now; record who answered and what they serve."""
        with self.database.session() as session:
            nodes = list(session.scalars(select(Node)))
        results = await asyncio.gather(
            *(PEER_ENGINES[n.kind].discover(n.url, n.api_key) for n in nodes),
            return_exceptions=True,
        )
        now = datetime.now(UTC)
        with self.database.session() as session, session.begin():
            for node, result in zip(nodes, results, strict=True):
                stored = session.get(Node, node.id)
                if stored is None:  # removed meanwhile
                    continue
                if isinstance(result, NodeUnavailable):
                    stored.state, stored.last_error = "down", result.message
                elif isinstance(result, BaseException):
                    raise result
                else:
                    stored.state, stored.models, stored.last_error = "up", result, None
                    stored.last_seen = now
        return self.nodes()


async def refresh_forever(nodes: Nodes, every: float) -> None:
    """Refresh the fleet every ``every`` seconds, for as long as the app runs."""
    while True:
        await asyncio.sleep(every)
        try:
            await nodes.refresh()
        except Exception:  # a failed round is logged; the next one may do better
            log.exception("refreshing the fleet failed")
