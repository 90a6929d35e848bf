"""The gateway's HTTP/1.1 client against a raw socket server that does exactly what each test
needs: keep-alive, chunked streams, idle connections closed by the server, answers cut off,
clients going away, a slow reader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.backends import http_client, sse
from gateway.backends.base import UpstreamBroken
from gateway.backends.http import HttpBackend
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


async def test_an_answer_cut_off_frees_its_connection_slot(serve) -> None:
    """A whole-answer read that fails gives its connection back by itself: with a cap of one
    connection, the next request still gets one (a leaked slot would make it wait for ever)."""
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part", answer(b"whole")]

    async def cut_then_whole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answers.pop(0))
        await writer.drain()

    server = await serve(cut_then_whole)
    client = HttpClient(server.origin, max_connections=1)
    with pytest.raises(ConnectionDropped):
        await (await client.request("GET", "/")).read()
    response = await asyncio.wait_for(client.request("GET", "/"), 30)
    assert await response.read() == b"whole"
    await client.aclose()


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


async def test_requests_past_the_connection_cap_wait_for_a_connection(serve) -> None:
    """Three requests at once through a client capped at two connections: the third waits, then
    reuses a connection an answer gave back; the server never sees a third connection."""
    release = asyncio.Event()
    arrived = 0

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        while True:
            await read_request(reader)
            arrived += 1
            await release.wait()
            writer.write(answer(b"ok"))
            await writer.drain()

    server = await serve(held)
    client = HttpClient(server.origin, max_connections=2)

    async def fetch() -> bytes:
        response = await client.request("GET", "/x")
        return await response.read()

    tasks = [asyncio.create_task(fetch()) for _ in range(3)]
    deadline = time.monotonic() + 30
    while arrived < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # time for a third connection, were the cap not kept
    assert (server.connections, arrived) == (2, 2)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 30) == [b"ok"] * 3
    assert server.connections == 2
    await client.aclose()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/x", (("X-Request-Id", "r\r\nX-Smuggled: 1"),)),
        ("/x", (("X-Request-Id", "r\nX-Smuggled: 1"),)),
        ("/x HTTP/1.1\r\nX-Smuggled: 1\r\n\r\nGET /y", ()),
    ],
)
async def test_a_line_break_in_a_header_or_the_path_is_refused_before_sending(serve, path, headers) -> None:
    server = await serve(echo_forever)
    client = HttpClient(server.origin, max_connections=1)
    with pytest.raises(ValueError, match="line break"):
        await client.request("GET", path, b"", headers)
    # Nothing was sent, and the refused request held no connection slot.
    response = await asyncio.wait_for(client.request("GET", "/ok"), 30)
    assert await response.read() == b"GET /ok HTTP/1.1|"
    assert server.connections == 1
    await client.aclose()


def test_origin_only() -> None:
    with pytest.raises(ValueError):
        HttpClient("http://127.0.0.1:8000/v1")
    with pytest.raises(ValueError):
        HttpClient("ftp://127.0.0.1")


# ---- issue 14, defect 8: what HTTP/1.1 allows a server to do ---------------------------------------


async def test_a_body_ended_by_the_servers_close_is_the_whole_answer(serve) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        writer.write(b'{"answer": "all of it"}')
        await writer.drain()  # then the handler returns: the server closes, which ends the body

    server = await serve(until_close)
    client = HttpClient(server.origin)
    response = await client.request("POST", "/", b"{}")
    assert await asyncio.wait_for(response.read(), 5) == b'{"answer": "all of it"}'
    streamed = await client.request("POST", "/", b"{}")
    assert b"".join([c async for c in streamed.chunks()]) == b'{"answer": "all of it"}'
    assert server.connections == 2  # never reused: the close was the answer's end
    await client.aclose()


async def test_interim_1xx_answers_are_skipped(serve) -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            writer.write(answer(b"final"))
            await writer.drain()

    server = await serve(early_hints)
    client = HttpClient(server.origin)
    for _ in range(2):  # and the connection is still in step for the next exchange
        response = await asyncio.wait_for(client.request("POST", "/", b"{}"), 5)
        assert response.status == 200 and b"link" not in response.headers
        assert await response.read() == b"final"
    assert server.connections == 1
    await client.aclose()


async def test_an_idle_connection_the_server_closed_is_not_reused_before_the_loop_notices(serve) -> None:
    closed = asyncio.Event()

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"ok"))  # keep-alive announced...
        await writer.drain()
        writer.close()  # ...and the server closes it right away (its idle timeout, a restart)
        closed.set()

    server = await serve(answer_then_close)
    client = HttpClient(server.origin)
    assert await (await client.request("GET", "/")).read() == b"ok"
    await closed.wait()
    time.sleep(0.2)  # blocking: the FIN is in the socket, but the event loop has not run connection_lost
    response = await asyncio.wait_for(client.request("GET", "/"), 5)
    assert await response.read() == b"ok"
    assert server.connections == 2
    await client.aclose()


async def test_a_large_answer_read_whole_does_not_stall_and_a_huge_one_is_refused(serve) -> None:
    size = 8 * _HIGH_WATER  # past the point where reading pauses for a slow consumer

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(b"x" * size))
            await writer.drain()

    server = await serve(big)
    client = HttpClient(server.origin)
    assert len(await asyncio.wait_for((await client.request("GET", "/")).read(), 10)) == size
    with pytest.raises(ConnectionDropped, match="over the limit"):
        await asyncio.wait_for((await client.request("GET", "/")).read(limit=size // 2), 10)
    await client.aclose()


def sse_server(frames: list[bytes], release: asyncio.Event) -> Handler:
    """Answers one chunked SSE stream: the first frame, then (once released) the rest."""

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i, frame in enumerate(frames):
            if i == 1:
                await writer.drain()
                await release.wait()
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    return stream


async def test_sse_framed_with_crlf_is_relayed_event_by_event(serve) -> None:
    release = asyncio.Event()
    frames = [b'data: {"n": 1}\r\n\r\n', b'data: {"n": 2}\r', b"\n\r\ndata: [DONE]\r\n\r\n"]
    server = await serve(sse_server(frames, release))
    backend = HttpBackend(server.origin + "/v1")
    await backend.start()
    upstream = await backend.send("chat", {"stream": True}, "crlf")
    events = upstream.events()
    assert await asyncio.wait_for(anext(events), 5) == b'data: {"n": 1}\n\n'  # before the server goes on
    release.set()
    assert [e async for e in events] == [b'data: {"n": 2}\n\ndata: [DONE]\n\n']
    await upstream.aclose()
    await backend.close()


async def test_an_event_that_never_ends_is_cut_off_at_the_bound(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 64 * 1024)
    release = asyncio.Event()
    endless = [b"data: " + b"x" * 16 * 1024] * 64  # a megabyte with no blank line
    server = await serve(sse_server([b"data: first\n\n", *endless], release))
    release.set()
    backend = HttpBackend(server.origin + "/v1")
    await backend.start()
    upstream = await backend.send("chat", {"stream": True}, "endless")

    async def drain() -> list[bytes]:
        return [e async for e in upstream.events()]

    with pytest.raises(UpstreamBroken, match="without ending an event"):
        await asyncio.wait_for(drain(), 10)
    await upstream.aclose()
    await backend.close()


def test_event_framer_line_endings() -> None:
    framer = sse.EventFramer()
    assert framer.feed(b"data: a\r") == b""  # a CR at the end may be half a CRLF
    assert framer.feed(b"\n\r") == b""
    assert framer.feed(b"\ndata: b\r\rdata: c\n\ndata: d") == b"data: a\n\ndata: b\n\ndata: c\n\n"
    assert framer.pending == b"data: d"
