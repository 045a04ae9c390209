"""Who is calling: the Bearer key of each request, checked, as a ``Principal``, and admitted.

Both APIs take ``Authorization: Bearer <key>`` (the Ollama client sends the
same header). A key is either the shared ``BLACKROAD_API_KEY`` (the local
admin) or a user's key from the directory. When auth is not required (a
loopback bind without a shared key), a request without a valid key runs as
the local admin, so Ollama clients that send no key, or a dummy one, work.

``POST /api/login`` trades a user's name and password for a session key.
``POST /api/session`` does the same for a browser: the key goes into an
HttpOnly, SameSite=Strict cookie (``blackroad_session``) the page cannot
read, with a CSRF token bound to it (an HMAC of the key) in a readable cookie
(``blackroad_csrf``) and the body. A request without a Bearer key is
authenticated by that cookie; if its method is unsafe it must also send the
token as ``X-CSRF-Token`` (double submit, compared in constant time) or get
403. ``DELETE /api/session`` revokes the cookie's key and clears both.
Wrong keys and wrong passwords count against the client's address
(``identity/lockout.py``); an accepted caller is then admitted against its
limits (``identity/quotas.py``), and the request log frees the admission with
the request's tokens when the request ends, whichever way it ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from blackroad.api.proxies import client_address
from blackroad.api.recording import request_log
from blackroad.api.state import directory, lockout, quotas, settings
from blackroad.config import LOOPBACK_HOSTS
from blackroad.errors import Forbidden, RateLimited, Unauthorized
from blackroad.identity.directory import NewKey
from blackroad.identity.keys import bearer_token, same_secret
from blackroad.identity.quotas import Admission
from blackroad.identity.types import LOCAL_ADMIN, Principal, Scope

router = APIRouter(prefix="/api")

SESSION_COOKIE = "blackroad_session"
CSRF_COOKIE = "blackroad_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_key: str) -> str:
    """The CSRF token of a session: derived from its key, so nothing more is stored."""
    return hmac.new(session_key.encode(), b"blackroad-csrf", hashlib.sha256).hexdigest()


async def authenticate(request: Request, scope: Scope) -> Principal:
    """The caller, if its key has ``scope``, admitted against its limits."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        _check_scope(known, scope)
        return known
    config = settings(request)
    client = client_address(request.scope)
    guard = lockout(request)
    guard.check(client)
    token = bearer_token(request.headers.get("authorization", ""))
    from_cookie = token is None and bool(request.cookies.get(SESSION_COOKIE))
    if from_cookie:
        token = request.cookies[SESSION_COOKIE]
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
        caller, from_cookie = LOCAL_ADMIN, False
    record = request_log(request)
    record.user, record.key_prefix, record.admission = caller.user, caller.key_prefix, admission
    if from_cookie and token is not None and request.method not in SAFE_METHODS:
        _check_csrf(request, token)
    _check_scope(caller, scope)
    request.state.principal = caller
    return caller


async def known_caller(request: Request) -> Principal | None:
    """The caller, if it may make inference requests; None for anyone else.

    For routes anyone may call that tell a known caller more. A wrong key still
    counts against the client's address, as anywhere else.
    """
    try:
        return await authenticate(request, "inference")
    except (Unauthorized, Forbidden, RateLimited):
        return None


def _check_csrf(request: Request, session_key: str) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not same_secret(sent, csrf_token(session_key)):
        raise Forbidden(
            f"a request authenticated by the session cookie must send its {CSRF_HEADER} header"
        )


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


async def _session_key(body: LoginRequest, request: Request) -> NewKey:
    """A new session key for ``body``'s name and password; wrong ones count against the client."""
    client, guard = client_address(request.scope), lockout(request)
    guard.check(client)
    lifetime = timedelta(seconds=body.expires_in)
    try:
        new = await run_in_threadpool(directory(request).log_in, body.name, body.password, lifetime)
    except Unauthorized:
        await asyncio.sleep(guard.failed(client))
        raise
    request_log(request).user, request_log(request).key_prefix = body.name, new.prefix
    return new


@router.post("/login", status_code=201)
async def log_in(body: LoginRequest, request: Request) -> dict[str, Any]:
    """A session key (the user's scopes, expiring) for a name and password."""
    new = await _session_key(body, request)
    return {
        "key": new.secret,
        "prefix": new.prefix,
        "user": body.name,
        "expires_in": body.expires_in,
    }


def _secure_cookies(request: Request) -> bool:
    """Whether the browser will keep a Secure cookie: over https, and on loopback (Chromium
    and Firefox treat http://127.0.0.1 and localhost as secure contexts). On plain http to
    another address it would drop them, so they are sent without the flag there."""
    host = request.url.hostname or ""
    return request.url.scheme == "https" or host in LOOPBACK_HOSTS or host.startswith("127.")


@router.post("/session", status_code=201)
async def open_session(body: LoginRequest, request: Request, response: Response) -> dict[str, Any]:
    """Log a browser in: the session key in an HttpOnly cookie, its CSRF token readable."""
    new = await _session_key(body, request)
    csrf = csrf_token(new.secret)
    secure = _secure_cookies(request)
    for name, value, http_only in ((SESSION_COOKIE, new.secret, True), (CSRF_COOKIE, csrf, False)):
        response.set_cookie(
            name,
            value,
            max_age=body.expires_in,
            path="/",
            secure=secure,
            httponly=http_only,
            samesite="strict",
        )
    return {
        "user": body.name,
        "prefix": new.prefix,
        "expires_in": body.expires_in,
        "csrf_token": csrf,
    }


@router.delete("/session", status_code=204, dependencies=[Depends(require_scope("inference"))])
async def close_session(request: Request) -> Response:
    """Log a browser out: the cookie's session key revoked, both cookies cleared."""
    caller, key = principal(request), request.cookies.get(SESSION_COOKIE, "")
    if caller.key_prefix is not None and key.startswith(caller.key_prefix):
        await run_in_threadpool(directory(request).revoke_key, caller.key_prefix, caller.user)
    response = Response(status_code=204)
    secure = _secure_cookies(request)
    for name, http_only in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=http_only, samesite="strict")
    return response
