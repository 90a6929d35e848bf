"""Ray Serve handle backend: calls a ray.serve.llm LLMServer deployment directly, no HTTP hop.

This is what Ray's own OpenAI ingress does (ray/llm/_internal/serve/core/ingress/ingress.py):
`handle.options(stream=True).chat.remote(ChatCompletionRequest, RawRequestInfo)` returns a
generator whose first item says what kind of answer it is: an ErrorResponse (status in
`.error.code`), a whole response object (non-streaming), or SSE strings, one at a time or in
lists when the server batches its stream (`stream_batching_interval_ms`). Cancelling the
generator cancels the call on the replica, and LLMServer aborts the request in the engine.

Ray and vLLM are imported when the backend starts, so the gateway imports without them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from gateway.backends.base import (
    Backend,
    EngineLoad,
    UpstreamBroken,
    UpstreamLost,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.engine_pause import ENGINE_CONTROL_TIMEOUT_S, EngineControlFailed, PauseStatus
from gateway.errors import error_body
from gateway.policy import Endpoint

log = logging.getLogger("tandem.gateway")

_DONE = b"data: [DONE]\n\n"
# ray.serve.llm 2.60's LLMServer has handle methods for chat, completions, embeddings and a few
# more, none for the Responses API (its native vLLM app is only reachable through Serve's HTTP
# proxy, which Tandem's stack turns off).
NO_RESPONSES_API = (
    "The Responses API (/v1/responses) is not served on the `handle` data path: ray.serve.llm's "
    "LLMServer has no method for it. Deploy the plan with `data_path: http` to use it."
)


def _encode(item: Any) -> bytes:
    """One streamed item as SSE bytes: strings are already events, objects (errors) are dumped."""
    if isinstance(item, list):
        return b"".join(_encode(i) for i in item)
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, bytes):
        return item
    return b"data: " + item.model_dump_json().encode() + b"\n\n"


class _HandleResponse(UpstreamResponse):
    def __init__(self, first: Any, rest: Any) -> None:
        self._first = first
        self._rest = rest
        self._done = False
        head = first[0] if isinstance(first, list) and first else first
        error = getattr(head, "error", None)
        if error is not None and hasattr(error, "code"):
            self.status, self.streaming = int(error.code), False
            self._body = head.model_dump_json().encode()
        elif isinstance(head, (str, bytes)):
            self.status, self.streaming = 200, True
            self._body = b""
        else:
            self.status, self.streaming = 200, False
            self._body = head.model_dump_json().encode()

    async def read(self) -> bytes:
        return self._body

    async def events(self) -> AsyncIterator[bytes]:
        pending = [self._first]
        done_sent = False
        while True:
            for item in pending:
                data = _encode(item)
                done_sent = done_sent or data.rstrip().endswith(b"data: [DONE]")
                yield data
            try:
                pending = [await self._rest.__anext__()]
            except StopAsyncIteration:
                break
            except Exception as exc:  # the replica died mid-answer
                raise UpstreamBroken(f"{type(exc).__name__}: {exc}") from None
        self._done = True
        if not done_sent:
            yield _DONE

    async def aclose(self) -> None:
        if not self._done:
            self._rest.cancel()


class HandleBackend(Backend):
    """One LLMServer deployment reached through its Serve DeploymentHandle.

    `load_probe`, when given, returns the engine's running/waiting counts (for instance read from
    the replica's metrics); without it the router sees only the gateway's own in-flight counts.
    """

    def __init__(
        self,
        handle: Any,
        *,
        first_byte_timeout_s: float = 600.0,
        probe_timeout_s: float = 5.0,
        load_probe: Callable[[], Awaitable[EngineLoad]] | None = None,
    ) -> None:
        self._handle = handle
        self._stream_handle: Any = None
        self._first_byte_timeout_s = first_byte_timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._load_probe = load_probe
        self._requests: dict[Endpoint, type[Any]] = {}
        self._raw_request_info: Any = None
        self._not_taken: tuple[type[BaseException], ...] = ()
        self._unavailable: tuple[type[BaseException], ...] = ()

    async def start(self) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest, CompletionRequest
        from ray.llm._internal.serve.core.protocol import RawRequestInfo
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        self._stream_handle = self._handle.options(stream=True)
        self._requests = {"chat": ChatCompletionRequest, "completions": CompletionRequest}
        self._raw_request_info = RawRequestInfo
        self._not_taken = (DeploymentUnavailableError, BackPressureError)
        self._unavailable = (RayActorError, ActorDiedError, ActorUnavailableError, ReplicaUnavailableError)

    async def close(self) -> None:
        self._stream_handle = None

    async def send(self, endpoint: Endpoint, body: dict[str, Any], request_id: str) -> UpstreamResponse:
        if self._stream_handle is None:
            raise RuntimeError("HandleBackend.start() has not been awaited")
        if endpoint not in self._requests:
            return _ErrorResponse(501, error_body(501, NO_RESPONSES_API))
        try:
            request = self._requests[endpoint].model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(map(str, first["loc"])) or None
            return _ErrorResponse(400, error_body(400, first["msg"], param))
        info = self._raw_request_info(headers={"x-request-id": request_id})
        generator = getattr(self._stream_handle, endpoint).remote(request, info)  # .chat or .completions
        try:
            async with asyncio.timeout(self._first_byte_timeout_s):
                first = await generator.__anext__()
        except TimeoutError:
            generator.cancel()
            raise UpstreamTimeout(f"no answer within {self._first_byte_timeout_s:g} s") from None
        except StopAsyncIteration:
            raise UpstreamLost("the replica ended the call without an answer") from None
        except self._not_taken as exc:  # refused before any replica took the call
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}", down=True) from None
        except self._unavailable as exc:  # the replica died holding the call: never re-sent
            raise UpstreamLost(f"{type(exc).__name__}: {exc}") from None
        except Exception:  # the server method raised (RayTaskError): a 500 that names no internals
            # Ray's text holds the replica's traceback, actor ids and node addresses: for the log only.
            log.exception("request %s: the replica's server method raised", request_id)
            return _ErrorResponse(500, error_body(500, f"the replica failed on this request (request id {request_id})"))
        return _HandleResponse(first, generator)

    async def call(self, method: str, path: str, request_id: str) -> UpstreamResponse:
        return _ErrorResponse(501, error_body(501, NO_RESPONSES_API))

    async def engine_load(self) -> EngineLoad | None:
        if self._load_probe is not None:
            return await asyncio.wait_for(self._load_probe(), self._probe_timeout_s)
        if not await self.ready():
            raise UpstreamUnavailable("health check failed", down=True)
        return None

    async def ready(self) -> bool:
        try:
            await asyncio.wait_for(self._handle.check_health.remote(), self._probe_timeout_s)
        except Exception:  # any failure to answer is "not ready"
            return False
        return True

    async def pause(self, lease_s: float, seq: int) -> PauseStatus:
        return await self._engine_control(self._handle.tandem_pause.remote(lease_s, seq))

    async def resume(self, seq: int) -> PauseStatus:
        return await self._engine_control(self._handle.tandem_resume.remote(seq))

    async def _engine_control(self, call: Any) -> PauseStatus:
        """A pause command to deploy.leased_llm_server.LeasedLLMServer; a plain LLMServer has no
        such method (no lease, so the gateway never freezes it)."""
        try:
            return PauseStatus.model_validate(await asyncio.wait_for(call, ENGINE_CONTROL_TIMEOUT_S))
        except AttributeError as exc:
            raise EngineControlFailed(f"the deployment has no pause lease: {exc}") from None


class _ErrorResponse(UpstreamResponse):
    """An error answer produced on the gateway side of the handle (nothing was sent)."""

    streaming = False

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def events(self) -> AsyncIterator[bytes]:
        yield self._body

    async def aclose(self) -> None:
        return None
