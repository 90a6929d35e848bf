"""Parsing of SLOs, mixes and bounds; prompt lengths and determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tuner.bench.config import SLO, BenchConfig, Bounds, ClosedLoop, Endpoint, OpenLoop, TrafficStream, WorkloadSpec
from tuner.bench.mix import MixSpec
from tuner.bench.prompts import PromptFactory, length_range, load_tokenizer
from tuner.workloads import WORKLOADS, get_workload


def test_slo_parses_any_subset_and_rejects_unknown_metrics() -> None:
    assert SLO.parse("ttft:500,tpot:50") == SLO(ttft_ms=500, tpot_ms=50)
    assert SLO.parse("e2el:2000").e2el_ms == 2000
    for bad in ("itl:5", "ttft=5", "", "ttft:-1"):
        with pytest.raises(ValueError):
            SLO.parse(bad)


def test_mix_builds_tagged_streams() -> None:
    default = WorkloadSpec(input_len=64, output_len=32)
    interactive, batch = MixSpec.parse("interactive=4,batch=32:decode-heavy", think_time_s=0.5).streams(default)
    assert interactive.traffic_class == "interactive" and interactive.workload == default
    assert interactive.load == ClosedLoop(concurrency=4, think_time_s=0.5)
    assert batch.traffic_class == "batch" and batch.load == ClosedLoop(concurrency=32)
    assert (batch.workload.input_len, batch.workload.output_len) == (128, 2048)

    (rate,) = MixSpec.parse("batch-rate=2.5").streams(default)
    assert rate.load == OpenLoop(request_rate=2.5)


@pytest.mark.parametrize(
    "text", ["interactive=4,batch=2,batch-rate=1", "gold=3", "interactive", "interactive=0", "batch=x"]
)
def test_mix_rejects_unclear_specs(text: str) -> None:
    with pytest.raises(ValueError):
        MixSpec.parse(text)


def test_every_run_is_bounded_and_streams_are_distinct() -> None:
    with pytest.raises(ValidationError):
        Bounds()
    stream = TrafficStream(workload=WorkloadSpec(input_len=8, output_len=8), load=ClosedLoop(concurrency=1))
    with pytest.raises(ValidationError):
        BenchConfig(
            endpoint=Endpoint(url="http://x/v1", model="m"), streams=[stream, stream], bounds=Bounds(num_requests=1)
        )


def test_presets_are_shared_with_the_perf_model() -> None:
    assert set(WORKLOADS) == {"equal", "prefill-heavy", "decode-heavy", "chat"}
    assert get_workload("equal").input_len == 1024
    assert WorkloadSpec.from_preset("chat").preset == "chat"
    with pytest.raises(ValueError, match="choose one of"):
        get_workload("nope")


def test_prompts_are_deterministic_per_seed_and_stream_and_lengths_stay_in_range() -> None:
    workload = WorkloadSpec(input_len=100, output_len=50, range_ratio=0.2)

    def texts(seed: int, stream: int) -> list[tuple[str, int]]:
        factory = PromptFactory(workload, seed=seed, stream=stream)
        return [(p.text, p.output_len) for p in (factory.next() for _ in range(20))]

    assert texts(1, 0) == texts(1, 0)
    prepared = PromptFactory(workload, seed=1, stream=0)
    prepared.prepare(7)
    assert [(p.text, p.output_len) for p in (prepared.next() for _ in range(20))] == texts(1, 0)
    assert texts(1, 0) != texts(2, 0)
    assert texts(1, 0) != texts(1, 1)
    low, high = length_range(50, 0.2)
    assert (low, high) == (40, 60)
    outputs = [n for _, n in texts(3, 0)]
    assert all(low <= n <= high for n in outputs) and len(set(outputs)) > 1
    word_prompt = PromptFactory(WorkloadSpec(input_len=37, output_len=1), seed=0, stream=0).next()
    assert len(word_prompt.text.split()) == 37


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer saved as a model directory, like a real model's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(
        ["the quick brown fox jumps over the lazy dog " * 20, "hello world 0123456789"], trainer
    )
    directory = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>").save_pretrained(directory)
    return directory


def test_tokenizer_prompts_encode_to_the_target_length(tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tokenizer_dir))
    factory = PromptFactory(
        WorkloadSpec(input_len=200, output_len=8, range_ratio=0.5), seed=7, stream=0, tokenizer=tokenizer
    )
    for _ in range(10):
        prompt = factory.next()
        encoded = tokenizer.encode(prompt.text, add_special_tokens=False)
        assert len(encoded) == prompt.target_input_len
        assert not set(encoded) & set(tokenizer.all_special_ids)
