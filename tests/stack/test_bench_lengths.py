"""`tuner bench --input-len N` against the real stack with no tokenizer flag sends N tokens: the
prompts are priced through the gateway's /tokenize in the demo model's own (small) vocabulary,
where a word costs about three tokens."""

from __future__ import annotations

import pytest

from tuner.bench import BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec, run_benchmark

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_input_len_means_the_engines_tokens(cpu_stack, api: str) -> None:
    config = BenchConfig(
        endpoint=Endpoint(url=cpu_stack.base_url, model=cpu_stack.model, api=api, timeout_s=300),
        streams=[TrafficStream(workload=WorkloadSpec(input_len=128, output_len=2), load=ClosedLoop(concurrency=2))],
        bounds=Bounds(num_requests=4),
    )
    result = run_benchmark(config)
    assert result.overall.completed == 4 and result.prompt_lengths == "tokenize"
    mean_in = result.overall.mean_input_tokens
    assert mean_in is not None
    # usage adds what the server puts around the prompt: a BOS token, and for chat the template.
    overhead = 0 if api == "completions" else 40
    assert 128 <= mean_in <= 128 * 1.03 + 1 + overhead, mean_in
