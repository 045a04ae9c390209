"""``GET /api/usage/cost``: energy, cost per 1M tokens and break-even against cloud APIs.

Admins only: it describes the whole installation. The figures come from the
request log and the cost settings; the model itself is ``usage/cost.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from blackroad.api.auth import require_scope
from blackroad.api.state import database, settings
from blackroad.identity.types import Principal
from blackroad.usage.cost import measure

router = APIRouter(prefix="/api")


@router.get("/usage/cost")
async def usage_cost(
    request: Request,
    days: int = Query(30, ge=1, le=3660),
    _: Principal = Depends(require_scope("admin")),
) -> dict[str, Any]:
    report = await run_in_threadpool(measure, database(request), settings(request), days)
    return dataclasses.asdict(report)
