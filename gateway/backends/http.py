"""HTTP backend: any OpenAI-compatible upstream (`vllm serve`, the fake upstream in tests).

Over gateway.backends.http_client, a keep-alive HTTP/1.1 client made for this hop: on this
machine aiohttp's client took about 40% of the gateway's CPU per request and an httpx pass-through
lost half its rate as concurrency grew (figures: docs/benchmarks.md). A response abandoned mid-way
closes its connection, which is how vLLM learns that the client went away and aborts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.backends.base import (
    Backend,
    EngineLoad,
    UpstreamBroken,
    UpstreamLost,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.backends.http_client import ConnectFailed, ConnectionDropped, HttpClient, HttpResponse
from gateway.backends.sse import EventFramer, EventTooLarge
from gateway.contract.policy import Endpoint
from gateway.engine_pause import ENGINE_CONTROL_TIMEOUT_S, PAUSE_PATH, RESUME_PATH, EngineControlFailed, PauseStatus
from gateway.engines.base import EngineAdapter
from gateway.engines.vllm import VLLM

_PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "completions": "/completions", "responses": "/responses"}
_JSON = ("Content-Type", "application/json")


class _HttpResponse(UpstreamResponse):
    def __init__(self, response: HttpResponse) -> None:
        self._response = response
        self.status = response.status
        self.streaming = response.content_type == "text/event-stream"

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except ConnectionDropped as exc:
            raise UpstreamBroken(str(exc)) from None

    async def events(self) -> AsyncIterator[bytes]:
        framer = EventFramer()
        try:
            async for data in self._response.chunks():
                events = framer.feed(data)
                if events:
                    yield events
        except (ConnectionDropped, EventTooLarge) as exc:
            raise UpstreamBroken(str(exc)) from None
        if framer.pending.strip():
            raise UpstreamBroken("the stream ended inside an event")

    async def aclose(self) -> None:
        # An unfinished answer ends its connection, so that vLLM aborts the generation.
        self._response.close()


class HttpBackend(Backend):
    """Speaks HTTP to one OpenAI-compatible server at `base_url` (e.g. http://host:8001/v1); its
    `engine` adapter says where the server's health and metrics are and how to read its load."""

    def __init__(
        self,
        base_url: str,
        *,
        engine: EngineAdapter = VLLM,
        connect_timeout_s: float = 5.0,
        first_byte_timeout_s: float = 600.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self._aim(base_url)
        self._engine = engine
        self._connect_timeout_s = connect_timeout_s
        self._first_byte_timeout_s = first_byte_timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._client: HttpClient | None = None

    def _aim(self, base_url: str) -> None:
        """Everything derived from the server's URL (set again by `retarget`)."""
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._paths = {endpoint: parts.path + path for endpoint, path in _PATHS.items()}
        self._root = parts.path.removesuffix("/v1")

    async def retarget(self, base_url: str) -> None:
        """Speak to the server at `base_url` from now on: a replica that restarted serves from a
        new address (gateway.backends.relocating). The old server's connections are closed."""
        if base_url.rstrip("/") == self.base_url:
            return
        old = self._client
        self._aim(base_url)
        if old is not None:
            await self.start()
            await old.aclose()

    async def start(self) -> None:
        self._client = HttpClient(self._origin, connect_timeout_s=self._connect_timeout_s)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> HttpClient:
        if self._client is None:
            raise RuntimeError("HttpBackend.start() has not been awaited")
        return self._client

    async def send(self, endpoint: Endpoint, body: dict[str, Any], request_id: str) -> UpstreamResponse:
        return await self._request("POST", self._paths[endpoint], orjson.dumps(body), request_id)

    async def call(self, method: str, path: str, request_id: str) -> UpstreamResponse:
        return await self._request(method, urlsplit(self.base_url).path + path, b"", request_id)

    async def _request(self, method: str, path: str, body: bytes, request_id: str) -> UpstreamResponse:
        headers = (_JSON, ("X-Request-Id", request_id)) if body else (("X-Request-Id", request_id),)
        try:
            async with asyncio.timeout(self._first_byte_timeout_s):
                response = await self.client.request(method, path, body, headers)
        except TimeoutError:
            raise UpstreamTimeout(f"no answer from {self.base_url} within {self._first_byte_timeout_s:g} s") from None
        except ConnectFailed as exc:
            raise UpstreamUnavailable(str(exc), down=True) from None
        except ConnectionDropped as exc:
            # Sent, then dropped: the engine may have run it (or died of it). Never re-sent.
            raise UpstreamLost(f"{self.base_url} dropped the request: {exc}") from None
        return _HttpResponse(response)

    async def _get(self, path: str) -> tuple[int, bytes]:
        """A probe: GET `path` below the server's root, bounded by the probe timeout."""
        async with asyncio.timeout(self._probe_timeout_s):
            response = await self.client.request("GET", self._root + path)
            return response.status, await response.read()

    async def post_utility(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self._probe_timeout_s):
                response = await self.client.request("POST", self._root + path, orjson.dumps(body), (_JSON,))
                return response.status, await response.read()
        except (ConnectFailed, ConnectionDropped) as exc:
            raise UpstreamUnavailable(f"{self.base_url}: {exc}") from None

    async def engine_load(self) -> EngineLoad:
        status, text = await self._get(self._engine.metrics_path)
        if status != 200:
            raise UpstreamUnavailable(f"{self.base_url}: {self._engine.metrics_path} answered {status}")
        return self._engine.parse_load(text)

    async def engine_metrics(self) -> bytes:
        try:
            status, text = await self._get(self._engine.metrics_path)
        except (ConnectFailed, ConnectionDropped) as exc:
            raise UpstreamUnavailable(f"{self.base_url}: {exc}") from None
        if status != 200:
            raise UpstreamUnavailable(f"{self.base_url}: {self._engine.metrics_path} answered {status}")
        return text

    async def ready(self) -> bool:
        try:
            status, _ = await self._get(self._engine.health_path)
        except (ConnectionError, TimeoutError):
            return False
        return status == 200

    async def pause(self, lease_s: float, seq: int) -> PauseStatus:
        return await self._engine_control(f"{PAUSE_PATH}?lease_s={lease_s:g}&seq={seq}")

    async def resume(self, seq: int) -> PauseStatus:
        return await self._engine_control(f"{RESUME_PATH}?seq={seq}")

    async def _engine_control(self, path_and_query: str) -> PauseStatus:
        """POST a pause command to the replica's server (deploy.engine_lease's middleware). A pause
        returns once the step in progress has ended, hence its own, longer, timeout."""
        async with asyncio.timeout(ENGINE_CONTROL_TIMEOUT_S):
            response = await self.client.request("POST", self._root + path_and_query)
            body = await response.read()
        if response.status != 200:
            raise EngineControlFailed(f"{self.base_url}: {path_and_query.split('?')[0]} answered {response.status}")
        return PauseStatus.model_validate_json(body)
