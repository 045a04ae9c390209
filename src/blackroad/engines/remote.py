"""What the engines of remote nodes share: one pooled HTTP client, and their errors mapped.

Requests go through ``node_http.NodeClient`` (the hop every routed request
pays for, kept lean); the probes' occasional ``GET`` through httpx.

A node that cannot be reached, times out, answers 5xx or cuts a stream short
raises ``NodeUnavailable``: the node failed and another one may serve the
request (the fleet router retries on it). A 4xx is the request's own fault
and becomes the matching BlackRoad error, so the client gets it unchanged.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

from blackroad.engines.base import Chunk, Engine, EngineHealth
from blackroad.engines.node_http import (
    ConnectFailed,
    ConnectionCut,
    HopError,
    HopTimeout,
    NodeClient,
    Response,
    json_body,
)
from blackroad.errors import (
    BlackRoadError,
    InvalidRequest,
    ModelNotFound,
    NodeUnavailable,
)

# Reaching a node on the mesh takes milliseconds; a node that takes seconds to
# accept a connection is as good as down. A reply may take minutes on a Pi.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 600.0
RETRY_AFTER = 1
# Sent with every request to a node: a BlackRoad node that receives it serves
# the request itself and never routes it on, so two control planes that list
# each other (or one that lists itself) cannot bounce a request between them.
FORWARDED_HEADER = "X-BlackRoad-Forwarded"
Event = dict[str, Any]
# One line of a stream to the chunks it holds.
LineParser = Callable[[str], Iterable[Chunk]]
# The text of one streamed event (or one choice of it), if any.
TextOf = Callable[[Event], str | None]


def error_message(body: bytes) -> str:
    """The message of an OpenAI (``{"error": {"message"}}``), Ollama (``{"error"}``) or
    vLLM (``{"object": "error", "message"}``) error."""
    try:
        answer = json.loads(body)
        error = answer.get("error") or answer.get("message")
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:500]
    if isinstance(error, Mapping):
        error = error.get("message")
    return str(error)[:500]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client of a node: building one reads the CA bundle,
    ~17 ms of CPU, which a client made per probe paid every round (bench/fleet.py)."""
    return ssl.create_default_context()


def client_for(api_key: str | None) -> httpx.AsyncClient:
    """A client for a probe of one node, with BlackRoad's headers."""
    return httpx.AsyncClient(
        headers=node_headers(api_key),
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        verify=tls_context(),
    )


def node_headers(api_key: str | None) -> dict[str, str]:
    headers = {FORWARDED_HEADER: "1"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def unreachable(base_url: str, exc: httpx.TransportError | HopError) -> NodeUnavailable:
    """A transport failure as ``NodeUnavailable``; dead if no connection could be made."""
    dead = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | ConnectFailed)
    return NodeUnavailable(
        f"the node at {base_url} is unreachable: {type(exc).__name__}", RETRY_AFTER, dead=dead
    )


def refusal(base_url: str, message: str) -> NodeUnavailable:
    return NodeUnavailable(
        f"the node at {base_url} refused BlackRoad's key: {message}", RETRY_AFTER, refused=True
    )


async def get_json(base_url: str, path: str, api_key: str | None) -> Any:
    """``GET path`` on a node: its JSON, or ``NodeUnavailable`` if the node does not answer."""
    try:
        async with client_for(api_key) as client:
            response = await client.get(base_url.rstrip("/") + path)
    except httpx.TransportError as exc:
        raise unreachable(base_url, exc) from exc
    if response.status_code in (401, 403):
        raise refusal(base_url, error_message(response.content))
    if response.status_code != 200:
        raise NodeUnavailable(
            f"the node at {base_url} answered {response.status_code} to {path}: "
            f"{error_message(response.content)}",
            RETRY_AFTER,
        )
    return response.json()


class RemoteEngine(Engine):
    """One model on a remote node, reached over HTTP at ``base_url``."""

    def __init__(self, model: str, base_url: str, api_key: str | None = None) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        # Idle connections are dropped after 2 s, before the node's server (uvicorn
        # keeps them 5 s) closes them: a request sent on a connection the server is
        # closing fails, and would count against a healthy node.
        self._client = NodeClient(
            self.base_url,
            node_headers(api_key),
            connect_s=CONNECT_TIMEOUT,
            read_s=READ_TIMEOUT,
            keepalive_s=2.0,
            tls=tls_context(),
        )
        self._active = 0

    def _refusal(self, status: int, body: bytes) -> BlackRoadError:
        message = error_message(body)
        if status == 404:
            return ModelNotFound(self.model)
        if status in (401, 403):
            # The node refused BlackRoad's own credential: a setup fault, not the
            # client's; another node may serve.
            return refusal(self.base_url, message)
        if status == 429 or status >= 500:
            return NodeUnavailable(f"the node at {self.base_url} failed: {message}", RETRY_AFTER)
        return InvalidRequest(message)

    @contextlib.asynccontextmanager
    async def _request(self, path: str, body: Mapping[str, Any]) -> AsyncIterator[Response]:
        """POST ``body`` as JSON; the response, its body still to read, once its status
        is a success."""
        self._active += 1
        try:
            async with self._client.request("POST", path, json_body(body)) as response:
                if response.status_code >= 400:
                    raise self._refusal(response.status_code, await response.aread())
                yield response
        except HopError as exc:
            raise unreachable(self.base_url, exc) from exc
        finally:
            self._active -= 1

    async def _json(self, path: str, body: Mapping[str, Any]) -> Any:
        async with self._request(path, body) as response:
            return await response.json()

    async def _lines(
        self, path: str, body: Mapping[str, Any], parse: LineParser
    ) -> AsyncIterator[Chunk]:
        """Stream ``body``'s answer line by line; ``parse`` turns a line into chunks.

        A stream that ends before its finishing chunk was cut by the node.
        """
        async with self._request(path, body) as response:
            finished = False
            try:
                async for line in response.iter_lines():
                    for chunk in parse(line):
                        finished = finished or chunk.finish is not None
                        yield chunk
            except (ConnectionCut, HopTimeout) as exc:
                # A connection dropped mid-answer: the node died (or its link did).
                raise NodeUnavailable(
                    f"the node at {self.base_url} cut the stream: {type(exc).__name__}",
                    RETRY_AFTER,
                    dead=isinstance(exc, ConnectionCut),
                ) from exc
            if not finished:
                raise NodeUnavailable(f"the node at {self.base_url} ended the stream early")

    @staticmethod
    def _own_template(template: str | None) -> None:
        if template is not None:
            raise InvalidRequest("a remote node renders prompts with its own chat template")

    @staticmethod
    @abc.abstractmethod
    async def discover(base_url: str, api_key: str | None) -> list[str]:
        """The names of the models the node at ``base_url`` serves."""

    async def tokenize(self, text: str) -> list[int]:
        raise InvalidRequest(f"the node serving {self.model} does not tokenize for others")

    async def detokenize(self, tokens: Sequence[int]) -> str:
        raise InvalidRequest(f"the node serving {self.model} does not detokenize for others")

    async def load(self) -> None:
        """The node loads its models itself when asked for them."""

    async def unload(self) -> None:
        """The node unloads its models by its own keep-alive."""

    async def close(self) -> None:
        await self._client.aclose()

    def health(self) -> EngineHealth:
        return EngineHealth(
            model=self.model,
            loaded=True,
            busy=self._active > 0,
            queued=0,
            active=self._active,
            extra={"node": self.base_url},
        )
