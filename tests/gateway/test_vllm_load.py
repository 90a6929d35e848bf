"""Reading an engine's queue lengths from vLLM's Prometheus page (gateway.backends.http)."""

from __future__ import annotations

from gateway.backends.base import EngineLoad
from gateway.backends.http import parse_vllm_load

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
