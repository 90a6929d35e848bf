"""The gateway: `Gateway(config, backends)` builds its parts once and wires them to each other;
`create_app(config, backends)` is its ASGI app.

Routes, each from its own module, attached by Gateway.asgi_app: POST /v1/chat/completions and
/v1/completions (gateway.proxy), POST /v1/responses, GET /v1/responses/{id} and POST
/v1/responses/{id}/cancel (gateway.responses), the service routes (/health, /ready, /v1/models,
tokenize, /metrics: gateway.service_api), the routing admin routes (GET, PUT and PATCH
/admin/routing: gateway.routing_api), the key and usage admin routes (gateway.admin_api), the Batch
and Files API (gateway.batches.routes), GET /status and /admin/status (gateway.status). Every error,
the framework's own 404, 405 and validation errors included, is answered in the OpenAI envelope
(gateway.asgi).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request

from gateway.admin_api import admin_routes
from gateway.asgi import GatewayApp, RequestIdMiddleware, answer_errors_in_the_envelope
from gateway.auth import KeyRing, exposure_warning, is_loopback
from gateway.backends.base import Backend
from gateway.backends.http import HttpBackend
from gateway.backends.relocating import RelocatingHttpBackend
from gateway.batches.dispatch import InProcessDispatch
from gateway.batches.routes import batch_routes
from gateway.batches.service import BatchService
from gateway.contract.config import GatewayConfig, ReplicaEndpoint
from gateway.engines import engine_adapter
from gateway.freezing import EngineFreezer
from gateway.key_admin import KeyAdmin
from gateway.load import LoadBoard
from gateway.metrics import GatewayMetrics, LiveState
from gateway.model_groups import ModelGroups
from gateway.proxy import GenerationProxy, OpenAIGeneration
from gateway.response_ids import ResponseIdMap
from gateway.responses import RESPONSES_PATH, ResponseRetrieval, ResponsesGeneration, add_responses_routes
from gateway.routing_api import routing_routes
from gateway.service_api import service_routes
from gateway.sqlite_schema import SchemaTooNew
from gateway.state_store import StateStore
from gateway.status import StatusSource, status_routes
from gateway.usage import UsageLedger

log = logging.getLogger("tandem.gateway")

GENERATION_PATHS: tuple[tuple[Literal["chat", "completions"], str], ...] = (
    ("chat", "/v1/chat/completions"),
    ("completions", "/v1/completions"),
)


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


class Gateway:
    """The gateway's parts for one config, built once and wired to each other: the load board,
    the model groups (each with its router, class gates and batch yielding: gateway.model_groups),
    the engine freezer, keys and usage, metrics, the proxies, the Batch API and the status page. A
    routing settings switch (ModelGroups.update) reaches every group's router, and through the
    routers' and ModelGroups' on_update every part that reads the settings in force."""

    def __init__(self, config: GatewayConfig, backends: Mapping[str, Backend] | None = None) -> None:
        """Without `backends`, HTTP backends are built from the replicas' base URLs."""
        self.config = config
        self.backends = dict(backends) if backends is not None else http_backends(config)
        unknown = set(self.backends) ^ {r.name for r in config.replicas}
        if unknown:
            raise ValueError(f"backends and config.replicas name different replicas: {sorted(unknown)}")
        settings = config.settings
        self.board = LoadBoard(config.replicas, settings.limits.load_probe_misses)
        self.models = models = ModelGroups(config, self.board)
        self.keyring = KeyRing.from_settings(settings.auth)
        self.key_admin = KeyAdmin(self.keyring, config.served_names)
        self.ledger = UsageLedger()
        self.metrics = GatewayMetrics(LiveState(self.board, models), per_key=settings.auth.per_key_metrics)
        self.freezer = EngineFreezer(
            config.replicas, self.backends, self.board, lambda: models.settings, self.metrics.registry
        )
        models.on_update(self.freezer.update)
        # What every proxy forwards with: one set of parts, shared by the generation and Responses routes.
        parts: dict[str, Any] = {
            "config": config,
            "backends": self.backends,
            "groups": models,
            "keyring": self.keyring,
            "metrics": self.metrics,
            "ledger": self.ledger,
        }
        self.proxies = {
            path: GenerationProxy(OpenAIGeneration(endpoint), **parts) for endpoint, path in GENERATION_PATHS
        }
        response_ids = ResponseIdMap(settings.responses.max_ids, settings.responses.ttl_s)
        self.responses = GenerationProxy(ResponsesGeneration(response_ids), **parts)
        self.retrieval = ResponseRetrieval(
            response_ids,
            config=config,
            groups=models,
            backends=self.backends,
            board=self.board,
            keyring=self.keyring,
            metrics=self.metrics,
        )
        # The Batch API sends each line through the generation proxies, in process.
        self.batches = BatchService(
            settings.batches,
            InProcessDispatch(self.proxies),
            config.served_names,
            self.keyring.client_named,
            self.metrics,
        )
        self.status = StatusSource(
            groups=models,
            board=self.board,
            frozen=lambda: self.freezer.frozen,
            recent=self.metrics.recent,
            ledger=self.ledger,
        )

    def require_admin(self, request: Request) -> None:
        """Admin routes: the admin key, or a loopback peer where no key is configured (gateway.auth)."""
        peer = request.client.host if request.client is not None else None
        self.keyring.authorize_admin(request.headers.get("authorization"), peer)

    def asgi_app(self) -> GatewayApp:
        """The app serving this gateway: every route attached, errors in the OpenAI envelope, and a
        lifespan that starts and stops the parts (`running`). Call once: an app runs its parts."""
        app = GatewayApp(title="Tandem gateway", lifespan=self.running, docs_url=None, redoc_url=None, openapi_url=None)
        app.state.gateway = self
        for path, proxy in self.proxies.items():
            app.add_generation_route(path, proxy)
        app.add_generation_route(RESPONSES_PATH, self.responses)
        add_responses_routes(app, self.retrieval)
        app.include_router(batch_routes(self.batches, self.keyring))
        app.include_router(admin_routes(self.key_admin, self.ledger, self.require_admin))
        app.include_router(status_routes(self.status, self.require_admin))
        app.include_router(service_routes(self.config, self.backends, self.models, self.keyring, self.metrics))
        app.include_router(routing_routes(self.models, self.require_admin))
        answer_errors_in_the_envelope(app)
        app.add_middleware(RequestIdMiddleware)
        return app

    @contextlib.asynccontextmanager
    async def running(self, app: FastAPI) -> AsyncIterator[None]:
        """The app's lifespan: the keys and usage store, the backends, the load poller, the
        freezer and the Batch API run while the app serves, and stop in the reverse order."""
        settings = self.config.settings
        try:
            store = open_state_store(self.batches.data_dir)
        except RuntimeError as exc:
            app.state.startup_error = exc  # uvicorn only logs it; gateway.server reports it
            raise
        self.key_admin.load(store)
        self.ledger.start(store)
        for backend in self.backends.values():
            await backend.start()
        await self.board.poll_once(self.backends)
        await self.freezer.start()
        poller = asyncio.create_task(self.board.poll_forever(self.backends, settings.limits.load_poll_interval_s))
        log.info(
            "gateway for %s, policy %s",
            "; ".join(f"{group.name}: replicas {', '.join(group.replicas)}" for group in self.models),
            self.models.settings.policy,
        )
        if not self.keyring.enabled and not is_loopback(settings.host):
            log.warning("%s", exposure_warning(settings))
        await self.batches.start()
        try:
            yield
        finally:
            await self.batches.stop()
            await self.freezer.stop()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            for backend in self.backends.values():
                await backend.close()
            await self.ledger.stop()
            store.close()


def create_app(config: GatewayConfig, backends: Mapping[str, Backend] | None = None) -> GatewayApp:
    """The gateway for `config`, as an ASGI app (Gateway's). Without `backends`, HTTP backends are
    built from the replicas' base URLs. The app's lifespan starts the backends and the load poller
    and stops them again."""
    return Gateway(config, backends).asgi_app()
