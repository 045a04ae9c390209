"""``GET /api/usage``: requests, tokens and time per day, user, key and model.

Users see their own usage; admins see everyone's, or one user's with ``user=``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from blackroad.api.auth import require_scope
from blackroad.api.state import database
from blackroad.errors import Forbidden
from blackroad.identity.types import Principal

router = APIRouter(prefix="/api")


@router.get("/usage")
async def usage(
    request: Request,
    days: int = Query(7, ge=1, le=3660),
    user: str | None = Query(None, max_length=128),
    caller: Principal = Depends(require_scope("inference")),
) -> dict[str, Any]:
    if caller.role != "admin":
        if user not in (None, caller.user):
            raise Forbidden("only an admin can see another user's usage")
        user = caller.user
    since = datetime.now(UTC) - timedelta(days=days)
    rows = await run_in_threadpool(database(request).usage_by_day, since, user)
    return {"since": since.isoformat(), "user": user, "usage": rows}
