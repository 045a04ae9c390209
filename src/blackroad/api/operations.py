"""Operations endpoints: Prometheus metrics, and health probes for load balancers.

- ``GET /metrics``: the app's ``Metrics`` in the Prometheus text format. When
  keys are required it needs an admin key: the counts cover every user.
- ``GET /health/live``: 200 whenever the process serves.
- ``GET /health/ready``: 200 while this replica can serve: its database
  answers and is at the schema this code knows (``store/readiness.py``), and
  at least one model can be served (the catalog lists a model whose file is
  readable); else 503 with the reason. A proxy in front of several replicas
  sends requests to the ready ones.

The probes need no key and are not recorded (proxies poll them every few
seconds). Without a key (where keys are required) they say how many models
can be served, not which: their names are for known callers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from blackroad.api.auth import known_caller, require_scope
from blackroad.api.state import inference
from blackroad.identity.types import LOCAL_ADMIN
from blackroad.models.types import ModelEntry
from blackroad.store.readiness import DatabaseReadiness
from blackroad.usage.metrics import CONTENT_TYPE, Metrics

router = APIRouter(include_in_schema=False)


def metrics(request: Request) -> Metrics:
    value: Metrics = request.app.state.metrics
    return value


@router.get("/metrics", dependencies=[Depends(require_scope("admin"))])
async def prometheus(request: Request) -> Response:
    # Generated on the event loop: the engine gauges read the pool, which only
    # the loop changes, and a scrape of this small registry takes well under 1 ms.
    return Response(metrics(request).exposition(), media_type=CONTENT_TYPE)


@router.api_route("/health/live", methods=["GET", "HEAD"])
async def live() -> dict[str, str]:
    return {"status": "ok"}


def readable(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError:
        return False
    return True


def servable(entries: list[ModelEntry]) -> list[str]:
    """The names of the models whose file can be read now."""
    return [entry.name for entry in entries if readable(entry.path)]


@router.api_route("/health/ready", methods=["GET", "HEAD"])
async def ready(request: Request) -> JSONResponse:
    readiness: DatabaseReadiness = request.app.state.readiness
    problem = await readiness.problem()
    if problem is not None:  # checked first: the catalog and the caller's key are read from it
        return JSONResponse({"status": "not ready", "reason": problem}, status_code=503)
    # Readiness is the node's, whatever one caller may use: ask as the local admin.
    entries = await inference(request).models(LOCAL_ADMIN)
    models = await asyncio.to_thread(servable, entries)
    body: dict[str, Any] = {"status": "ready" if models else "not ready", "servable": len(models)}
    if await known_caller(request) is not None:
        body["models"] = models  # what this server holds is not for anonymous probes
    if not models:
        return JSONResponse({**body, "reason": "no model can be served"}, status_code=503)
    return JSONResponse(body)
