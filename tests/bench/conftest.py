"""Loopback servers for the harness tests: the shared fake vLLM upstream, and a few
deliberately broken streams it does not produce (cut mid-stream, no [DONE], no usage)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from tests.fake_upstream import FakeUpstream


class HeaderRecordingUpstream(FakeUpstream):
    """The fake upstream, also keeping each generation request's X-Tandem-Class header."""

    def app(self) -> web.Application:
        app = super().app()
        self.classes: list[str | None] = []

        @web.middleware
        async def record_class(request: web.Request, handler):  # type: ignore[no-untyped-def]
            if request.path.endswith("completions"):
                self.classes.append(request.headers.get("X-Tandem-Class"))
            return await handler(request)

        app.middlewares.append(record_class)
        return app


@pytest.fixture
def upstream() -> Iterator[HeaderRecordingUpstream]:
    fake = HeaderRecordingUpstream(model="m", token_delay_s=0.001)
    with fake.running():
        yield fake


def _chunk(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"text":"' + text.encode() + b'"}]}\n\n'


USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}\n\n'


async def _broken(request: web.Request) -> web.StreamResponse:
    """The request's model name picks how the stream breaks."""
    behaviour = (await request.json())["model"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_chunk("a") + _chunk("b"))
    if behaviour == "cut":
        await asyncio.sleep(0.01)
        request.transport.abort()  # type: ignore[union-attr]
        return response
    if behaviour == "error-event":
        await response.write(b'data: {"error":{"message":"engine died","type":"InternalServerError","code":500}}\n\n')
    elif behaviour == "not-json":
        await response.write(b"data: {oops\n\n")
    elif behaviour == "no-done":
        await response.write(_chunk("c") + USAGE)
    elif behaviour == "no-usage":
        await response.write(_chunk("c") + b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@pytest.fixture
def broken_url() -> Iterator[str]:
    """A server whose streams break in the way the request's model name asks for."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/completions", _broken)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def dead_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
