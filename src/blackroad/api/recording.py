"""Recording every API request, in the database and the metrics, before its response ends.

``RecordingMiddleware`` puts a ``RequestLog`` in the ASGI scope state; route
handlers fill in what they know (model, tokens, time to first token). The
record is committed exactly once, by whichever comes first:

- a streaming handler calling ``commit()`` just before its final event
  (``data: [DONE]``), so a client that has read the whole stream can rely on
  the record existing;
- the middleware, before it forwards the last body message of any response;
- the middleware, after a client went away mid-response (status 499, as
  nginx logs it).

Committing also counts the request in the app's ``Metrics`` (by route
template, read from the scope once routing has happened), and appends its
audit record (``audit/``) in the same database transaction as the request
record: an inference or a change is audited exactly when it is recorded.
What the record holds of the body is ``audit/capture.py``'s to say (never a
secret, nor a digest of one); the route decides whether a body that is not
JSON is content (``takes_content``); and the error recorded is scrubbed of
any secret the body held, since a validation error may quote its input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi.params import Form
from fastapi.routing import APIRoute
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blackroad.api.proxies import client_address
from blackroad.audit.capture import Captured, Received, Text, entry, kind_of
from blackroad.audit.log import AuditLog
from blackroad.audit.redact import is_secret_path, scrub
from blackroad.identity.quotas import Admission
from blackroad.store.database import Database
from blackroad.store.schema import RequestRecord
from blackroad.usage.metrics import Metrics

CLIENT_CLOSED = 499


@dataclass
class RequestLog:
    database: Database
    metrics: Metrics
    method: str
    path: str
    client: str | None
    # The ASGI scope: routing adds the matched route to it after the log is made.
    scope: Scope = field(default_factory=dict, repr=False)
    started: float = field(default_factory=time.perf_counter)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    model: str | None = None
    user: str | None = None  # set by authentication (api/auth.py)
    key_prefix: str | None = None
    node: str | None = None  # the node that served the request
    admission: Admission | None = None  # the caller's limits, freed on commit (api/auth.py)
    # Where the request is audited (None: not audited), and what passed through.
    audit: AuditLog | None = None
    received: Received = field(default_factory=lambda: Received(False, 0))
    generated: Text = field(default_factory=lambda: Text(False, 0))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    status: int = 200
    error: str | None = None
    committed: bool = False

    def first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000

    def served_by(self, node: str) -> None:
        """The fleet routed (the latest part of) this request to ``node``."""
        self.node = node

    def add_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    async def commit(self) -> None:
        if self.committed:
            return
        self.committed = True
        duration = time.perf_counter() - self.started
        if self.admission is not None:
            self.admission.finish(self.prompt_tokens + self.completion_tokens)
        route = self.scope.get("route")
        self.metrics.observe(
            path=self.path,
            route=getattr(route, "path_format", None),
            model=self.model,
            status=self.status,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_seconds=None if self.ttft_ms is None else self.ttft_ms / 1000,
            duration_seconds=duration,
        )
        # Shielded: a client that leaves cancels the task writing its record,
        # and a write still queued for a worker thread would be dropped with it.
        # In a thread: judging the body parses it.
        await asyncio.shield(asyncio.to_thread(self._write, duration))

    def _write(self, duration: float) -> None:
        received = self.received.captured(takes_content(self.scope.get("route")))
        record = RequestRecord(
            created_at=self.created_at,
            method=self.method,
            path=self.path[:256],
            model=self.model,
            client=self.client,
            user=self.user,
            key_prefix=self.key_prefix,
            node=self.node,
            status=self.status,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_ms=self.ttft_ms,
            duration_ms=duration * 1000,
            error=None if self.error is None else scrub(self.error, received.secrets),
        )
        self.database.record_request(record, self._audited(record, received))

    def _audited(
        self, record: RequestRecord, received: Captured
    ) -> Callable[[Connection], object] | None:
        """The audit record's append, for the request record's transaction; None if not audited."""
        kind = kind_of(self.method, self.path)
        if self.audit is None or kind is None:
            return None
        facts = {
            name: getattr(record, name)
            for name in ("method", "path", "model", "client", "user", "key_prefix", "node",
                         "status", "prompt_tokens", "completion_tokens", "ttft_ms",
                         "duration_ms", "error")
        }  # fmt: skip
        audit, audited = self.audit, entry(kind, facts, received, self.generated)
        return lambda connection: audit.append_to(connection, audited)


def takes_content(route: object) -> bool:
    """Whether a body sent to ``route`` is content (raw bytes, a form upload), not a document.

    A route that declares no body reads it raw (a model blob); one whose body
    is a form takes uploads, unless a form field is named like a secret. Every
    other route takes JSON, and so does no route (a refusal before routing).
    """
    if not isinstance(route, APIRoute):
        return False
    body = route.body_field
    if body is None:
        return True
    form = getattr(body.field_info.annotation, "model_fields", {})
    return isinstance(body.field_info, Form) and not is_secret_path(form)


def request_log(request: Request) -> RequestLog:
    log: RequestLog = request.state.request_log
    return log


class RecordingMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        database: Database,
        metrics: Metrics,
        node: str,
        audit: AuditLog,
        text_limit: int,
        unrecorded: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.database = database
        self.metrics = metrics
        self.audit = audit
        self.text_limit = text_limit  # the longest text the audit keeps (by policy) whole
        self.node = node  # this one, until the fleet routes a request elsewhere
        # Paths not recorded: machine chatter (a node's heartbeat, a proxy's probe, every few
        # seconds) that would drown the requests people make.
        self.unrecorded = unrecorded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        log = RequestLog(
            database=self.database,
            metrics=self.metrics,
            method=scope["method"],
            path=scope["path"],
            client=client_address(scope),
            scope=scope,
            node=self.node,
            committed=scope["path"] in self.unrecorded,  # as if already written: never written
            audit=self.audit,
            received=Received(self.audit.keep_texts, self.text_limit),
            generated=Text(self.audit.keep_texts, self.text_limit),
        )
        scope.setdefault("state", {})["request_log"] = log
        finished = False

        async def receive_recorded() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                log.received.add(message.get("body", b""))
            return message

        async def send_recorded(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.start":
                log.status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await log.commit()
                finished = True
            await send(message)

        try:
            await self.app(scope, receive_recorded, send_recorded)
        except asyncio.CancelledError:
            log.status = CLIENT_CLOSED
            raise
        except Exception as exc:
            log.status, log.error = 500, describe_error(exc)
            raise
        else:
            if not finished:
                log.status = CLIENT_CLOSED
        finally:
            # Shielded: this may run while the request task is being cancelled.
            await asyncio.shield(log.commit())


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]
