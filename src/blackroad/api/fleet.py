"""``/api/fleet``: the nodes of the fleet, this one first, and its control planes; peers, join
tokens, and nodes joining.

Most routes are for admins: listing the fleet (with the router's view of
each node), adding and removing peers, placing models, creating (for
``uses`` joins, expiring after ``expires_in`` seconds), listing and
revoking join tokens. Two are for nodes, and take no API key: ``POST
/api/fleet/join`` is authenticated by a join token, or by the node's own
credential when a node joins again under its name, ``POST
/api/fleet/heartbeat`` by the credential a node got when it joined
(``fleet/membership.py``). A join with ``replace: true`` takes the name of
a node in the fleet without its credential: it needs an admin's key as the
Bearer token (the join token then goes in the body). Peers are probed by the
app in the background and joined nodes report by heartbeat; what is listed
is their state as last known. A node's key, a token's secret and a node's
credential are never shown, except a new token or credential, once, to
whoever made it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from blackroad.api.auth import authenticate, require_scope
from blackroad.api.recording import request_log
from blackroad.api.state import (
    audit_log,
    database,
    fleet_router,
    inference,
    nodes,
    placer,
    settings,
)
from blackroad.errors import Unauthorized
from blackroad.fleet import control_planes
from blackroad.fleet.control_planes import ControlPlane
from blackroad.fleet.heartbeat import Capabilities, Stats
from blackroad.fleet.membership import (
    DEFAULT_LIFETIME,
    MAX_LIFETIME,
    MAX_USES,
    TOKEN_PREFIX_LENGTH,
    Membership,
    TokenInfo,
)
from blackroad.fleet.placement import MAX_REPLICAS
from blackroad.fleet.probes import resync
from blackroad.fleet.types import NodeInfo
from blackroad.identity.keys import bearer_token

# One router, with the admin check on each admin route rather than on the
# router, since the nodes' routes share its prefix but take no API key.
router = APIRouter(prefix="/api/fleet")
ADMIN = [Depends(require_scope("admin"))]
NodeName = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NodeUrl = Field(min_length=8, max_length=2048)
NodeKey = Field(default=None, max_length=4096)


class NodeAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = NodeName
    kind: Literal["ollama", "openai"]
    url: str = NodeUrl
    key: str | None = NodeKey


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in: int = Field(
        default=int(DEFAULT_LIFETIME.total_seconds()),
        ge=60,
        le=int(MAX_LIFETIME.total_seconds()),
        description="seconds",
    )
    uses: int = Field(default=1, ge=1, le=MAX_USES, description="the joins it admits")


class FromNode(BaseModel):
    # Fields a newer node sends are dropped, not refused: nodes and their
    # control plane are upgraded one at a time.
    model_config = ConfigDict(extra="ignore")


class Join(FromNode):
    token: str | None = Field(default=None, max_length=256)  # or as the Bearer token
    # The node's own credential, to join again under its name without a token.
    credential: str | None = Field(default=None, max_length=256)
    # Take the name of a node in the fleet without its credential: an admin's call.
    replace: bool = False
    name: str = NodeName
    url: str = NodeUrl
    key: str | None = NodeKey
    capabilities: Capabilities


class Heartbeat(FromNode):
    url: str | None = Field(default=None, max_length=2048)
    models: list[str] = Field(max_length=10_000)
    stats: Stats


def _membership(request: Request) -> Membership:
    return Membership(database(request), audit_log(request))


def node_view(node: NodeInfo) -> dict[str, Any]:
    view = dataclasses.asdict(node)
    view["models"] = list(node.models)
    view["last_seen"] = None if node.last_seen is None else node.last_seen.isoformat()
    return view


def control_plane_view(replica: ControlPlane) -> dict[str, Any]:
    return {
        "name": replica.name,
        "url": replica.url,
        "version": replica.version,
        "ready": replica.ready,
        "problem": replica.problem,
        "started_at": replica.started_at.isoformat(),
        "last_seen": replica.last_seen.isoformat(),
        "leads": replica.leads,
        "database": {"kind": replica.database_kind, "host": replica.database_host},
    }


def token_view(token: TokenInfo) -> dict[str, Any]:
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in dataclasses.asdict(token).items()
    }


@router.get("", dependencies=ADMIN)
async def fleet(request: Request) -> dict[str, Any]:
    local = await inference(request).catalog_names()
    this = {
        "name": settings(request).node_name,
        "kind": "embedded",
        "url": None,
        "state": "up",
        "draining": False,
        "models": local,
        "last_seen": None,
        "last_error": None,
        "stats": None,
    }
    peers = await run_in_threadpool(nodes(request).nodes)
    listed = [this, *(node_view(node) for node in peers)]
    routing = fleet_router(request)
    for view in listed:
        view["route"] = routing.view(view["name"])  # the router's own view: breaker, load
    replicas = await run_in_threadpool(control_planes.listed, database(request))
    return {"nodes": listed, "control_planes": [control_plane_view(c) for c in replicas]}


class PlacementSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    replicas: int = Field(ge=0, le=MAX_REPLICAS)


async def _placements(request: Request) -> list[dict[str, Any]]:
    wanted = await run_in_threadpool(placer(request).placements.wanted)
    status = placer(request).status(fleet_router(request), wanted)
    return [dataclasses.asdict(placement) for placement in status]


@router.get("/placements", dependencies=ADMIN)
async def list_placements(request: Request) -> dict[str, Any]:
    """The models the fleet keeps replicas of, and where they are."""
    return {"placements": await _placements(request)}


@router.post("/placements", dependencies=ADMIN)
async def place(body: PlacementSet, request: Request) -> dict[str, Any]:
    """Keep ``replicas`` of a model on the fleet's nodes (0: stop placing it)."""
    await run_in_threadpool(placer(request).placements.set, body.model, body.replicas)
    return {"placements": await _placements(request)}


@router.delete("/placements/{model:path}", status_code=204, dependencies=ADMIN)
async def unplace(model: str, request: Request) -> Response:
    await run_in_threadpool(placer(request).placements.set, model, 0)
    return Response(status_code=204)


async def _resync(request: Request) -> None:
    """Route to the peers as the database has them now, without waiting for the next probe."""
    await resync(nodes(request), fleet_router(request), settings(request).node_concurrency)


@router.post("/nodes", status_code=201, dependencies=ADMIN)
async def add_node(body: NodeAdd, request: Request) -> dict[str, Any]:
    added = await nodes(request).add(body.name, body.kind, body.url, body.key)
    await _resync(request)
    return node_view(added)


class Drain(BaseModel):
    model_config = ConfigDict(extra="forbid")

    draining: bool = True


@router.post("/nodes/{name}/drain", dependencies=ADMIN)
async def drain_node(name: str, body: Drain, request: Request) -> dict[str, Any]:
    """Route no new work to the node (``draining`` false: route to it again); what it
    runs now finishes there."""
    drained = await run_in_threadpool(nodes(request).drain, name, body.draining)
    await _resync(request)
    return node_view(drained)


@router.delete("/nodes/{name}", status_code=204, dependencies=ADMIN)
async def remove_node(name: str, request: Request) -> Response:
    # A joined node's credential lives on its row: removing the node revokes it.
    await run_in_threadpool(nodes(request).remove, name)
    await _resync(request)
    return Response(status_code=204)


# -- join tokens (admins) ------------------------------------------------------


@router.post("/tokens", status_code=201, dependencies=ADMIN)
async def create_token(body: TokenCreate, request: Request) -> dict[str, Any]:
    """A new join token for ``uses`` joins within ``expires_in`` seconds; its secret is in
    this answer only."""
    expires_at = datetime.now(UTC) + timedelta(seconds=body.expires_in)
    new = await run_in_threadpool(_membership(request).create_token, expires_at, body.uses)
    return {
        "token": new.secret,
        "prefix": new.prefix,
        "expires_at": new.expires_at.isoformat(),
        "uses": new.uses,
    }


@router.get("/tokens", dependencies=ADMIN)
async def list_tokens(request: Request) -> dict[str, Any]:
    tokens = await run_in_threadpool(_membership(request).tokens)
    return {"tokens": [token_view(token) for token in tokens]}


@router.delete("/tokens/{prefix}", status_code=204, dependencies=ADMIN)
async def revoke_token(prefix: str, request: Request) -> Response:
    await run_in_threadpool(_membership(request).revoke_token, prefix)
    return Response(status_code=204)


# -- nodes joining and reporting (no API key) ------------------------------------
#
# Wrong tokens and credentials are not counted by the lockout (identity/lockout.py):
# both are 256 random bits, never guessable, and a removed node keeps beating
# with its dead credential, which would lock out its address, and everyone
# behind the same address, for nothing.


@router.post("/join", status_code=201)
async def join(body: Join, request: Request) -> dict[str, Any]:
    """Admit a node with a join token, or its own credential; its new credential for
    heartbeats, shown this once."""
    replaced_by = None
    if body.replace:
        # The Bearer token is the admin's key: who replaced the node is in its audit record.
        replaced_by = (await authenticate(request, "admin")).user
        token = body.token
    else:
        token = body.token or bearer_token(request.headers.get("authorization", ""))
    if token is None and body.credential is None:
        raise Unauthorized("A join token is needed: send it as 'token' or as the Bearer token.")
    joined = await run_in_threadpool(
        _membership(request).join,
        body.name,
        body.url,
        body.key,
        body.capabilities,
        token=token,
        credential=body.credential,
        replaced_by=replaced_by,
    )
    if token is not None and joined.how != "rejoined" and not body.replace:
        request_log(request).key_prefix = token[:TOKEN_PREFIX_LENGTH]  # which token let it in
    return {"name": joined.name, "credential": joined.credential}


async def node_credential(request: Request) -> str:
    """A route dependency: the credential of a node in the fleet, checked before the body."""
    credential = bearer_token(request.headers.get("authorization", ""))
    if credential is None:
        raise Unauthorized("Send this node's credential as 'Authorization: Bearer <credential>'.")
    await run_in_threadpool(_membership(request).node_of, credential)
    return credential


@router.post("/heartbeat")
async def heartbeat(
    body: Heartbeat, request: Request, credential: str = Depends(node_credential)
) -> dict[str, Any]:
    """Record a node's state: up, seen now, serving what it reports."""
    name = await run_in_threadpool(
        _membership(request).heartbeat, credential, body.models, body.stats, body.url
    )
    return {"name": name, "state": "up"}
