"""Native admin routes under ``/api/admin``: users, their keys, groups. Admin scope only.

Every change takes effect on the next request: keys, limits and model access
are read from the database on each request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from blackroad.api.auth import require_scope
from blackroad.api.identity_types import (
    GroupCreate,
    GroupUpdate,
    KeyUpdate,
    UserCreate,
    UserKeyCreate,
    UserUpdate,
    group_view,
    key_view,
    user_view,
)
from blackroad.api.state import directory
from blackroad.identity.directory import Directory

router = APIRouter(prefix="/api/admin", dependencies=[Depends(require_scope("admin"))])
T = TypeVar("T")
NO_CONTENT = 204


async def _run(request: Request, action: Callable[[Directory], T]) -> T:
    """A directory call off the event loop (each one is a SQLite transaction)."""
    return await run_in_threadpool(action, directory(request))


# -- users -------------------------------------------------------------------


def _user(d: Directory, name: str) -> dict[str, Any]:
    return user_view(d.user(name), d.groups_of(name))


@router.get("/users")
async def list_users(request: Request) -> dict[str, Any]:
    def listing(d: Directory) -> list[dict[str, Any]]:
        members: dict[str, list[str]] = {}
        for group, names in d.groups():
            for name in names:
                members.setdefault(name, []).append(group.name)
        return [user_view(user, members.get(user.name, [])) for user in d.users()]

    return {"users": await _run(request, listing)}


@router.post("/users", status_code=201)
async def add_user(body: UserCreate, request: Request) -> dict[str, Any]:
    limits = body.limits.changes() if body.limits else None

    def add(d: Directory) -> dict[str, Any]:
        d.add_user(body.name, body.role, body.password, limits, body.groups)
        return _user(d, body.name)

    return await _run(request, add)


@router.get("/users/{name}")
async def get_user(name: str, request: Request) -> dict[str, Any]:
    return await _run(request, lambda d: _user(d, name))


@router.patch("/users/{name}")
async def update_user(name: str, body: UserUpdate, request: Request) -> dict[str, Any]:
    limits = body.limits.changes() if body.limits else None

    def update(d: Directory) -> dict[str, Any]:
        d.update_user(name, body.role, body.password, body.disabled, limits)
        return _user(d, name)

    return await _run(request, update)


# -- keys --------------------------------------------------------------------


@router.get("/keys")
async def list_keys(
    request: Request, user: str | None = Query(None, max_length=128)
) -> dict[str, Any]:
    rows = await _run(request, lambda d: d.keys(user))
    return {"keys": [key_view(key, owner) for key, owner in rows]}


@router.post("/keys", status_code=201)
async def create_key(body: UserKeyCreate, request: Request) -> dict[str, Any]:
    limits = body.limits.changes() if body.limits else None

    def create(d: Directory) -> dict[str, Any]:
        new = d.create_key(
            body.user, body.name, body.scopes, body.models, body.expires_at(), limits
        )
        return {"key": new.secret, **key_view(*d.key(new.prefix))}

    return await _run(request, create)


@router.patch("/keys/{prefix}")
async def update_key(prefix: str, body: KeyUpdate, request: Request) -> dict[str, Any]:
    def update(d: Directory) -> dict[str, Any]:
        d.set_key_limits(prefix, body.limits.changes())
        return key_view(*d.key(prefix))

    return await _run(request, update)


@router.delete("/keys/{prefix}", status_code=NO_CONTENT)
async def revoke_key(prefix: str, request: Request) -> Response:
    await _run(request, lambda d: d.revoke_key(prefix))
    return Response(status_code=NO_CONTENT)


# -- groups ------------------------------------------------------------------


def _group(d: Directory, name: str) -> dict[str, Any]:
    for group, members in d.groups():
        if group.name == name:
            return group_view(group, members)
    raise AssertionError("the group was just written")


@router.get("/groups")
async def list_groups(request: Request) -> dict[str, Any]:
    rows = await _run(request, lambda d: d.groups())
    return {"groups": [group_view(group, members) for group, members in rows]}


@router.post("/groups", status_code=201)
async def add_group(body: GroupCreate, request: Request) -> dict[str, Any]:
    def add(d: Directory) -> dict[str, Any]:
        d.add_group(body.name, body.models, body.members)
        return _group(d, body.name)

    return await _run(request, add)


@router.patch("/groups/{name}")
async def update_group(name: str, body: GroupUpdate, request: Request) -> dict[str, Any]:
    def update(d: Directory) -> dict[str, Any]:
        if "models" in body.model_fields_set:
            d.set_group_models(name, body.models)
        d.change_members(name, body.add, body.remove)
        return _group(d, name)

    return await _run(request, update)


@router.delete("/groups/{name}", status_code=NO_CONTENT)
async def delete_group(name: str, request: Request) -> Response:
    await _run(request, lambda d: d.delete_group(name))
    return Response(status_code=NO_CONTENT)
