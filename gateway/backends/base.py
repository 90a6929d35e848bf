"""The backend interface: how the gateway reaches one replica, whatever carries the bytes.

A backend sends one generation request and hands back an `UpstreamResponse`: a status, then either
the whole body or the SSE events as the replica produces them. Closing a response before its end
aborts the generation on the replica. A failure before the request could start raises
`UpstreamUnavailable`, which the gateway may send once to another replica; a failure after it was
sent raises `UpstreamLost`, which is never sent again (the work may have run, or crashed the engine).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from gateway.contract.policy import Endpoint
from gateway.engine_pause import EngineControlFailed, PauseStatus
from gateway.engines.base import EngineLoad


class UpstreamUnavailable(Exception):
    """The replica cannot have started the work (no connection could be opened, the deployment
    refused to take the call), so the gateway may send the request to another replica once;
    `down` when it could not even be reached (marked unhealthy until its next good poll)."""

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(message)
        self.down = down


class UpstreamFailed(Exception):
    """The replica took the request and then failed it (UpstreamLost, UpstreamTimeout): the work
    may have started, so the request is never sent again; the client hears which replica failed."""


class UpstreamLost(UpstreamFailed):
    """The request reached the replica, which went away before answering (a dropped connection,
    a dead actor). The work may have started, or the request may be what killed the engine: it is
    never sent again (the client gets a 502 and may retry itself)."""


class UpstreamTimeout(UpstreamFailed):
    """The replica did not start answering in time."""


class UpstreamBroken(Exception):
    """The replica broke off an answer it had started (raised by `UpstreamResponse.events`)."""


class UpstreamResponse(ABC):
    """One answer from a replica. Read it with `read()` (non-streaming) or `events()` (SSE), then
    `aclose()` it; closing before the end stops the generation upstream."""

    status: int
    streaming: bool

    @abstractmethod
    async def read(self) -> bytes: ...

    @abstractmethod
    def events(self) -> AsyncIterator[bytes]:
        """Bytes holding one or more whole SSE events (`data: ...\\n\\n`), as soon as they exist;
        raises UpstreamBroken if the replica stops before the end."""

    @abstractmethod
    async def aclose(self) -> None: ...


class Backend(ABC):
    """One replica's transport."""

    @abstractmethod
    async def start(self) -> None:
        """Open connections or sessions; called from the gateway's event loop."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def send(self, endpoint: Endpoint, body: dict[str, Any], request_id: str) -> UpstreamResponse:
        """Send one request body (already addressed to the replica's model) and return once the
        replica has started answering. Raises UpstreamUnavailable, UpstreamLost or UpstreamTimeout."""

    @abstractmethod
    async def call(self, method: str, path: str, request_id: str) -> UpstreamResponse:
        """A request without a body to `path` below the replica's OpenAI base (with any query):
        the Responses API's retrieval (GET /responses/{id}) and cancel (POST .../cancel), which
        only the replica that stored the response can answer. Raises as `send` does."""

    @abstractmethod
    async def engine_load(self) -> EngineLoad | None:
        """The engine's running/waiting counts, None if this transport cannot see them; raises
        when the replica does not answer."""

    @abstractmethod
    async def ready(self) -> bool:
        """Whether the replica answers its health check now."""

    async def engine_metrics(self) -> bytes:
        """The engine's whole Prometheus page (vLLM's /metrics), for the gateway to pass on to a
        scraper; raises UpstreamUnavailable when it cannot be had."""
        raise UpstreamUnavailable(f"{type(self).__name__} cannot read its engine's metrics")

    @abstractmethod
    async def post_utility(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """POST a small JSON body to a utility endpoint at the server's root (/tokenize,
        /detokenize) and return its status and body."""

    async def pause(self, lease_s: float, seq: int) -> PauseStatus:
        """Freeze the engine in place (requests and KV cache kept) for `lease_s`, or renew the
        lease; the replica resumes it by itself when the lease runs out (gateway.engine_pause).
        Raises EngineControlFailed, or the transport's error when the replica does not answer."""
        raise EngineControlFailed(f"{type(self).__name__} cannot pause its engine")

    async def resume(self, seq: int) -> PauseStatus:
        """Let a frozen engine go on; resuming a running engine changes nothing."""
        raise EngineControlFailed(f"{type(self).__name__} cannot resume its engine")
