"""``/api/fleet``: the nodes of the fleet, this one first; adding and removing peers. Admins only.

Peers are refreshed by the app in the background (``fleet_refresh_seconds``);
what is listed is their state as of the last refresh. A node's key is never
shown.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from blackroad.api.auth import require_scope
from blackroad.api.state import inference, nodes, settings
from blackroad.fleet.types import NodeInfo

router = APIRouter(prefix="/api/fleet", dependencies=[Depends(require_scope("admin"))])


class NodeAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: Literal["ollama", "openai"]
    url: str = Field(min_length=8, max_length=2048)
    key: str | None = Field(default=None, max_length=4096)


def node_view(node: NodeInfo) -> dict[str, Any]:
    view = dataclasses.asdict(node)
    view["models"] = list(node.models)
    view["last_seen"] = None if node.last_seen is None else node.last_seen.isoformat()
    return view


@router.get("")
async def fleet(request: Request) -> dict[str, Any]:
    local = await inference(request).catalog_names()
    this = {
        "name": settings(request).node_name,
        "kind": "embedded",
        "url": None,
        "state": "up",
        "models": local,
        "last_seen": None,
        "last_error": None,
    }
    peers = await run_in_threadpool(nodes(request).nodes)
    return {"nodes": [this, *(node_view(node) for node in peers)]}


@router.post("/nodes", status_code=201)
async def add_node(body: NodeAdd, request: Request) -> dict[str, Any]:
    return node_view(await nodes(request).add(body.name, body.kind, body.url, body.key))


@router.delete("/nodes/{name}", status_code=204)
async def remove_node(name: str, request: Request) -> Response:
    await run_in_threadpool(nodes(request).remove, name)
    return Response(status_code=204)
