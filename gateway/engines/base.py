"""The engine seam: what Tandem needs to know about the inference engine that runs a replica.

The gateway speaks the OpenAI API to every replica, so routing, admission and the proxy never ask
which engine answers. What differs per engine is everything around that API: how its server is
started (command-line arguments, environment under the Ray executor), how its health and queue
lengths are read, which of its arguments a plan may set, whether it takes a request `priority`,
and how it is paused in place for GPU arbitration. An `EngineAdapter` answers those questions for
one engine; deploy/ (engine servers, plan checks), the gateway (load probe, priority) and the
tuner ask the adapter a replica names instead of assuming vLLM.

Adding an engine: one module beside gateway.engines.vllm that defines an adapter, registered in
gateway.engines.ENGINES, and its tests (docs/architecture.md, "Adding an engine").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Executor = Literal["mp", "uni", "ray"]
"""How an engine runs a replica's workers: processes of the replica ("mp"), the replica's own
process ("uni"), or one Ray actor per worker in the replica's placement group ("ray")."""

EngineCall = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """The engine's own queue, as it reports it on its metrics page."""

    running: int
    waiting: int


@dataclass(frozen=True)
class ServerLaunch:
    """What every engine's server is started with, for one replica."""

    model_source: str  # a local path or a hub id
    served_name: str  # the model name the server answers to (the gateway sends it upstream)
    host: str
    port: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    executor: Executor
    engine_kwargs: Mapping[str, Any]  # the plan's engine arguments, as the engine names them
    pause_middleware: str | None = None  # dotted path of the ASGI middleware serving gateway.engine_pause


class EngineAdapter(Protocol):
    """One inference engine, as Tandem starts, probes and pauses it."""

    name: str
    health_path: str
    """GET below the server's root: 200 while the engine can serve."""
    metrics_path: str
    """GET below the server's root: the engine's Prometheus page (its queue lengths among them)."""
    supports_pause: bool
    """Whether the engine can be frozen in place (requests and cache kept) for GPU arbitration."""
    server_module: str
    """The Python module run as `__main__` to start the server (deploy.engine_process runs it in
    the replica's child process, with `server_args` as its command line)."""

    def server_args(self, launch: ServerLaunch) -> list[str]:
        """The command-line arguments of the engine's OpenAI-compatible server."""
        ...

    def attach_placement_group(self, group_hex: str) -> None:
        """In the server's process, before it starts: make the engine put its workers in the
        replica's placement group (Ray's id, hex), which a child process is not "in" by itself."""
        ...

    def executor_env(self, executor: Executor, gpus_per_worker: float) -> dict[str, str]:
        """Environment the engine's process needs for `executor`, besides the placement group and
        the cluster's address (which deploy/ sets for every engine)."""
        ...

    def argument_names(self) -> frozenset[str] | None:
        """Every argument the installed engine takes, or None where the engine is not installed
        (a gateway-only or tuner-only machine: names are then not checked)."""
        ...

    def parse_load(self, metrics: bytes) -> EngineLoad:
        """The engine's running and waiting requests, from its Prometheus page."""
        ...

    def accepts_request_priority(self, scheduling_policy: str) -> bool:
        """Whether a request's `priority` field may be sent to an engine run with this policy."""
        ...

    def pause_controls(self, engine_client: Any) -> tuple[EngineCall, EngineCall]:
        """Pause (keeping requests and cache) and resume, on the engine client of the server
        process the pause middleware runs in."""
        ...
