"""The caller's own account: ``GET /api/me`` and their own keys under ``/api/keys``.

A user manages only their own keys here: another user's key is answered as
if it did not exist (404), so prefixes cannot be probed. Keys made here have
the inference scope only; admin keys are made by an admin (``/api/admin/keys``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from blackroad.api.auth import principal, require_scope
from blackroad.api.identity_types import KeyCreate, key_view
from blackroad.api.state import directory
from blackroad.errors import Forbidden, InvalidRequest

router = APIRouter(prefix="/api", dependencies=[Depends(require_scope("inference"))])


@router.get("/me")
async def me(request: Request) -> dict[str, Any]:
    caller = principal(request)
    return {
        "user": caller.user,
        "role": caller.role,
        "scopes": sorted(caller.scopes),
        "key_prefix": caller.key_prefix,
        "models": [sorted(patterns) for patterns in caller.allowlists],
        "limits": {"user": vars(caller.user_limits), "key": vars(caller.key_limits)},
    }


@router.get("/keys")
async def my_keys(request: Request) -> dict[str, Any]:
    rows = await run_in_threadpool(directory(request).keys, principal(request).user)
    return {"keys": [key_view(key, owner) for key, owner in rows]}


@router.post("/keys", status_code=201)
async def create_my_key(body: KeyCreate, request: Request) -> dict[str, Any]:
    if body.scopes != ["inference"]:
        raise Forbidden("keys made here have the 'inference' scope only; ask an admin")
    caller = principal(request)
    if caller.key_prefix is None:
        raise InvalidRequest(
            "the local admin has no account to hold keys; make keys for users with "
            "POST /api/admin/keys"
        )
    user = caller.user
    limits = body.limits.changes() if body.limits else None

    def create() -> dict[str, Any]:
        found = directory(request)
        new = found.create_key(user, body.name, body.scopes, body.models, body.expires_at(), limits)
        return {"key": new.secret, **key_view(*found.key(new.prefix))}

    return await run_in_threadpool(create)


@router.delete("/keys/{prefix}", status_code=204)
async def revoke_my_key(prefix: str, request: Request) -> Response:
    await run_in_threadpool(directory(request).revoke_key, prefix, principal(request).user)
    return Response(status_code=204)
