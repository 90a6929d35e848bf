"""The gateway as a Serve deployment: it runs the gateway's own HTTP server inside the cluster.

The gateway does not sit behind Serve's HTTP proxy: that proxy would add an actor hop per
request and per stream chunk. Instead this replica starts the gateway's uvicorn server on its
own thread and port, so a deployed stack outlives the command that deployed it, and Serve
still restarts it if it dies.
"""

from __future__ import annotations

from collections.abc import Mapping

from ray.serve.handle import DeploymentHandle

from gateway.backends.base import Backend
from gateway.contract.config import GatewayConfig


class GatewayServer:
    # Serve awaits an async constructor (a replica is ready once it returns); Python's type rules know no such thing.
    async def __init__(self, config: GatewayConfig, engines: dict[str, DeploymentHandle]) -> None:  # type: ignore[misc]
        from gateway.app import http_backends
        from gateway.logs import configure_logging
        from gateway.server import start_in_thread

        # A GatewayConfig, pickled by Ray with its keys (deploy.builder); copied so that the base
        # URLs filled in below stay this replica's own.
        gateway_config = config.model_copy(deep=True)
        for replica in gateway_config.replicas:
            replica.base_url = await engines[replica.name].url.remote()
        # An engine that Serve restarts serves from a new port: its backend asks the handle
        # again after a failed probe and follows it (gateway.backends.relocating).
        backends = http_backends(gateway_config, {name: handle.url.remote for name, handle in engines.items()})
        self.config = gateway_config
        log = gateway_config.settings.log  # the plan's gateway.log, for the gateway's own records
        configure_logging(log.format, log.level, logger="tandem")
        self._backends: Mapping[str, Backend] = backends
        settings = gateway_config.settings
        self._server = start_in_thread(gateway_config, backends, host=settings.host, port=settings.port)

    async def replica_urls(self) -> dict[str, str | None]:
        """Each replica's OpenAI base URL, for status and tests."""
        return {name: getattr(backend, "base_url", None) for name, backend in self._backends.items()}

    async def check_health(self) -> None:
        if not self._server.is_alive():
            raise RuntimeError("the gateway's HTTP server has stopped")

    def __del__(self) -> None:
        self._server.stop()
