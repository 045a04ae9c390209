"""API-key authentication (one shared key until the identity package lands)."""

from __future__ import annotations

from fastapi import Request

from blackroad.api.state import settings
from blackroad.errors import Unauthorized
from blackroad.identity.keys import bearer_token, same_secret


async def require_api_key(request: Request) -> None:
    expected = settings(request).api_key
    if expected is None:
        return
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None:
        raise Unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
    # The key itself never appears in an error or a log.
    if not same_secret(token, expected):
        raise Unauthorized("Incorrect API key provided.")
