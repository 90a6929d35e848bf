"""The vLLM engine adapter (gateway.engines.vllm): its load parsing, command line, pause calls."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from gateway.engines import DEFAULT_ENGINE, UnknownEngine, engine_adapter
from gateway.engines.base import EngineLoad, ServerLaunch
from gateway.engines.vllm import VLLM, parse_vllm_load

TWO_ENGINES = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 7.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 9.0
"""


def test_the_gauges_are_summed_over_engines_and_look_alikes_ignored() -> None:
    assert parse_vllm_load(TWO_ENGINES) == EngineLoad(running=5, waiting=5)


def test_samples_with_timestamps_read_their_value_not_the_timestamp() -> None:
    """The exposition format allows a timestamp after the value; a parser splitting on the last
    space (this module's before prometheus_client read the page) took 1712345678000 for the value."""
    page = (
        b'vllm:num_requests_running{engine="0",model_name="m"} 3 1712345678000\n'
        b"vllm:num_requests_waiting 2 1712345678000\n"
    )
    assert parse_vllm_load(page) == EngineLoad(running=3, waiting=2)


def test_a_label_value_with_spaces_and_braces_is_read() -> None:
    page = b'vllm:num_requests_running{model_name="my model {v2}"} 6.0\n'
    assert parse_vllm_load(page) == EngineLoad(running=6, waiting=0)


def test_missing_gauges_count_as_zero() -> None:
    assert parse_vllm_load(b"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n") == EngineLoad(
        running=0, waiting=0
    )
    assert parse_vllm_load(b"") == EngineLoad(running=0, waiting=0)


# ---- the rest of the vLLM adapter (gateway.engines.base.EngineAdapter) ------------------------------


def launch(**changes: Any) -> ServerLaunch:
    base = ServerLaunch(
        model_source="/models/m",
        served_name="m",
        host="127.0.0.1",
        port=8001,
        tensor_parallel_size=2,
        pipeline_parallel_size=1,
        executor="mp",
        engine_kwargs={"max_num_seqs": 8, "enforce_eager": False, "enable_prefix_caching": True, "x": {"a": 1}},
    )
    return replace(base, **changes)


def flag_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_server_args_spell_vllms_command_line() -> None:
    args = VLLM.server_args(launch(pause_middleware="deploy.engine_lease.PauseLeaseMiddleware"))
    assert (flag_value(args, "--model"), flag_value(args, "--served-model-name")) == ("/models/m", "m")
    assert (flag_value(args, "--host"), flag_value(args, "--port")) == ("127.0.0.1", "8001")
    assert flag_value(args, "--tensor-parallel-size") == "2"
    assert flag_value(args, "--distributed-executor-backend") == "mp"
    assert flag_value(args, "--middleware") == "deploy.engine_lease.PauseLeaseMiddleware"
    assert flag_value(args, "--max-num-seqs") == "8"
    assert "--no-enforce-eager" in args and "--enable-prefix-caching" in args
    assert json.loads(flag_value(args, "--x")) == {"a": 1}
    assert "--middleware" not in VLLM.server_args(launch())


def test_the_ray_executor_gets_each_workers_gpu_share() -> None:
    assert VLLM.executor_env("ray", 0.5) == {"VLLM_RAY_PER_WORKER_GPUS": "0.5"}
    assert VLLM.executor_env("mp", 0.5) == {} and VLLM.executor_env("uni", 1.0) == {}


def test_only_a_priority_scheduler_takes_a_request_priority() -> None:
    assert VLLM.accepts_request_priority("priority")
    assert not VLLM.accepts_request_priority("fcfs")


async def test_pause_keeps_requests_and_cache_and_resume_goes_on() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class EngineClient:  # the two AsyncLLM methods the adapter calls, as vLLM names them
        async def pause_generation(self, **kwargs: Any) -> None:
            calls.append(("pause", kwargs))

        async def resume_generation(self) -> None:
            calls.append(("resume", {}))

    pause, resume = VLLM.pause_controls(EngineClient())
    await pause()
    await resume()
    assert calls == [("pause", {"mode": "keep", "clear_cache": False}), ("resume", {})]


def test_the_registry_knows_vllm_and_names_the_known_engines_otherwise() -> None:
    assert engine_adapter(DEFAULT_ENGINE) is VLLM
    with pytest.raises(UnknownEngine, match="known: vllm"):
        engine_adapter("sglang")
