"""Serve's health check of an engine replica (deploy/engine_server.py): an unanswered /health
fails the check only once the server has answered none for `UNANSWERED_LIMIT_S`. A generating CPU
engine starved its own server for minutes in 30-minute soaks (its main thread slept, neither
running nor waiting to run, for 20 s at a stretch) and Serve restarted working engines. Real
processes stand in for the server here (a sleeping one, an exited one), with a real /health
server where one must answer: only the health check is under test, no vLLM is started."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from deploy.engine_server import UNANSWERED_LIMIT_S, EngineServer
from deploy.plan import Replica
from deploy.ports import free_port


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that does nothing, like a server starved of CPU; killed after the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    yield process
    process.kill()
    process.wait(timeout=30)


def serving(status: int) -> Iterator[int]:
    """A server on 127.0.0.1 whose /health answers `status`; yields its port, then stops."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=30)


@pytest.fixture
def health_server() -> Iterator[int]:
    yield from serving(200)


@pytest.fixture
def dead_engine_server() -> Iterator[int]:
    """Answers /health with 503, as vLLM's server does once its engine core died."""
    yield from serving(503)


def server_over(process: subprocess.Popen[bytes], port: int | None = None) -> Any:
    """An EngineServer whose 'engine' is `process`, with /health on `port` (by default a free
    port, so the check is refused) and last answered just now."""
    server = object.__new__(EngineServer)
    server.replica = Replica(name="batch", traffic_class="batch")
    server.host, server.port = "127.0.0.1", port or free_port("127.0.0.1")
    server._process = process
    server._session = None
    server._answered_at = time.monotonic()
    return server


async def checked(server: Any) -> None:
    try:
        await server.check_health()
    finally:
        if server._session is not None:
            await server._session.close()
            server._session = None


async def test_an_unanswered_health_check_passes_within_the_limit(sleeper: subprocess.Popen[bytes]) -> None:
    server = server_over(sleeper)
    server._answered_at -= UNANSWERED_LIMIT_S / 2
    await checked(server)  # refused, but it answered within the limit: starved, not reported


async def test_a_server_silent_past_the_limit_is_unhealthy(sleeper: subprocess.Popen[bytes]) -> None:
    server = server_over(sleeper)
    server._answered_at -= UNANSWERED_LIMIT_S + 1
    with pytest.raises(RuntimeError, match=r"has not answered /health for \d+ s"):
        await checked(server)


async def test_an_answer_restarts_the_clock(sleeper: subprocess.Popen[bytes], health_server: int) -> None:
    server = server_over(sleeper, port=health_server)
    server._answered_at -= UNANSWERED_LIMIT_S + 1
    await checked(server)  # answered: healthy, however long the silence before
    assert time.monotonic() - server._answered_at < UNANSWERED_LIMIT_S / 2
    server.port = free_port("127.0.0.1")
    await checked(server)  # refused just after an answer: within the limit


async def test_a_server_that_says_its_engine_is_dead_is_unhealthy_at_once(
    sleeper: subprocess.Popen[bytes], dead_engine_server: int
) -> None:
    server = server_over(sleeper, port=dead_engine_server)
    with pytest.raises(RuntimeError, match="answers /health with 503"):
        await checked(server)


async def test_an_exited_engine_is_unhealthy() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server = server_over(process)
    process.wait(timeout=60)
    with pytest.raises(RuntimeError, match="exited with code 3"):
        await checked(server)
