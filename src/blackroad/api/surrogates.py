"""Refusing a JSON body whose strings are not Unicode text: a lone UTF-16 surrogate.

JSON may escape any UTF-16 code unit, so ``"\\udcff"`` is valid JSON, and
Python's decoder gives a ``str`` holding that lone surrogate. No UTF-8 encoder
takes it: llama.cpp's tokenizer, SQLite and the files the server writes all
raised ``UnicodeEncodeError`` deep inside a request (a 500 from ``/api/chat``,
``/v1/chat/completions``, ``/api/embed``, found by fuzzing). Every JSON body
is checked here, once, as the route reads it: one that holds a lone surrogate
is a 400 in the API's own error format (FastAPI maps an ``HTTPException``
raised while it reads the body). A pair that escapes one character (an emoji
as ``"\\ud83d\\ude00"``) is text, and passes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The escape of a surrogate: the only way one gets into a body (raw UTF-8 bytes cannot hold one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
REFUSAL = "its JSON holds a lone UTF-16 surrogate (such as \\udcff), which is not text"


def holds_lone_surrogate(body: bytes) -> bool:
    """Whether the JSON ``body`` has a key or string holding a lone surrogate."""
    if not _SURROGATE_ESCAPE.search(body):
        return False  # the common case: a scan of the bytes, no second parse
    try:
        pending: list[Any] = [json.loads(body)]
    except (ValueError, RecursionError):
        return False  # not JSON: the route's own parsing says so
    while pending:  # a loop, not recursion: a body may nest deeply
        value = pending.pop()
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _is_json(scope: Scope) -> bool:
    """A body FastAPI parses as JSON: declared so, or with no Content-Type at all."""
    content_type = Headers(scope=scope).get("content-type")
    return content_type is None or "json" in content_type.lower()


class SurrogateGuard:
    """Keeps a JSON body as the route reads it, and checks it whole at its last chunk."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        escaped = False  # whether a surrogate's escape was seen, perhaps across chunks
        tail = b""  # the last bytes read: an escape may begin there

        async def checked() -> Message:
            nonlocal escaped, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen = _SURROGATE_ESCAPE.search(chunk) or _SURROGATE_ESCAPE.search(tail + chunk[:5])
                escaped = escaped or seen is not None
                tail = (tail + chunk[-5:])[-5:]
                chunks.append(chunk)
                if not message.get("more_body", False):
                    body = b"".join(chunks) if escaped else b""
                    chunks.clear()
                    if escaped and holds_lone_surrogate(body):
                        raise HTTPException(400, REFUSAL)
            return message

        await self.app(scope, checked, send)
