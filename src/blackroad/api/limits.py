"""Refusing request bodies above the configured size, before they are buffered."""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blackroad.api.errors import error_response
from blackroad.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """``max_bytes`` per body, except on paths matching one of ``overrides``' patterns.

    An override's limit may be ``None``: that path streams its body to disk
    itself (model blobs) and takes any size.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        overrides: tuple[tuple[str, int | None], ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = tuple((re.compile(pattern), limit) for pattern, limit in overrides)

    def _limit(self, path: str) -> int | None:
        for pattern, limit in self.overrides:
            if pattern.match(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(scope["path"], too_large)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # A chunked body has no length up front: fail the handler's read.
                    # FastAPI re-raises HTTPException from body parsing untouched.
                    raise HTTPException(413, too_large.message)
            return message

        await self.app(scope, counted, send)
