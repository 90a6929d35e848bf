"""HTTP backend: any OpenAI-compatible upstream (`vllm serve`, the fake upstream in tests).

aiohttp's client, not httpx: on this machine's measurements (DESIGN.md, and docs/gateway.md)
httpx's connection pool fell from 1,100 to 590 req/s as concurrency grew while aiohttp held
about 4,000 req/s on one core. Connections are kept alive and reused; a response abandoned
mid-way closes its connection, which is how vLLM learns that the client went away and aborts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.backends.base import (
    Backend,
    EngineLoad,
    UpstreamBroken,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.policy import Endpoint

_PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "completions": "/completions"}
_GAUGES = {b"vllm:num_requests_running": "running", b"vllm:num_requests_waiting": "waiting"}


class _HttpResponse(UpstreamResponse):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.streaming = response.content_type == "text/event-stream"

    async def read(self) -> bytes:
        body = await self._response.read()
        self._response.release()
        return body

    async def events(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            try:
                event = await content.readuntil(b"\n\n")
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise UpstreamBroken(str(exc) or type(exc).__name__) from None
            if not event:
                return
            yield event

    async def aclose(self) -> None:
        # close(), not release(): an unfinished answer must end the connection so vLLM aborts it.
        if not self._response.content.at_eof():
            self._response.close()
        else:
            self._response.release()


class HttpBackend(Backend):
    """Speaks HTTP to one OpenAI-compatible server at `base_url` (e.g. http://host:8001/v1)."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 5.0,
        first_byte_timeout_s: float = 600.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._root = self.base_url.removesuffix("/v1")
        self._first_byte_timeout_s = first_byte_timeout_s
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            skip_auto_headers=("User-Agent",),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # replicas set no cookies: skip the jar's work
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpBackend.start() has not been awaited")
        return self._session

    async def send(self, endpoint: Endpoint, body: dict[str, Any], request_id: str) -> UpstreamResponse:
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        try:
            async with asyncio.timeout(self._first_byte_timeout_s):
                response = await self.session.post(
                    self.base_url + _PATHS[endpoint], data=orjson.dumps(body), headers=headers
                )
        except TimeoutError:
            raise UpstreamTimeout(f"no answer from {self.base_url} within {self._first_byte_timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(f"cannot connect to {self.base_url}: {exc.os_error}", down=True) from None
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamUnavailable(f"{self.base_url} dropped the request: {exc}") from None
        return _HttpResponse(response)

    async def engine_load(self) -> EngineLoad:
        async with self.session.get(self._root + "/metrics", timeout=self._probe_timeout) as response:
            response.raise_for_status()
            text = await response.read()
        return parse_vllm_load(text)

    async def ready(self) -> bool:
        try:
            async with self.session.get(self._root + "/health", timeout=self._probe_timeout) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


def parse_vllm_load(metrics: bytes) -> EngineLoad:
    """Sum vLLM's running and waiting gauges over every engine (label set) on the page; similarly
    named series (vllm:num_requests_waiting_by_reason) are not these gauges."""
    totals = {"running": 0.0, "waiting": 0.0}
    for line in metrics.splitlines():
        name = line.split(b"{", 1)[0].split(b" ", 1)[0]
        if name in _GAUGES:
            totals[_GAUGES[name]] += float(line.rsplit(b" ", 1)[1])
    return EngineLoad(running=int(totals["running"]), waiting=int(totals["waiting"]))
