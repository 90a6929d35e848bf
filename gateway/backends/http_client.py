"""A lean HTTP/1.1 client for the gateway's hop to its replicas.

Why not aiohttp or httpx: the gateway's budget is 350 us of CPU per request on one core, and
aiohttp's client took about 40% of the gateway's CPU (URL and header objects, payload registry,
trace hooks, timers); httpx's pool cost more (docs/benchmarks.md, "How it got there"). The hop needs little of what they do: one
origin per client, keep-alive, a request with a body, an answer framed by Content-Length or
chunked encoding, read whole or as it arrives. The answer is parsed by httptools (llhttp in C,
uvicorn's own parser), so framing, chunked decoding and keep-alive rules come from a maintained
parser, not from this module.

Closing a response before its end closes its connection: that is how vLLM learns that the client
went away, and it aborts the generation.

What HTTP/1.1 allows and this client handles (RFC 9112): an answer without Content-Length or
chunked encoding ends when the server closes the connection (section 6.3); interim 1xx answers
(100 Continue, 103 Early Hints) come before the real one and are skipped (RFC 9110, section 15.2);
a server may close an idle keep-alive connection at any time (RFC 9112, section 9.6), so an idle
connection is checked for the server's close before it is reused.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

# Body bytes buffered before reading from the socket pauses (a slow client backs the replica up).
_HIGH_WATER = 256 * 1024
# An idle connection is reused only this long: under uvicorn's 5 s keep-alive (vLLM's server), so
# a request is not sent on a connection the server is closing at that moment.
MAX_IDLE_S = 4.0
# A whole answer read at once (`HttpResponse.read`) larger than this is refused: memory per request
# stays bounded whatever a replica sends.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# Connections one client holds open to its origin at most: a burst past the gateway's admission
# limits (probes, retrievals, batch work) waits for a connection instead of opening sockets until
# the replica's server or this process runs out of file descriptors.
MAX_CONNECTIONS = 1024


class ConnectFailed(ConnectionError):
    """No connection could be opened: refused, unreachable, or not within the connect timeout."""


class ConnectionDropped(ConnectionError):
    """The connection ended (or the answer was malformed) before the answer did."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one exchange at a time; httptools calls the on_* methods."""

    # Per exchange, set by reset():
    _parser: httptools.HttpResponseParser
    _head: asyncio.Future[int] | None
    headers: dict[bytes, bytes]
    body: bytearray
    complete: bool
    keep_alive: bool  # read when the answer ends: the parser forgets it after
    _interim: bool  # the head being parsed is a 1xx: skipped, the real answer follows
    _until_close: bool  # the answer's body ends when the server closes the connection

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.closed: ConnectionDropped | None = None
        self.idle_since = 0.0
        self._paused = False
        self.reset()

    def exchange(self, request: bytes) -> asyncio.Future[int]:
        """Send one request; the returned future resolves to the status once the head is in."""
        assert self.transport is not None and self.complete is False
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._head

    def reset(self) -> None:
        """Fresh state for one exchange: at creation, and again once the last one completed."""
        self._parser = httptools.HttpResponseParser(self)
        self.headers = {}
        self.body = bytearray()
        self.complete = self.keep_alive = self._interim = self._until_close = False
        self._head = None

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.closed is None

    def server_closed(self) -> bool:
        """Whether the server has closed (or reset) this idle connection, even if the event loop
        has not yet run connection_lost. An idle connection has nothing to read, so a readable one
        holds the server's close (urllib3 checks the same way before reusing a connection).
        Sending on such a connection would lose the request after it was written."""
        if self.closed is not None or self.transport is None:
            return True
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def take_body(self) -> bytes:
        data = bytes(self.body)
        self.body.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def wait(self) -> None:
        """Until more body, the end of the answer, or the end of the connection."""
        if self.body or self.complete or self.closed is not None:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP connection's transport is an asyncio.Transport; the Protocol interface declares the base class
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lose(ConnectionDropped(f"malformed answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None and self._until_close and not self.complete:
            self.complete = True  # the close is this answer's end (RFC 9112, section 6.3)
        self._lose(ConnectionDropped(f"connection lost: {exc}" if exc else "connection closed by the replica"))

    def _lose(self, reason: ConnectionDropped) -> None:
        if self.closed is None:
            self.closed = reason
        if self._head is not None and not self._head.done():
            self._head.set_exception(reason)
        self._wake()

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints): not the answer
            self._interim = True
            self.headers = {}
            return
        chunked = b"chunked" in self.headers.get(b"transfer-encoding", b"").lower()
        self._until_close = b"content-length" not in self.headers and not chunked and status not in (204, 304)
        if self._head is not None and not self._head.done():
            self._head.set_result(status)

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.keep_alive = self._parser.should_keep_alive()
        self.complete = True
        self._wake()


class HttpResponse:
    """An answer being received. Read it whole (`read`) or as it arrives (`chunks`), then `close`."""

    def __init__(self, client: HttpClient, connection: _Connection, status: int) -> None:
        self._client = client
        self._connection = connection
        self.status = status
        self.headers = connection.headers
        self._released = False

    @property
    def content_type(self) -> str:
        return self.headers.get(b"content-type", b"").split(b";", 1)[0].strip().decode("latin-1")

    @property
    def complete(self) -> bool:
        return self._connection.complete

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body. Taken as it arrives, so that reading never stays paused (see
        _HIGH_WATER); over `limit` bytes (default MAX_ANSWER_BYTES) raises ConnectionDropped."""
        limit = MAX_ANSWER_BYTES if limit is None else limit
        connection = self._connection
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                if connection.body:
                    part = connection.take_body()
                    size += len(part)
                    if size > limit:
                        raise ConnectionDropped(f"answer over the limit of {limit} bytes")
                    parts.append(part)
                elif connection.complete:
                    break
                elif connection.closed is not None:
                    raise connection.closed
                else:
                    await connection.wait()
        finally:
            # Read whole or not (dropped, over the limit, cancelled): the answer is done with its
            # connection, which goes back to the pool or is closed, and frees its slot either way.
            self.close()
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises ConnectionDropped if the answer stops before its end."""
        connection = self._connection
        while True:
            await connection.wait()
            if connection.body:
                yield connection.take_body()
            elif connection.complete:
                return
            elif connection.closed is not None:
                raise connection.closed

    def close(self) -> None:
        """Give the connection back for reuse if the answer ended; otherwise close it."""
        if not self._released:
            self._released = True
            self._client._release(self._connection)


class HttpClient:
    """Keep-alive HTTP/1.1 connections to one origin, `scheme://host[:port]` (http or https).

    Connections are opened on demand and kept while idle, for at most MAX_IDLE_S. A request is
    never sent twice: a connection dropped before the answer raises ConnectionDropped, and the
    gateway decides where to send the request next (another replica)."""

    def __init__(self, origin: str, *, connect_timeout_s: float = 5.0, max_connections: int = MAX_CONNECTIONS) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = self._port == (443 if parts.scheme == "https" else 80)
        host = self._host if default_port else f"{self._host}:{self._port}"
        self._host_header = f"Host: {host}\r\n".encode("latin-1")
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        # One slot per connection in use (sent on, answer not yet released); idle ones hold none.
        self._slots = asyncio.Semaphore(max_connections)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        """Send one request for `path` (from the root, with any query) and return once the answer's
        status and headers are in. Raises ConnectFailed or ConnectionDropped, or ValueError for a
        method, path or header holding a line break. With every connection in use
        (`max_connections`), waits for one. Cancelled while waiting: the connection is closed."""
        lines = [_line(f"{method} {path} HTTP/1.1"), self._host_header]
        lines += [_line(f"{name}: {value}") for name, value in headers]
        if body or method in ("POST", "PUT"):
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines += [b"\r\n", body]
        request = b"".join(lines)
        await self._slots.acquire()
        try:
            connection = await self._connection()
        except BaseException:
            self._slots.release()
            raise
        try:
            status = await connection.exchange(request)
        except BaseException:
            # Dropped, timed out or cancelled: the replica must learn that nobody is waiting.
            self._discard(connection)
            self._slots.release()
            raise
        return HttpResponse(self, connection, status)

    async def _connection(self) -> _Connection:
        fresh_since = time.monotonic() - MAX_IDLE_S
        while self._idle:
            connection = self._idle.pop()
            if connection.idle_since > fresh_since and not connection.server_closed():
                connection.reset()
                return connection
            self._discard(connection)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl)
        except TimeoutError:
            raise ConnectFailed(
                f"no connection to {self._host}:{self._port} within {self._connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self._host}:{self._port}: {exc.strerror or exc}") from None
        self._open.add(connection)
        return connection

    def _release(self, connection: _Connection) -> None:
        """An answer is done with its connection: kept idle for reuse, or closed; its slot frees."""
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._discard(connection)
        self._slots.release()

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def aclose(self) -> None:
        """Close every connection, idle or busy."""
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()


def _line(text: str) -> bytes:
    """One request or header line, CRLF-terminated. A CR or LF inside would end the line early and
    could smuggle a header or a second request into the connection (RFC 9112, section 2.2)."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"a line break in the request line or a header: {text[:80]!r}")
    return f"{text}\r\n".encode("latin-1")
