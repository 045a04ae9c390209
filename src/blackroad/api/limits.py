"""Refusing request bodies above the configured size, before they are buffered."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blackroad.api.errors import error_response
from blackroad.errors import PayloadTooLarge


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, unlimited: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Paths that stream large bodies to disk themselves (model blobs).
        self.unlimited = unlimited

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is larger than the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.unlimited):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(scope["path"], self._too_large())(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # A chunked body has no length up front: fail the handler's read.
                    # FastAPI re-raises HTTPException from body parsing untouched.
                    raise HTTPException(413, self._too_large().message)
            return message

        await self.app(scope, counted, send)
