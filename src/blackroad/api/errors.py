"""Turning errors into each protocol's own error format.

OpenAI clients (paths under /v1) get ``{"error": {"message", "type", "param",
"code"}}``; everything else gets Ollama's ``{"error": "..."}``. Validation
errors from FastAPI/pydantic become 400s that name the offending field, never
FastAPI's default 422.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from blackroad.api.recording import describe_error, request_log
from blackroad.audit.redact import is_secret_path
from blackroad.errors import (
    BlackRoadError,
    HTTPError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
}


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def openai_error_body(exc: BlackRoadError) -> dict[str, Any]:
    if isinstance(exc, RateLimited):
        kind = exc.kind  # OpenAI's types for 429: "requests", "tokens", "insufficient_quota"
    else:
        kind = _OPENAI_TYPES.get(exc.status_code, "server_error")
    return {
        "error": {
            "message": exc.message,
            "type": kind,
            "param": getattr(exc, "param", None),
            "code": exc.code,
        }
    }


def error_response(path: str, exc: BlackRoadError) -> Response:
    if is_openai_path(path):
        body: dict[str, Any] = openai_error_body(exc)
    elif isinstance(exc, ModelNotFound):
        body = {"error": f"model '{exc.model}' not found"}  # Ollama's wording
    else:
        body = {"error": exc.message}
    headers = {}
    if isinstance(exc, ServiceUnavailable | RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


# Pydantic puts the member it tried into the location of a union error
# ("stop", "list[str]", 0). Field names here are snake_case identifiers, so a
# part with brackets, a dash, or a capital (a model class) is such a label.
_UNION_LABEL = re.compile(r"[\[\]-]|^[A-Z]|^(str|int|float|bool|list|dict)$")


def _location(loc: Sequence[str | int]) -> list[str | int]:
    parts = loc[1:] if loc and loc[0] == "body" else loc
    return [p for p in parts if isinstance(p, int) or not _UNION_LABEL.search(p)]


def _param(parts: Sequence[str | int]) -> str | None:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """The most telling pydantic error, phrased as OpenAI phrases it, naming its field.

    Of a union's failed members, the one that got deepest explains best (for
    ``prompt: [3]`` that is ``prompt[0]``, not "prompt is not a string"), and a
    range error ("at most 4 items") beats a plain type mismatch.
    """
    error = max(
        exc.errors(),
        key=lambda e: (len(_location(e.get("loc", ()))), not str(e.get("type")).endswith("_type")),
    )
    param = _param(_location(error.get("loc", ())))
    kind = error.get("type")
    if kind == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid "
            f"JSON (UTF-8): {error.get('ctx', {}).get('error', 'invalid JSON')}."
        )
    if param is None:
        return InvalidRequest("The request body must be a JSON object.")
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param)
    if is_secret_path(_location(error.get("loc", ()))):
        # A secret is never echoed: the message is recorded in the request log.
        return InvalidRequest(f"Invalid value for '{param}': {error['msg']}.", param=param)
    value = json.dumps(error.get("input"), default=str)[:200]
    return InvalidRequest(
        f"Invalid value for '{param}': {error['msg']} (got {value}).", param=param
    )


def install_error_handlers(app: FastAPI) -> None:
    async def on_blackroad_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BlackRoadError)
        request_log(request).error = exc.message
        return error_response(request.url.path, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        content_type = request.headers.get("content-type", "application/json")
        if "json" not in content_type:
            # Bodies are parsed as JSON only when declared so. A page in the
            # user's browser can POST a form or text/plain cross-site without a
            # CORS preflight; it cannot send application/json that way.
            return await on_blackroad_error(
                request,
                InvalidRequest(
                    f"Content-Type must be application/json, not {content_type[:100]!r}."
                ),
            )
        return await on_blackroad_error(request, validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error: BlackRoadError = HTTPError(exc.status_code, str(exc.detail))
        if exc.status_code == 400:
            error = InvalidRequest(f"We could not parse the body of your request: {exc.detail}.")
        elif exc.status_code == 413:
            error = PayloadTooLarge(str(exc.detail))
        return await on_blackroad_error(request, error)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        request_log(request).error = describe_error(exc)
        return error_response(request.url.path, BlackRoadError("internal server error"))

    app.add_exception_handler(BlackRoadError, on_blackroad_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
