"""The nodes of the fleet: peers added by URL, kept in the database, their models kept current.

A peer is added only once it answers its model listing (``/api/tags`` for
Ollama, ``/v1/models`` for OpenAI-compatible servers), so a typo in a URL is
refused at once. ``record`` keeps what the probes (``fleet/probes.py``) or
``refresh`` heard: a node's models are replaced by what it lists now, and a
node that does not answer is marked down with the reason, until it answers
again (the reason bounded and made printable: it may quote the node's reply).
Everything is in the database, so the fleet survives a restart of the
control plane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from blackroad.errors import InvalidRequest, NodeUnavailable, NotFound
from blackroad.fleet.members import PeerAccess
from blackroad.fleet.types import PEER_ENGINES, NodeInfo
from blackroad.store.database import Database
from blackroad.store.schema import Node

MAX_ERROR = 200  # characters of a node's last error kept


def check_url(url: str) -> str:
    """An http(s) URL with a host and nothing secret in it, without a trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"a node's URL is http:// or https:// and a host, not {url!r}", "url")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidRequest("a node's URL carries no credentials, query or fragment", "url")
    return url.strip().rstrip("/")


def stored_error(message: str) -> str:
    """Why a node failed, as kept and shown: one line of printable text, at most
    ``MAX_ERROR`` characters. It may quote what the node answered, and a node
    (or whatever its URL points at) must not get its reply shown whole, nor
    send a terminal escape or a line of its own to whoever lists the fleet."""
    line = " ".join("".join(c if c.isprintable() else " " for c in message).split())
    return line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 1] + "…"


def _info(node: Node) -> NodeInfo:
    return NodeInfo(
        name=node.name,
        kind=node.kind,
        url=node.url,
        state=node.state,
        models=tuple(node.models),
        last_seen=None if node.last_seen is None else node.last_seen.replace(tzinfo=UTC),
        last_error=node.last_error,
        stats=node.stats,
        draining=bool(node.draining),
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

    def drain(self, name: str, draining: bool) -> NodeInfo:
        """Stop (or resume) routing new work to the node ``name``."""
        with self.database.session() as session, session.begin():
            node = session.scalar(select(Node).where(Node.name == name))
            if node is None:
                raise NotFound(f"no node named {name!r}")
            node.draining = draining
            return _info(node)

    def access(self) -> list[PeerAccess]:
        """Every peer with what it takes to reach it: for the router, never for display."""
        with self.database.session() as session:
            return [
                PeerAccess(n.name, n.kind, n.url, n.api_key, tuple(n.models), n.stats, n.draining)
                for n in session.scalars(select(Node).order_by(Node.name))
            ]

    def record(self, outcomes: Mapping[str, list[str] | NodeUnavailable]) -> None:
        """Note what each named node answered: the models it lists now, or why it failed."""
        now = datetime.now(UTC)
        with self.database.session() as session, session.begin():
            for node in session.scalars(select(Node).where(Node.name.in_(list(outcomes)))):
                outcome = outcomes[node.name]
                if isinstance(outcome, NodeUnavailable):
                    node.state, node.last_error = "down", stored_error(outcome.message)
                else:
                    node.state, node.models, node.last_error = "up", outcome, None
                    node.last_seen = now

    async def refresh(self) -> list[NodeInfo]:
        """Ask every node for its models now; record who answered and what they serve."""
        peers = await asyncio.to_thread(self.access)
        results = await asyncio.gather(*(discover(peer) for peer in peers))
        self.record({peer.name: result for peer, result in zip(peers, results, strict=True)})
        return self.nodes()


async def discover(peer: PeerAccess, within: float | None = None) -> list[str] | NodeUnavailable:
    """The models ``peer`` lists, or why it did not answer (within ``within`` seconds)."""
    try:
        async with asyncio.timeout(within):
            return await PEER_ENGINES[peer.kind].discover(peer.url, peer.api_key)
    except NodeUnavailable as exc:
        return exc
    except TimeoutError:
        return NodeUnavailable(f"the node at {peer.url} did not answer within {within} s")
