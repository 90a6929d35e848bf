"""The gateway's ASGI shell around its routes: the generation endpoints' fast path (GatewayApp),
a request id on every response, and every error in the OpenAI envelope (gateway.errors), the
framework's own 404, 405 and validation errors included."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from gateway.errors import GatewayError, error_body, internal_error
from gateway.proxy import GenerationProxy, Receive, Scope, Send, new_request_id

log = logging.getLogger("tandem.gateway")


class GatewayApp(FastAPI):
    """FastAPI, except that the generation endpoints are dispatched before the framework's
    middleware: the proxies do their own request ids and error envelopes, and the four middleware
    layers and the route scan cost about 15% of the gateway's CPU per request (docs/benchmarks.md).
    The routes stay in the route table too, so other methods on those paths still get a 405."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._generation: dict[str, GenerationProxy] = {}

    def add_generation_route(self, path: str, proxy: GenerationProxy) -> None:
        self.router.routes.append(Route(path, proxy, methods=["POST"]))
        self._generation[path] = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            proxy = self._generation.get(scope["path"])
            if proxy is not None:
                await proxy(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class RequestIdMiddleware:
    """Pure ASGI middleware: every other response carries X-Request-Id too (the client's, or a new one)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json", headers=headers)


def answer_errors_in_the_envelope(app: FastAPI) -> None:
    """The framework's errors and the gateway's own, each answered as an OpenAI error body."""

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        # exc.body(): the error's own param and type (e.g. the Responses API's 404) are kept.
        return Response(exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {
            404: f"no route {request.url.path}",
            405: f"method {request.method} not allowed on {request.url.path}",
        }
        return _error(exc.status_code, message.get(exc.status_code, str(exc.detail)), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error(400, str(exc.errors()[0].get("msg", "invalid request")))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("request %s failed inside the gateway", request.scope.get("state", {}).get("request_id"))
        request_id = request.scope.get("state", {}).get("request_id", "")
        error = internal_error(exc)
        return _error(error.status, error.message, {"X-Request-Id": request_id})
