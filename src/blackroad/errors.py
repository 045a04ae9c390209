"""The one exception hierarchy of BlackRoad.

Every layer raises these; only ``api/`` turns them into a protocol's error
format. Each carries the HTTP status it maps to, so the mapping lives in one
place per protocol and never in business code.

    BlackRoadError
    ├── InvalidRequest      400  (``param`` names the offending field)
    │   ├── ContextLengthExceeded
    │   └── LimitExceeded   422  (the work it asks for passed a bound: time, memory, output)
    ├── Unauthorized        401
    ├── Forbidden           403
    ├── NotFound            404  (a user, group or key)
    │   └── ModelNotFound
    ├── Conflict            409  (the thing is not in a state that allows it)
    ├── PayloadTooLarge     413
    ├── RateLimited         429  (``retry_after`` seconds; a limit, a budget or a lockout)
    ├── ServiceUnavailable  503  (``retry_after`` seconds)
    │   ├── QueueFull
    │   └── NodeUnavailable  (a remote node failed: another may serve)
    ├── EngineError         500
    └── HTTPError           any  (unknown route, wrong method)
"""

from __future__ import annotations


class BlackRoadError(Exception):
    """Base of every error BlackRoad raises on purpose."""

    status_code = 500
    code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(BlackRoadError):
    status_code = 400
    code = "invalid_value"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class LimitExceeded(InvalidRequest):
    """Well-formed, but the work it asks for went past a bound (``bounded.py``)."""

    status_code = 422
    code = "limit_exceeded"


class Unauthorized(BlackRoadError):
    status_code = 401
    code = "invalid_api_key"


class Forbidden(BlackRoadError):
    status_code = 403
    code = "permission_denied"


class NotFound(BlackRoadError):
    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist.")
        self.model = model


class Conflict(BlackRoadError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(BlackRoadError):
    status_code = 413
    code = "request_too_large"


class RateLimited(BlackRoadError):
    """A limit was reached. ``kind`` says which, as OpenAI's error ``type`` does."""

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: int, kind: str = "requests") -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.kind = kind
        if kind == "insufficient_quota":
            self.code = "insufficient_quota"


class ServiceUnavailable(BlackRoadError):
    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(ServiceUnavailable):
    code = "queue_full"


class NodeUnavailable(ServiceUnavailable):
    """A remote node could not be reached, timed out, or failed (5xx, a cut stream).

    ``dead`` says the node itself is gone (refused the connection, or dropped
    one mid-answer), not merely slow or failing one request: the fleet takes
    such a node out of rotation at once. ``refused`` says it refused
    BlackRoad's credential: asked again soon, it would count every attempt
    as a wrong key and lock BlackRoad out.
    """

    code = "node_unavailable"

    def __init__(
        self, message: str, retry_after: int = 1, dead: bool = False, refused: bool = False
    ) -> None:
        super().__init__(message, retry_after)
        self.dead = dead
        self.refused = refused


class EngineError(BlackRoadError):
    status_code = 500
    code = "engine_error"


class HTTPError(BlackRoadError):
    """A failure at the HTTP level that carries its own status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = None
