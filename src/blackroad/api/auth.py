"""Who is calling: the Bearer key of each request, checked, as a ``Principal``, and admitted.

Both APIs take ``Authorization: Bearer <key>`` (the Ollama client sends the
same header). A key is either the shared ``BLACKROAD_API_KEY`` (the local
admin) or a user's key from the directory. When auth is not required (a
loopback bind without a shared key), a request without a valid key runs as
the local admin, so Ollama clients that send no key, or a dummy one, work.

``POST /api/login`` trades a user's name and password for a session key.
Wrong keys and wrong passwords count against the client's address
(``identity/lockout.py``); an accepted caller is then admitted against its
limits (``identity/quotas.py``), and the request log frees the admission with
the request's tokens when the request ends, whichever way it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from blackroad.api.recording import request_log
from blackroad.api.state import directory, lockout, quotas, settings
from blackroad.errors import Forbidden, Unauthorized
from blackroad.identity.keys import bearer_token, same_secret
from blackroad.identity.quotas import Admission
from blackroad.identity.types import LOCAL_ADMIN, Principal, Scope

router = APIRouter(prefix="/api")


async def authenticate(request: Request, scope: Scope) -> Principal:
    """The caller, if its key has ``scope``, admitted against its limits."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        _check_scope(known, scope)
        return known
    config = settings(request)
    client = _client(request)
    guard = lockout(request)
    guard.check(client)
    token = bearer_token(request.headers.get("authorization", ""))
    refusal = Unauthorized(
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
    )
    caller: Principal | None = None
    admission: Admission | None = None
    if token is not None:
        if config.api_key is not None and same_secret(token, config.api_key):
            caller = LOCAL_ADMIN
        else:
            try:
                # On the event loop: one indexed read (WAL readers never wait for
                # writers), cheaper than a hop to a worker thread.
                caller, admission = _admitted(request, token, scope)
            except Unauthorized as exc:
                refusal = exc  # the key itself never appears in an error or a log
                if config.auth_required:
                    await asyncio.sleep(guard.failed(client))
    if caller is None:
        if config.auth_required:
            raise refusal
        caller = LOCAL_ADMIN
    record = request_log(request)
    record.user, record.key_prefix, record.admission = caller.user, caller.key_prefix, admission
    _check_scope(caller, scope)
    request.state.principal = caller
    return caller


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _check_scope(caller: Principal, scope: Scope) -> None:
    if scope not in caller.scopes:
        raise Forbidden(f"this API key does not have the {scope!r} scope")


def _admitted(request: Request, token: str, scope: Scope) -> tuple[Principal, Admission | None]:
    """The key's principal, admitted against its limits if in scope.

    A request refused for its scope costs no quota.
    """
    caller = directory(request).authenticate(token)
    return caller, quotas(request).admit(caller) if scope in caller.scopes else None


def require_scope(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A route dependency: an authenticated caller whose key has ``scope``."""

    async def check(request: Request) -> Principal:
        return await authenticate(request, scope)

    return check


def principal(request: Request) -> Principal:
    """The caller, as authenticated by the route's dependency."""
    caller: Principal = request.state.principal
    return caller


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)
    expires_in: int = Field(default=12 * 3600, ge=60, le=30 * 86400, description="seconds")


@router.post("/login", status_code=201)
async def log_in(body: LoginRequest, request: Request) -> dict[str, Any]:
    """A session key (the user's scopes, expiring) for a name and password."""
    client, guard = _client(request), lockout(request)
    guard.check(client)
    lifetime = timedelta(seconds=body.expires_in)
    try:
        new = await run_in_threadpool(directory(request).log_in, body.name, body.password, lifetime)
    except Unauthorized:
        await asyncio.sleep(guard.failed(client))
        raise
    request_log(request).user, request_log(request).key_prefix = body.name, new.prefix
    return {
        "key": new.secret,
        "prefix": new.prefix,
        "user": body.name,
        "expires_in": body.expires_in,
    }
