"""Who is calling: the Bearer key of each request, checked, as a ``Principal``.

Both APIs take ``Authorization: Bearer <key>`` (the Ollama client sends the
same header). A key is either the shared ``BLACKROAD_API_KEY`` (the local
admin) or a user's key from the directory. When auth is not required (a
loopback bind without a shared key), a request without a valid key runs as
the local admin, so Ollama clients that send no key, or a dummy one, work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from blackroad.api.recording import request_log
from blackroad.api.state import directory, settings
from blackroad.errors import Forbidden, Unauthorized
from blackroad.identity.keys import bearer_token, same_secret
from blackroad.identity.types import LOCAL_ADMIN, Principal, Scope


async def authenticate(request: Request) -> Principal:
    config = settings(request)
    token = bearer_token(request.headers.get("authorization", ""))
    principal: Principal | None = None
    refusal = Unauthorized(
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
    )
    if token is not None:
        if config.api_key is not None and same_secret(token, config.api_key):
            principal = LOCAL_ADMIN
        else:
            try:
                principal = await run_in_threadpool(directory(request).authenticate, token)
            except Unauthorized as exc:
                refusal = exc  # the key itself never appears in an error or a log
    if principal is None:
        if config.auth_required:
            raise refusal
        principal = LOCAL_ADMIN
    request.state.principal = principal
    record = request_log(request)
    record.user, record.key_prefix = principal.user, principal.key_prefix
    return principal


def require_scope(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A route dependency: an authenticated caller whose key has ``scope``."""

    async def check(request: Request) -> Principal:
        principal = await authenticate(request)
        if scope not in principal.scopes:
            raise Forbidden(f"this API key does not have the {scope!r} scope")
        return principal

    return check


def principal(request: Request) -> Principal:
    """The caller, as authenticated by the route's dependency."""
    caller: Principal = request.state.principal
    return caller
