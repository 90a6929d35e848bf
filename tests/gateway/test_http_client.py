"""The gateway's HTTP/1.1 client against a raw socket server that does exactly what each test
needs: keep-alive, chunked streams, idle connections closed by the server, answers cut off,
clients going away, a slow reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.backends import http_client
from gateway.backends.http_client import _HIGH_WATER, ConnectFailed, ConnectionDropped, HttpClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server running `handler` once per connection; counts connections and EOFs."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.eofs = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @property
    def origin(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def answer(body: bytes, *extra: bytes) -> bytes:
    headers = b"".join(h + b"\r\n" for h in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), headers, body)


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head, body = await read_request(reader)
        writer.write(answer(head.split(b"\r\n", 1)[0] + b"|" + body))
        await writer.drain()


async def test_requests_reuse_one_keep_alive_connection(serve) -> None:
    server = await serve(echo_forever)
    client = HttpClient(server.origin)
    for i in range(3):
        response = await client.request("POST", "/v1/chat", b"body%d" % i, (("X-Request-Id", "r"),))
        assert (response.status, await response.read()) == (200, b"POST /v1/chat HTTP/1.1|body%d" % i)
    assert server.connections == 1
    await client.aclose()


async def test_chunks_arrive_as_the_server_sends_them(serve) -> None:
    release = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"d\r\ndata: first\n\n\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await serve(stream)
    client = HttpClient(server.origin)
    response = await client.request("POST", "/s", b"{}")
    assert response.content_type == "text/event-stream"
    chunks = response.chunks()
    assert await anext(chunks) == b"data: first\n\n"  # before the server has finished
    release.set()
    assert [c async for c in chunks] == [b"data: second\n\n"]
    assert response.complete
    response.close()
    await client.aclose()


async def test_an_idle_connection_closed_by_the_server_is_not_reused(serve) -> None:
    async def one_answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"ok"))  # keep-alive is announced, yet the server hangs up (its idle timeout)
        await writer.drain()

    server = await serve(one_answer_then_close)
    client = HttpClient(server.origin)
    for _ in range(3):
        response = await client.request("GET", "/health")
        assert await response.read() == b"ok"
        await asyncio.sleep(0.05)
    assert server.connections == 3


async def test_a_connection_idle_too_long_is_not_reused(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_client, "MAX_IDLE_S", 0.1)
    server = await serve(echo_forever)
    client = HttpClient(server.origin)
    for pause in (0.0, 0.05, 0.2):
        await asyncio.sleep(pause)
        assert await (await client.request("GET", "/")).read() == b"GET / HTTP/1.1|"
    assert server.connections == 2  # the second request reused the first connection, the third did not
    await client.aclose()


async def test_connection_close_is_honoured(serve) -> None:
    async def close_announced(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(b"ok", b"Connection: close"))
            await writer.drain()

    server = await serve(close_announced)
    client = HttpClient(server.origin)
    for _ in range(2):
        assert await (await client.request("GET", "/")).read() == b"ok"
    assert server.connections == 2


async def test_closing_an_unfinished_answer_closes_the_connection(serve) -> None:
    gone = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        if await reader.read() == b"":  # EOF: the way vLLM learns that nobody is listening
            gone.set()

    server = await serve(endless)
    client = HttpClient(server.origin)
    response = await client.request("POST", "/", b"{}")
    assert await anext(response.chunks()) == b"hello"
    response.close()
    await asyncio.wait_for(gone.wait(), 2)
    await client.aclose()


async def test_cancelled_while_waiting_for_the_answer_closes_the_connection(serve) -> None:
    gone = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if await reader.read() == b"":
            gone.set()

    server = await serve(silent)
    client = HttpClient(server.origin)
    waiting = asyncio.create_task(client.request("POST", "/", b"{}"))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(gone.wait(), 2)


async def test_an_answer_cut_off_raises_connection_dropped(serve) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    server = await serve(cut)
    client = HttpClient(server.origin)
    response = await client.request("POST", "/", b"{}")
    with pytest.raises(ConnectionDropped):
        await response.read()


async def test_a_fresh_connection_dropped_before_answering_raises(serve) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    server = await serve(hang_up)
    client = HttpClient(server.origin)
    with pytest.raises(ConnectionDropped):
        await client.request("POST", "/", b"{}")
    assert server.connections == 1  # never sent twice: the server may have read it


async def test_malformed_answer_raises_connection_dropped(serve) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"this is not http\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await serve(garbage)
    with pytest.raises(ConnectionDropped, match="malformed"):
        await HttpClient(server.origin).request("GET", "/")


async def test_refused_connection_raises_connect_failed() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await HttpClient(f"http://127.0.0.1:{port}").request("GET", "/")


async def test_a_slow_reader_pauses_the_socket(serve) -> None:
    sent = asyncio.Event()
    total = 128 * _HIGH_WATER  # well past what the kernel's socket buffers hold

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()  # blocks once the client stops reading
        sent.set()
        await reader.read()

    server = await serve(flood)
    client = HttpClient(server.origin)
    response = await client.request("GET", "/big")
    await asyncio.sleep(0.3)
    assert not sent.is_set()  # the client stopped reading: the server is held back
    received = 0
    async for chunk in response.chunks():
        received += len(chunk)
    assert received == total and sent.is_set()
    response.close()
    await client.aclose()


def test_origin_only() -> None:
    with pytest.raises(ValueError):
        HttpClient("http://127.0.0.1:8000/v1")
    with pytest.raises(ValueError):
        HttpClient("ftp://127.0.0.1")
