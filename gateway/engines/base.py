"""The engine seam: what Tandem needs to know about the inference engine that runs a replica.

The gateway speaks the OpenAI API to every replica, so routing, admission and the proxy never ask
which engine answers. What differs per engine is everything around that API: how its server is
started (command-line arguments, environment under the Ray executor), how its health and queue
lengths are read, which arguments a plan may set (its `args_model`), whether it takes a request `priority`,
and how it is paused in place for GPU arbitration. An `EngineAdapter` answers those questions for
one engine; deploy/ (engine servers, plan checks), the gateway (load probe, priority) and the
tuner ask the adapter a replica names instead of assuming vLLM.

Adding an engine: one module beside gateway.engines.vllm that defines an adapter, registered in
gateway.engines.ENGINES, and its tests (docs/architecture.md, "Adding an engine").
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

Executor = Literal["mp", "uni", "ray"]
"""How an engine runs a replica's workers: processes of the replica ("mp"), the replica's own
process ("uni"), or one Ray actor per worker in the replica's placement group ("ray")."""

EngineCall = Callable[[], Awaitable[None]]


class EngineArguments(BaseModel):
    """A replica's `engine:` arguments: the base every adapter's argument model extends.

    These fields are the knobs Tandem's own code reads whatever the engine (routing thresholds from
    max_num_seqs, the plan's GPU memory checks, the priority scheduler, the tuner's search and memory
    fit); an adapter's model adds its engine's own typed fields and says, in `engine_kwargs`, how
    they reach the engine. Any other argument of the engine goes in `extra`, checked against the
    names `known_argument_names` gives where the engine is installed."""

    model_config = ConfigDict(extra="forbid")

    engine_label: ClassVar[str] = "engine"
    """How messages name the engine ("vLLM")."""

    max_num_seqs: int = Field(64, ge=1)
    max_num_batched_tokens: int | None = Field(
        None,
        ge=1,
        description="Tokens one engine step may schedule (decode tokens and prompt chunks): the step budget. "
        "On a batch engine co-resident with an interactive one it bounds the step a freeze waits for "
        "(docs/routing.md, bounded step).",
    )
    max_model_len: int | None = Field(None, ge=16)
    gpu_memory_utilization: float = Field(0.45, gt=0, le=1)
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = Field(
        None,
        ge=1,
        description="KV cache per worker, in bytes. Set, the engine sizes its cache from it instead of profiling "
        "free device memory, which two engines starting on one GPU would each count the other's use in.",
    )
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    extra: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def known_argument_names(cls) -> frozenset[str] | None:
        """Every argument the installed engine takes, or None where it is not installed (names in
        `extra` are then not checked)."""
        return None

    @model_validator(mode="before")
    @classmethod
    def _name_unknown_arguments(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                hints = []
                for key in unknown:
                    close = difflib.get_close_matches(key, list(cls.model_fields), n=1)
                    hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                raise ValueError(
                    f"unknown engine argument(s) {', '.join(hints)}; other {cls.engine_label} arguments go under 'extra'"
                )
        return data

    @model_validator(mode="after")
    def _extra_names_are_engine_arguments(self) -> EngineArguments:
        known = self.known_argument_names() if self.extra else None  # importing an engine takes seconds
        if known is not None:
            unknown = sorted(set(self.extra) - known)
            if unknown:
                raise ValueError(
                    f"engine.extra has argument(s) {self.engine_label} does not know: {', '.join(unknown)}"
                )
        typed = set(self.extra) & (set(type(self).model_fields) - {"extra"})
        if typed:
            raise ValueError(f"engine.extra repeats typed field(s) {sorted(typed)}: set them directly")
        return self

    def engine_kwargs(self) -> dict[str, Any]:
        """The arguments as the engine names them, unset ones left to its defaults."""
        kwargs = self.model_dump(exclude={"extra"}, exclude_none=True)
        kwargs.update(self.extra)
        return kwargs


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

    @property
    def args_model(self) -> type[EngineArguments]:
        """The model a plan validates a replica's `engine:` mapping with (deploy.plan, by
        `engine_kind`): EngineArguments or a subclass with the engine's own fields."""
        ...

    def layout_problem(self, pipeline_parallel_size: int, args: EngineArguments, on_cpu: bool) -> str | None:
        """Why the engine cannot run a replica of this layout and these arguments on this kind of
        cluster (a plan refuses it, saying what to change); None where it can."""
        ...

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
