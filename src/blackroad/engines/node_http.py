"""The HTTP/1.1 client of the hop from a router to a node: lean, pooled, keep-alive.

Every routed request crosses this hop, so its cost is paid per request:
httpx took ~0.9 ms of the event loop's CPU to send one streamed request and
read its answer on loopback, this client ~0.07 ms (``docs/benchmarks.md``,
"Router overhead"). It speaks only what the hop needs: a request with a
JSON body (or none), written in one piece; an answer framed by
``Content-Length``, chunked, or read until the node closes, parsed by llhttp
(``httptools``, the parser uvicorn serves BlackRoad with); no redirects,
cookies, proxies or content codings (``Accept-Encoding: identity``).
Connections are kept alive and reused, and dropped after ``keepalive_s``
idle, before the node's server closes them (uvicorn keeps them 5 s): a
request sent on a connection the server is closing would fail against a
healthy node.

Failures are of three kinds, which ``remote.py`` maps to ``NodeUnavailable``:
``ConnectFailed`` (no connection could be made in ``connect_s``),
``HopTimeout`` (no byte of the answer for ``read_s``) and ``ConnectionCut``
(the connection ended, or spoke something other than HTTP, mid-answer).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

# Body bytes a connection buffers for a reader that is behind before it stops reading.
READ_BUFFER_BYTES = 1 << 20


class HopError(Exception):
    """The hop to a node failed."""


class ConnectFailed(HopError):
    """No connection to the node could be made."""


class HopTimeout(HopError):
    """The node sent nothing for the read timeout."""


class ConnectionCut(HopError):
    """The connection ended, or broke the protocol, before the answer was complete."""


def json_body(document: Any) -> bytes:
    """A JSON document as the hop sends it (as httpx's ``json=`` did: UTF-8, compact)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class _Connection(asyncio.Protocol):
    """One connection to the node and the answer being read on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.pieces: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.framed = False  # Content-Length or chunked: the answer's end is in the stream
        self.keep_alive = False  # the node keeps the connection open after this answer
        self.closed = False
        self.failure: HopError | None = None
        self.idle_since = 0.0
        self._wakeup: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionCut(f"the node broke HTTP/1.1: {exc}"))
            return
        if self.buffered > READ_BUFFER_BYTES and self.transport is not None:
            self.transport.pause_reading()  # resumed as the reader takes the pieces

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and not self.framed:
            self.complete = True  # an answer without framing ends with its connection
        elif not self.complete:
            reason = type(exc).__name__ if exc is not None else "closed by the node"
            self._fail(ConnectionCut(f"the connection was lost ({reason})"))
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # llhttp's callbacks ----------------------------------------------------

    def on_header(self, name: bytes, _value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once complete
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # Used by the pool and the response --------------------------------------

    def _fail(self, failure: HopError) -> None:
        if self.failure is None:
            self.failure = failure
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def wait(self, seconds: float) -> None:
        """Until something arrives (or the connection ends); ``HopTimeout`` after ``seconds``."""
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup
        except TimeoutError:
            raise HopTimeout(f"no answer for {seconds:g} s") from None
        finally:
            self._wakeup = None

    def take(self) -> bytes | None:
        """The next piece of the body, if one has arrived."""
        if not self.pieces:
            return None
        piece = self.pieces.popleft()
        self.buffered -= len(piece)
        if self.buffered <= READ_BUFFER_BYTES // 2 and self.transport is not None:
            self.transport.resume_reading()
        return piece

    async def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self._writable is not None:  # a large body: wait until the kernel took it
            await self._writable
        if self.closed:
            raise self.failure or ConnectionCut("the connection was lost while sending")

    def reusable(self, now: float, keepalive_s: float) -> bool:
        return not self.closed and now - self.idle_since < keepalive_s

    def reset(self) -> None:
        """Ready for the next answer on the same connection."""
        self.parser = httptools.HttpResponseParser(self)
        self.status, self.headers_done, self.complete = 0, False, False
        self.framed = self.keep_alive = False

    def close(self) -> None:
        """Close the connection now: the node sees its client leave at once.

        asyncio closes a socket only on the loop's next turn; an answer the
        caller abandoned would go on being generated until then.
        """
        self.closed = True
        if self.transport is None or self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.transport.abort()


class Response:
    """A node's answer: its status, then its body, read as it arrives."""

    def __init__(self, connection: _Connection, read_s: float) -> None:
        self._connection = connection
        self._read_s = read_s
        self.status_code = connection.status

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            piece = connection.take()
            if piece is not None:
                yield piece
            elif connection.complete:
                return
            elif connection.failure is not None:
                raise connection.failure
            else:
                await connection.wait(self._read_s)

    async def aread(self) -> bytes:
        return b"".join([piece async for piece in self.iter_bytes()])

    async def iter_lines(self) -> AsyncIterator[str]:
        """The body's lines (``\\n`` or ``\\r\\n``), decoded as UTF-8 once each is whole."""
        rest = b""
        async for piece in self.iter_bytes():
            lines = (rest + piece).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line.removesuffix(b"\r").decode(errors="replace")
        if rest:
            yield rest.removesuffix(b"\r").decode(errors="replace")

    async def json(self) -> Any:
        return json.loads(await self.aread())


class NodeClient:
    """Requests to one node at ``base_url``, on a pool of kept-alive connections."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        connect_s: float,
        read_s: float,
        keepalive_s: float,
        tls: ssl.SSLContext,
    ) -> None:
        url = urlsplit(base_url)
        secure = url.scheme == "https"
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if secure else 80)
        self._tls = tls if secure else None
        self._prefix = url.path.rstrip("/")
        authority = url.netloc.rpartition("@")[2]  # host[:port], never userinfo
        fixed = {"Host": authority, "Accept": "*/*", "Accept-Encoding": "identity", **headers}
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode()
        self._connect_s, self._read_s, self._keepalive_s = connect_s, read_s, keepalive_s
        self._idle: list[_Connection] = []
        self._closed = False

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable(now, self._keepalive_s):
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_s):
                _, connection = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                )
        except TimeoutError:
            raise ConnectFailed(f"no connection in {self._connect_s:g} s") from None
        except OSError as exc:  # refused, unreachable, no such host, TLS refused
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        return connection

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> AsyncIterator[Response]:
        """Send one request; the response once its status line and headers have arrived.

        The connection goes back to the pool only if the answer was read to its
        end and the node keeps it alive; a caller that leaves early closes it.
        """
        if self._closed:
            raise ConnectFailed("the client is closed")
        connection = await self._connection()
        reused = False
        try:
            head = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode() + self._head
            if body is not None:
                head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            await connection.send(head + b"\r\n" + (body or b""))
            while not connection.headers_done:
                if connection.failure is not None:
                    raise connection.failure
                await connection.wait(self._read_s)
            yield Response(connection, self._read_s)
            reused = (
                connection.complete
                and not connection.closed
                and connection.keep_alive
                and not self._closed
            )
        finally:
            if reused:
                connection.reset()
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()

    async def aclose(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
