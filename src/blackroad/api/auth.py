"""API-key authentication (one shared key until the identity package lands)."""

from __future__ import annotations

import hmac

from fastapi import Request

from blackroad.api.state import settings
from blackroad.errors import Unauthorized


async def require_api_key(request: Request) -> None:
    expected = settings(request).api_key
    if expected is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
    # Constant-time comparison; the key itself never appears in an error or a log.
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("Incorrect API key provided.")
