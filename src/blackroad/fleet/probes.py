"""Active health probes: the router's members kept in step with the database and the peers.

Every round reads the peers from the database (the CLI and node joins write
there, maybe from another process), adds, replaces or drops the router's
members to match, then asks every peer for its model list at once. An answer
closes the peer's breaker (waking the requests that wait for a node to come
back) and updates the models it is routed; no answer
counts as a failure (a refused connection opens the breaker at once). What
each peer answered is written back for ``blackroad fleet`` and ``/api/fleet``.
Passive detection (failed requests) is the router's; together they make a
node that died leave the rotation, and a node that came back rejoin by
itself within a round. After each round the placer (``fleet/placement.py``)
brings placed models up to their replicas, on the one control plane that
leads placement (``store/leadership.py``); every replica probes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from blackroad.errors import NodeUnavailable
from blackroad.fleet.members import PeerAccess, RemoteMember
from blackroad.fleet.nodes import Nodes, discover, stored_error
from blackroad.fleet.placement import Placer
from blackroad.fleet.router import Router
from blackroad.fleet.types import PEER_ENGINES

log = logging.getLogger(__name__)


async def sync(router: Router, peers: list[PeerAccess], limit: int) -> None:
    """Make the router's remote members those of ``peers``."""
    wanted = {peer.name: peer for peer in peers}
    stale = []
    for name, target in list(router.targets.items()):
        member = target.member
        if not isinstance(member, RemoteMember):
            continue
        peer = wanted.get(name)
        if peer is None or (peer.kind, peer.url, peer.api_key) != (
            member.access.kind,
            member.access.url,
            member.access.api_key,
        ):
            router.remove(name)
            stale.append(member)
        else:
            member.access = peer  # its latest report
    for peer in peers:
        # A peer named like this node would shadow it: it is listed, not routed.
        if peer.name not in router.targets:
            router.add(RemoteMember(peer, PEER_ENGINES[peer.kind], limit))
    await asyncio.gather(*(member.close() for member in stale))


async def resync(nodes: Nodes, router: Router, limit: int) -> list[PeerAccess]:
    """Make the router's members the peers the database has now; those peers.

    Serialized: two overlapping rounds must not apply an older reading of
    the database over a newer one (a peer just added would be dropped).
    """
    async with router.membership:
        peers = await asyncio.to_thread(nodes.access)
        await sync(router, peers, limit)
    return peers


async def probe(nodes: Nodes, router: Router, limit: int, within: float) -> None:
    """One round: sync the members, ask every peer, tell breakers and the database."""
    # A node whose breaker is open is probed once its cool-down is over (the
    # probe is then its trial): a dead node is not asked at every round, and
    # one that refuses BlackRoad's key is not made to lock BlackRoad out.
    peers = [
        peer
        for peer in await resync(nodes, router, limit)
        if (target := router.targets.get(peer.name)) is None or target.breaker.available()
    ]
    if not peers:
        return
    asked_at = time.monotonic()
    results = await asyncio.gather(*(discover(peer, within) for peer in peers))
    outcomes: dict[str, list[str] | NodeUnavailable] = {}
    for peer, result in zip(peers, results, strict=True):
        outcomes[peer.name] = result
        target = router.targets.get(peer.name)
        if target is None or not isinstance(target.member, RemoteMember):
            continue
        if isinstance(result, NodeUnavailable):
            if target.breaker.state == "closed":
                log.warning("node %s failed its probe: %s", peer.name, stored_error(result.message))
            target.breaker.failure(result.dead, result.refused)
            if target.breaker.state == "open":
                router.lost(peer.name)
        else:
            target.member.listed(result, asked_at)
            router.succeeded(target)
    await asyncio.to_thread(nodes.record, outcomes)


async def watch(
    nodes: Nodes,
    router: Router,
    placer: Placer,
    every: float,
    limit: int,
    places: Callable[[], bool],
) -> None:
    """Probe, then place while ``places()`` (this replica leads placement), every ``every`` s."""
    try:
        while True:
            try:
                await probe(nodes, router, limit, within=max(2 * every, 5.0))
                if places():
                    await placer.round(router)
            except Exception:  # a failed round is logged; the next one may do better
                log.exception("probing the fleet failed")
            await asyncio.sleep(every)
    finally:
        await placer.close()
