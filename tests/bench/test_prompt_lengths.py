"""`--input-len N` means N of the server's tokens, with no tokenizer given: exact where the server
answers /tokenize, calibrated from usage (and said before the run) where it does not."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tuner.bench import BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec, run_benchmark

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/fake_upstream.py, whatever the import mode

from fake_upstream import FakeUpstream, fake_token_count


def _config(url: str, model: str, input_len: int) -> BenchConfig:
    return BenchConfig(
        endpoint=Endpoint(url=url, model=model, timeout_s=30),
        streams=[
            TrafficStream(
                workload=WorkloadSpec(input_len=input_len, output_len=2, range_ratio=0.5),
                load=ClosedLoop(concurrency=2),
            )
        ],
        bounds=Bounds(num_requests=12),
    )


def test_prompts_hold_exactly_the_asked_tokens_when_the_server_tokenizes() -> None:
    notices: list[str] = []
    with FakeUpstream(model="m").running() as upstream:
        result = run_benchmark(_config(upstream.base_url, "m", 64), on_notice=notices.append)
    prompts = [r["prompt"] for r in upstream.requests]
    targets = [fake_token_count(p) for p in prompts]
    # range_ratio 0.5 draws each length from [32, 96]: exact means each prompt hits its own draw,
    # so the counts vary but never fall outside the range; words alone would not (they cost 1-2).
    assert len(prompts) == 12 and all(32 <= t <= 96 for t in targets)
    assert len(set(targets)) > 3
    word_counts = [len(p.split()) for p in prompts]
    assert word_counts != targets  # the fake tokenizer prices words unevenly: lengths are tokens, not words
    assert result.prompt_lengths == "tokenize" and not notices


def test_each_prompt_matches_its_drawn_length_to_the_token() -> None:
    with FakeUpstream(model="m").running() as upstream:
        config = _config(upstream.base_url, "m", 40).model_copy(
            update={
                "streams": [
                    TrafficStream(workload=WorkloadSpec(input_len=40, output_len=2), load=ClosedLoop(concurrency=1))
                ]
            }
        )
        run_benchmark(config)
    assert [fake_token_count(r["prompt"]) for r in upstream.requests] == [40] * 12


def test_without_tokenize_the_mean_is_calibrated_and_the_user_warned_before_the_run() -> None:
    seen_at_notice: list[int] = []
    with FakeUpstream(model="m", serves_tokenize=False).running() as upstream:
        result = run_benchmark(
            _config(upstream.base_url, "m", 64), on_notice=lambda note: seen_at_notice.append(len(upstream.requests))
        )
    probes, measured = upstream.requests[:2], upstream.requests[2:]
    assert seen_at_notice == [2]  # warned after the two calibration probes, before any measured request
    assert all(p.get("max_tokens") == 1 and not p.get("stream") for p in probes)
    # The fake server's usage counts words: one token per word, so 64 tokens ~ 64 words on average.
    assert len(measured) == 12 and abs(np.mean([len(r["prompt"].split()) for r in measured]) - 64) < 10
    assert result.prompt_lengths == "usage"
