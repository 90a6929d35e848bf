"""The gateway's FastAPI application: `create_app(config, backends)`.

Routes: POST /v1/chat/completions and /v1/completions (gateway.proxy), POST /v1/responses, GET
/v1/responses/{id} and POST /v1/responses/{id}/cancel (gateway.responses), the service routes
(/health, /ready, /v1/models, tokenize, /metrics: gateway.service_api), the routing admin routes
(GET, PUT and PATCH /admin/routing: gateway.routing_api), the key and usage admin routes
(gateway.admin_api), the Batch and Files API (gateway.batches.routes), GET /status and
/admin/status (gateway.status). Every error, the framework's own 404, 405
and validation errors included, is answered in the OpenAI envelope (gateway.errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from gateway.admin_api import admin_routes
from gateway.admission import ClassGate
from gateway.auth import KeyRing, exposure_warning, is_loopback
from gateway.backends.base import Backend
from gateway.backends.http import HttpBackend
from gateway.backends.relocating import RelocatingHttpBackend
from gateway.batches.dispatch import InProcessDispatch
from gateway.batches.routes import batch_routes
from gateway.batches.service import BatchService
from gateway.config import GatewayConfig, ReplicaEndpoint, TrafficClass
from gateway.engines import engine_adapter
from gateway.errors import GatewayError, error_body, internal_error
from gateway.freezing import EngineFreezer
from gateway.key_admin import KeyAdmin
from gateway.load import LoadBoard
from gateway.metrics import GatewayMetrics, LiveState
from gateway.policy_base import Endpoint
from gateway.proxy import GenerationProxy, Receive, Scope, Send, new_request_id
from gateway.response_ids import ResponseIdMap
from gateway.responses import RESPONSES_PATH, ResponsesProxy, add_responses_routes
from gateway.router import Router
from gateway.routing_api import routing_routes
from gateway.service_api import service_routes
from gateway.sqlite_schema import SchemaTooNew
from gateway.state_store import StateStore
from gateway.status import StatusSource, status_routes
from gateway.usage import UsageLedger
from gateway.yielding import BatchYielding

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


class _RequestId:
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


def http_backends(
    config: GatewayConfig, resolvers: Mapping[str, Callable[[], Awaitable[str]]] | None = None
) -> dict[str, Backend]:
    """One HttpBackend per replica, from the replicas' base URLs. A replica with a resolver (how
    to ask where it is now) follows its server when it restarts at another address."""
    limits = config.settings.limits
    missing = [r.name for r in config.replicas if r.base_url is None]
    if missing:
        raise ValueError(f"replica(s) {missing} have no base_url; give one or pass backends to create_app")
    resolvers = resolvers or {}

    def backend(replica: ReplicaEndpoint, base_url: str) -> Backend:
        options: dict[str, Any] = {
            "engine": engine_adapter(replica.engine),
            "connect_timeout_s": limits.upstream_connect_timeout_s,
            "first_byte_timeout_s": limits.upstream_first_byte_timeout_s,
        }
        if replica.name in resolvers:
            return RelocatingHttpBackend(base_url, resolvers[replica.name], **options)
        return HttpBackend(base_url, **options)

    return {r.name: backend(r, r.base_url) for r in config.replicas if r.base_url is not None}


def open_state_store(data_dir: Path) -> StateStore:
    """The keys and usage store in the data directory; a clear error when it cannot be opened
    (the gateway then does not start: keys added at runtime would be missing)."""
    try:
        return StateStore(data_dir)
    except SchemaTooNew as exc:
        raise RuntimeError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise RuntimeError(
            f"cannot open the gateway's data directory {data_dir} ({exc}); set gateway.batches.data_dir or "
            "TANDEM_DATA_DIR to a writable directory"
        ) from None


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json", headers=headers)


def create_app(config: GatewayConfig, backends: Mapping[str, Backend] | None = None) -> GatewayApp:
    """The gateway for `config`. Without `backends`, HTTP backends are built from the replicas'
    base URLs. The app's lifespan starts the backends and the load poller and stops them again."""
    backends = dict(backends) if backends is not None else http_backends(config)
    unknown = set(backends) ^ {r.name for r in config.replicas}
    if unknown:
        raise ValueError(f"backends and config.replicas name different replicas: {sorted(unknown)}")
    settings = config.settings
    board = LoadBoard(config.replicas, settings.limits.load_probe_misses)
    router = Router(settings.routing, board)
    yielding = BatchYielding(lambda: router.settings)
    gates: dict[TrafficClass, ClassGate] = {
        "interactive": ClassGate(
            "interactive", lambda: router.settings.limits["interactive"], on_change=yielding.update
        ),
        "batch": ClassGate("batch", yielding.batch_limits),
    }
    yielding.watch(gates["interactive"], gates["batch"])
    keyring = KeyRing.from_settings(settings.auth)
    key_admin = KeyAdmin(keyring)
    ledger = UsageLedger()
    metrics = GatewayMetrics(
        LiveState(board, gates, lambda: router.spilling, lambda: yielding.holding),
        per_key=settings.auth.per_key_metrics,
        model=config.model,
    )
    freezer = EngineFreezer(config.replicas, backends, board, lambda: router.settings, metrics.registry)
    # A settings switch (PUT /admin/routing) reaches every part that reads the settings in force.
    router.on_update(yielding.update)
    router.on_update(freezer.update)
    for gate in gates.values():
        router.on_update(gate.grant)
    batch_proxies: dict[str, GenerationProxy] = {}  # filled below: the Batch API sends its lines through them
    batches = BatchService(
        settings.batches, InProcessDispatch(batch_proxies), config.served_names, keyring.client_named, metrics
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            store = open_state_store(batches.data_dir)
        except RuntimeError as exc:
            app.state.startup_error = exc  # uvicorn only logs it; gateway.server reports it
            raise
        key_admin.load(store)
        ledger.start(store)
        for backend in backends.values():
            await backend.start()
        await board.poll_once(backends)
        await freezer.start()
        poller = asyncio.create_task(board.poll_forever(backends, settings.limits.load_poll_interval_s))
        log.info("gateway for %s: replicas %s, policy %s", config.model, sorted(backends), router.settings.policy)
        if not keyring.enabled and not is_loopback(settings.host):
            log.warning("%s", exposure_warning(settings))
        await batches.start()
        try:
            yield
        finally:
            await batches.stop()
            await freezer.stop()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            for backend in backends.values():
                await backend.close()
            await ledger.stop()
            store.close()

    app = GatewayApp(title="Tandem gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.router = router
    app.state.metrics = metrics
    app.state.board = board
    generation: tuple[tuple[Endpoint, str], ...] = (
        ("chat", "/v1/chat/completions"),
        ("completions", "/v1/completions"),
    )
    # What every proxy forwards with: one set of parts, shared by the generation and Responses routes.
    parts: dict[str, Any] = {
        "config": config,
        "backends": backends,
        "router": router,
        "gates": gates,
        "keyring": keyring,
        "metrics": metrics,
        "ledger": ledger,
    }
    for endpoint, path in generation:
        proxy = GenerationProxy(endpoint, **parts)
        app.add_generation_route(path, proxy)
        batch_proxies[path] = proxy
    responses = ResponsesProxy(ids=ResponseIdMap(settings.responses.max_ids, settings.responses.ttl_s), **parts)
    app.add_generation_route(RESPONSES_PATH, responses)
    add_responses_routes(app, responses)
    app.include_router(batch_routes(batches, keyring))

    def require_admin(request: Request) -> None:
        peer = request.client.host if request.client is not None else None
        keyring.authorize_admin(request.headers.get("authorization"), peer)

    app.include_router(admin_routes(key_admin, ledger, require_admin))
    status = StatusSource(
        model=config.model,
        board=board,
        gates=gates,
        frozen=lambda: freezer.frozen,
        spilling=lambda: router.spilling,
        batch_held=lambda: yielding.holding,
        recent=metrics.recent,
        ledger=ledger,
    )
    app.include_router(status_routes(status, require_admin))

    app.include_router(service_routes(config, backends, board, keyring, metrics))
    app.include_router(routing_routes(router, require_admin))

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

    app.add_middleware(_RequestId)
    return app
