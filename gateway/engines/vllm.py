"""The vLLM adapter (gateway.engines.base): vLLM's OpenAI server, its arguments and its metrics.

vLLM's server is started as `python -m vllm.entrypoints.openai.api_server` (through
deploy.engine_process, which has the adapter hand vLLM the replica's placement group), answers /health,
publishes its queues as the `vllm:num_requests_running` and `vllm:num_requests_waiting` gauges
on /metrics, takes a request `priority` only under `scheduling_policy: priority`, and can be
frozen in place with `pause_generation(mode="keep")` (deploy.engine_lease).

Nothing here imports vLLM at module level: the gateway, a gateway-only install and the tuner use
this module too; the argument list is read from the installed vLLM when there is one.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families
from pydantic import Field, model_validator

from gateway.engines.base import EngineArguments, EngineCall, EngineLoad, Executor, ServerLaunch

_GAUGES = {"vllm:num_requests_running": "running", "vllm:num_requests_waiting": "waiting"}
# A sample line starts with its name and then labels or a space.
_GAUGE_PREFIXES = tuple(f"{name}{end}" for name in _GAUGES for end in ("{", " "))


class EngineArgs(EngineArguments):
    """vLLM engine arguments: Tandem's common knobs (EngineArguments) and vLLM's own tuned ones as
    typed fields; any other vLLM EngineArgs field goes in `extra` and is checked against the
    installed vLLM's own list."""

    engine_label: ClassVar[str] = "vLLM"

    long_prefill_token_threshold: int | None = Field(
        None,
        ge=1,
        description="Most prompt tokens one request may prefill in a step (vLLM's chunk cap per request; "
        "None: vLLM's default). Only where the installed vLLM has this argument.",
    )
    enable_prefix_caching: bool | None = None
    dtype: str = "auto"

    @classmethod
    def known_argument_names(cls) -> frozenset[str] | None:
        return vllm_engine_argument_names()

    @model_validator(mode="after")
    def _step_budget_is_consistent(self) -> EngineArgs:
        """vLLM's own rules for the step budget, said before an engine starts (vLLM 0.32,
        vllm/config/scheduler.py: the budget must hold one decode token per sequence)."""
        budget = self.max_num_batched_tokens
        if budget is not None and budget < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({budget}) is below max_num_seqs ({self.max_num_seqs}): a step must have "
                "room for one decode token per running sequence; raise the budget or lower max_num_seqs"
            )
        threshold = self.long_prefill_token_threshold
        if threshold is not None:
            if budget is not None and threshold > budget:
                raise ValueError(
                    f"long_prefill_token_threshold ({threshold}) is above max_num_batched_tokens ({budget}): "
                    "no step can prefill more than its budget; lower it or leave it unset"
                )
            known = vllm_engine_argument_names()
            if known is not None and "long_prefill_token_threshold" not in known:
                raise ValueError(
                    "long_prefill_token_threshold: the installed vLLM has no such argument; leave it unset "
                    "and bound the step with max_num_batched_tokens"
                )
        return self


@cache
def vllm_engine_argument_names() -> frozenset[str] | None:
    """Field names of the installed vLLM's EngineArgs, or None where vLLM is not installed."""
    try:
        from vllm.engine.arg_utils import EngineArgs as VllmEngineArgs
    except ImportError:
        return None
    return frozenset(f.name for f in dataclasses.fields(VllmEngineArgs))


def _flags(kwargs: dict[str, Any]) -> list[str]:
    """vLLM's command-line spelling of keyword arguments: `--max-num-seqs 8`, `--no-enforce-eager`,
    JSON for dicts and lists."""
    flags: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (dict, list)):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


class VllmEngine:
    """The EngineAdapter for vLLM's OpenAI server."""

    name = "vllm"
    health_path = "/health"
    metrics_path = "/metrics"
    supports_pause = True
    server_module = "vllm.entrypoints.openai.api_server"
    args_model = EngineArgs

    def server_args(self, launch: ServerLaunch) -> list[str]:
        args = [
            "--model", launch.model_source,
            "--served-model-name", launch.served_name,
            "--host", launch.host,
            "--port", str(launch.port),
            "--tensor-parallel-size", str(launch.tensor_parallel_size),
            "--pipeline-parallel-size", str(launch.pipeline_parallel_size),
            "--disable-uvicorn-access-log",
            "--distributed-executor-backend", launch.executor,
        ]  # fmt: skip
        if launch.pause_middleware is not None:
            args += ["--middleware", launch.pause_middleware]
        return args + _flags(dict(launch.engine_kwargs))

    def attach_placement_group(self, group_hex: str) -> None:
        # As Ray Serve LLM does in-process (`vllm_config.parallel_config.placement_group`): every
        # engine config this process builds carries the group, and it travels to vLLM's engine-core
        # process, whose Ray executor puts one worker in each bundle instead of making a group.
        from ray import PlacementGroupID
        from ray.util.placement_group import PlacementGroup
        from vllm.engine.arg_utils import EngineArgs as VllmEngineArgs

        group = PlacementGroup(PlacementGroupID(bytes.fromhex(group_hex)))
        build = VllmEngineArgs.create_engine_config

        def create_engine_config(self: VllmEngineArgs, *args: Any, **kwargs: Any) -> Any:
            config = build(self, *args, **kwargs)
            config.parallel_config.placement_group = group
            return config

        VllmEngineArgs.create_engine_config = create_engine_config

    def executor_env(self, executor: Executor, gpus_per_worker: float) -> dict[str, str]:
        # vLLM asks Ray for one whole GPU per worker unless told, which no fractional bundle holds.
        return {"VLLM_RAY_PER_WORKER_GPUS": str(gpus_per_worker)} if executor == "ray" else {}

    def argument_names(self) -> frozenset[str] | None:
        return vllm_engine_argument_names()

    def layout_problem(self, pipeline_parallel_size: int, args: EngineArguments, on_cpu: bool) -> str | None:
        if on_cpu and pipeline_parallel_size > 1 and args.enforce_eager:
            return (
                "pipeline parallelism with enforce_eager fails on vLLM's CPU backend (the first step's receive "
                "buffer is never allocated); set enforce_eager: false"
            )
        return None

    def parse_load(self, metrics: bytes) -> EngineLoad:
        return parse_vllm_load(metrics)

    def accepts_request_priority(self, scheduling_policy: str) -> bool:
        # vLLM refuses a request's `priority` unless its scheduler orders by it.
        return scheduling_policy == "priority"

    def pause_controls(self, engine_client: Any) -> tuple[EngineCall, EngineCall]:
        # mode "keep": the scheduler stops after the step in progress, requests and KV cache stay;
        # clear_cache=False keeps the prefix cache that makes a resume cheap.
        async def pause() -> None:
            await engine_client.pause_generation(mode="keep", clear_cache=False)

        async def resume() -> None:
            await engine_client.resume_generation()

        return pause, resume


def parse_vllm_load(metrics: bytes) -> EngineLoad:
    """Sum vLLM's running and waiting gauges over every engine (label set) on the page; a gauge
    the page lacks counts as 0. prometheus_client's parser reads the samples (labels, escapes,
    timestamps); only the lines of these two gauges are handed to it, so the rest of the page
    (mostly histogram buckets) is not parsed on the gateway's event loop at every poll.
    Similarly named series (vllm:num_requests_waiting_by_reason) are not these gauges."""
    lines = [line for line in metrics.decode("utf-8", "replace").splitlines() if line.startswith(_GAUGE_PREFIXES)]
    totals = dict.fromkeys(_GAUGES.values(), 0.0)
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name in _GAUGES:
                totals[_GAUGES[sample.name]] += sample.value
    return EngineLoad(running=int(totals["running"]), waiting=int(totals["waiting"]))


VLLM = VllmEngine()
