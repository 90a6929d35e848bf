"""Running the gateway: in the foreground (`gateway serve`), or on a thread of its own (inside a
Ray actor, or in tests), each time under uvicorn with uvloop and httptools.

- `serve(config, host, port)` blocks until the process is told to stop.
- `start_in_thread(config, backends, host, port)` returns a `GatewayThread` once the gateway
  accepts connections; `.stop()` shuts it down (lifespan included) and joins the thread.
- `run_serve_command(config_path, host, port)` is `gateway serve --config FILE [--host --port]`:
  CLI flag > environment (TANDEM_GATEWAY_HOST / TANDEM_GATEWAY_PORT) > config file > default.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from gateway.app import create_app
from gateway.backends.base import Backend
from gateway.contract.config import ConfigError, GatewayConfig, LogFormat, LogLevel, load_config
from gateway.logs import configure_logging

HOST_ENV = "TANDEM_GATEWAY_HOST"
PORT_ENV = "TANDEM_GATEWAY_PORT"


KEEP_ALIVE_S = 75


def _uvicorn_config(
    config: GatewayConfig,
    backends: Mapping[str, Backend] | None,
    host: str | None,
    port: int | None,
    own_logging: bool = False,
) -> uvicorn.Config:
    """`own_logging`: the caller has configured logging (gateway.logs), so uvicorn keeps its
    hands off and its records go to the same handler, in the same format."""
    settings = config.settings
    tls = settings.tls
    if tls is not None:
        missing = [str(path) for path in (tls.cert_file, tls.key_file) if not path.expanduser().is_file()]
        if missing:
            raise ConfigError(f"gateway.tls: no such file(s) on this machine: {', '.join(missing)}")
    extra: dict[str, Any] = {"log_config": None} if own_logging else {}
    return uvicorn.Config(
        create_app(config, backends),
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # gateway.proxy logs each request (gateway.logs) with its key, class and replica
        server_header=False,
        log_level="info",
        timeout_graceful_shutdown=5,
        # Longer than the idle time after which clients drop a kept-alive connection (httpx and so
        # the openai SDK: 5 s, aiohttp: 15 s, vLLM's and tuner's benchmark clients: 60 s). At
        # uvicorn's default of 5 s a client could send on a connection the gateway was closing and
        # get a reset without an answer (benchmarks/keepalive_race.py; docs/reliability.md).
        timeout_keep_alive=KEEP_ALIVE_S,
        ssl_certfile=str(tls.cert_file.expanduser()) if tls else None,
        ssl_keyfile=str(tls.key_file.expanduser()) if tls else None,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        **extra,
    )


def serve(config: GatewayConfig, host: str | None = None, port: int | None = None, own_logging: bool = False) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    uvicorn.Server(_uvicorn_config(config, None, host, port, own_logging)).run()


class GatewayThread:
    """A gateway running on its own thread and event loop."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        scheme = "https" if self._server.config.ssl_certfile else "http"
        return f"{scheme}://{self._server.config.host}:{self.port}/v1"

    def is_alive(self) -> bool:
        """Whether the gateway's thread still runs (it ends when the server stops or fails)."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"gateway thread did not stop within {timeout_s:g} s")


def start_in_thread(
    config: GatewayConfig,
    backends: Mapping[str, Backend] | None = None,
    host: str | None = None,
    port: int | None = 0,
    start_timeout_s: float | None = None,
) -> GatewayThread:
    """Start the gateway on a new thread (port 0: any free port) and return once it listens.

    Starting means running the app's lifespan: the backends start (the handle backend imports
    ray.serve.llm's request models, and with them vLLM: about 10 s of CPU, several times that on
    a loaded 2-core machine) and every replica's load is polled once (each probe bounded by its
    own timeout). So by default there is no deadline here: this returns when the server listens
    and raises when it fails, with the failure. A caller that must bound the wait gives
    `start_timeout_s`; inside a Serve replica, Serve's own health check decides.
    """
    server = uvicorn.Server(_uvicorn_config(config, backends, host, port))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(server.serve())
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="tandem-gateway", daemon=True)
    thread.start()
    deadline = None if start_timeout_s is None else time.monotonic() + start_timeout_s
    while not (server.started or failure or not thread.is_alive()):
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        thread.join(5)
        startup_error = getattr(getattr(server.config.app, "state", None), "startup_error", None)
        if startup_error is not None:
            reason = str(startup_error)
        elif failure:
            reason = f"{type(failure[0]).__name__}: {failure[0]}"
        elif not thread.is_alive():
            reason = "the server stopped during start-up (see the log above: a port in use, a lifespan error)"
        else:
            reason = f"not listening after {start_timeout_s:g} s"
        raise RuntimeError(f"gateway did not start: {reason}")
    return GatewayThread(server, thread)


def run_serve_command(
    config_path: str | Path,
    host: str | None = None,
    port: int | None = None,
    log_format: LogFormat | None = None,
    log_level: LogLevel | None = None,
) -> None:
    """`gateway serve --config FILE [--host H --port P --log-format F --log-level L]`; the log
    flags take precedence over the config's `settings.log`."""
    config = load_config(config_path)
    log = config.settings.log
    configure_logging(log_format or log.format, log_level or log.level)
    host = host or os.environ.get(HOST_ENV) or None
    if port is None and os.environ.get(PORT_ENV):
        port = int(os.environ[PORT_ENV])
    serve(config, host, port, own_logging=True)
