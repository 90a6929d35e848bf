"""Behaviour of the architecture, step and prediction models (pure computation, fast)."""

from __future__ import annotations

import json

import pytest

from tuner.perfmodel import EngineSettings, Layout, ModelConstants, load_engine, load_hardware, predict, resolve_model
from tuner.perfmodel.coresidence import load_coresidence
from tuner.perfmodel.hardware import HardwareProfile, with_link
from tuner.perfmodel.link_sweep import compare_layouts, scaled_link
from tuner.perfmodel.step import StepBatch, StepModel
from tuner.workloads import WORKLOADS, get_workload

EQUAL = get_workload("equal")


def test_resolve_model_knows_aliases_and_hub_ids_and_names_them_when_unknown() -> None:
    by_alias = resolve_model("gpt-oss-120b")
    assert resolve_model("openai/gpt-oss-120b") == by_alias
    assert by_alias.hub_id == "openai/gpt-oss-120b"
    assert 116e9 < by_alias.total_params < 118e9  # model card: 116.8B
    assert 60 < by_alias.weight_bytes_total / 1e9 < 67  # MXFP4 experts + BF16 rest: about 65 GB
    assert resolve_model("llama-3.1-8b").kv_bytes_per_token == 128 * 1024  # reference: 128 KiB
    with pytest.raises(ValueError, match="gpt-oss-20b.*qwen3-coder-30b-a3b"):
        resolve_model("no-such-model")


def test_resolve_model_reads_a_local_hf_directory(tmp_path) -> None:
    config = {
        "model_type": "llama",
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 512,
        "torch_dtype": "float16",
        "sliding_window": 64,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    arch = resolve_model(str(tmp_path))
    assert arch.head_dim == 64 and arch.weights.mlp == "fp16" and arch.sliding_window == 64
    assert arch.kv_bytes_for_sequence(1000) == 2 * (64 + 1000) * arch.kv_bytes_per_token_layer()


@pytest.mark.parametrize("alias", ["gpt-oss-120b", "llama-3.1-8b", "qwen3-coder-30b-a3b", "mistral-small-3.1-24b"])
def test_tp2_and_pp2_each_halve_weights_per_device(alias: str) -> None:
    arch = resolve_model(alias)
    whole = arch.weights_per_device_gb(1, 1)
    for tp, pp in ((2, 1), (1, 2)):
        assert arch.weights_per_device_gb(tp, pp) == pytest.approx(whole / 2, rel=0.02)


def test_more_bandwidth_never_slows_a_step() -> None:
    arch, engine = resolve_model("gpt-oss-120b"), load_engine("vllm")
    pair = load_hardware("dgx-spark-pair")
    faster_memory = pair.model_copy(
        update={
            "device": pair.device.model_copy(
                update={
                    "measured_memory_bandwidth_gbs": pair.device.measured_memory_bandwidth_gbs.model_copy(
                        update={"value": 400}
                    )
                }
            )
        }
    )
    link = pair.inter_node_link
    faster_link = pair.model_copy(
        update={"inter_node_link": link.model_copy(update={"allreduce": link.allreduce.scaled(0.5, 2.0)})}
    )
    for tokens in (1, 8, 64, 512):
        batch = StepBatch(decode_tokens=tokens, decode_context=2048)
        for tp, pp in ((1, 1), (2, 1), (1, 2)):
            base = StepModel(arch, pair, engine, tp, pp).cycle_seconds([batch])
            assert StepModel(arch, faster_memory, engine, tp, pp).cycle_seconds([batch]) <= base
            assert StepModel(arch, faster_link, engine, tp, pp).cycle_seconds([batch]) <= base


@pytest.mark.parametrize("layout", [Layout(), Layout(tp=2), Layout(pp=2)])
def test_tpot_grows_with_batch(layout: Layout) -> None:
    tpots = [predict("gpt-oss-120b", "dgx-spark-pair", layout, EQUAL, c).tpot_ms for c in (1, 4, 16, 64, 256)]
    assert tpots == sorted(tpots) and tpots[-1] > 2 * tpots[0]


def test_single_stream_decode_is_memory_bandwidth_bound() -> None:
    arch = resolve_model("llama-3.1-8b")
    spark = load_hardware("dgx-spark")
    engine = load_engine("vllm")
    bytes_per_token = arch.weight_bytes_total - arch.embedding_bytes()  # embedding rows are looked up, not streamed
    bound = 232e9 * engine.bandwidth_efficiency.value / bytes_per_token
    tok_s = predict(arch, spark, Layout(), get_workload("decode-heavy"), 1).output_tok_s
    assert 0.85 * bound < tok_s <= bound


def test_a_model_that_does_not_fit_is_reported_so() -> None:
    tight = EngineSettings(gpu_memory_utilization=0.5)
    result = predict("gpt-oss-120b", "dgx-spark", Layout(), EQUAL, 8, settings=tight)
    assert not result.fits and result.tpot_ms is None and result.max_concurrency == 0
    assert predict("gpt-oss-120b", "dgx-spark-pair", Layout(tp=2), EQUAL, 8, settings=tight).fits


def test_kv_capacity_caps_running_sequences_and_queueing_shows_in_ttft() -> None:
    settings = EngineSettings(gpu_memory_utilization=0.6)
    fits = predict("llama-3.1-8b", "dgx-spark", Layout(), EQUAL, 1, settings=settings).max_concurrency
    assert 0 < fits < 1024
    at_cap = predict("llama-3.1-8b", "dgx-spark", Layout(), EQUAL, fits, settings=settings)
    over = predict("llama-3.1-8b", "dgx-spark", Layout(), EQUAL, 2 * fits, settings=settings)
    assert over.running == fits
    assert over.output_tok_s == pytest.approx(at_cap.output_tok_s)
    assert over.ttft_ms > at_cap.ttft_ms + 1000


def _crossover(hardware: HardwareProfile, workload: str, levels=(1, 8, 32, 64, 128, 256)) -> int | None:
    """The concurrency from which PP=2 out-produces TP=2 at every higher level (TP must win at 1)."""
    rows = compare_layouts(resolve_model("gpt-oss-120b"), hardware, get_workload(workload), levels)
    assert rows[0][1] < 1, "TP=2 should win single-stream decode"
    crossover = None
    for c, pp_over_tp, _ in rows:
        crossover = (crossover or c) if pp_over_tp > 1 else None
    return crossover


def _without_build(name: str) -> HardwareProfile:
    """The profile priced by bytes, FLOPs and the link alone (no engine build's kernel and host terms)."""
    return load_hardware(name).model_copy(update={"default_build": None})


def test_tp_pp_crossover_comes_from_the_link_bandwidth() -> None:
    """Link physics alone (no build terms): on the healthy Spark pair (22 GB/s) TP=2 out-produces
    PP=2 at every concurrency for every workload; at the 3 GB/s of a misconfigured pair
    prefill-heavy traffic flips to PP=2, and the slower the link the earlier."""
    pair = _without_build("dgx-spark-pair")
    for workload in WORKLOADS:
        assert _crossover(pair, workload) is None, workload
        assert _crossover(_without_build("h100-sxm-node"), workload) is None, workload
    flips = []
    for gbs in (6.0, 3.0, 1.5):
        slow = with_link(pair, 2, scaled_link(pair.inter_node_link, bandwidth=gbs / 22))
        flips.append(_crossover(slow, "prefill-heavy"))
    assert flips[1] is not None and flips[2] is not None
    assert flips[0] is None or flips[0] >= flips[1]
    assert flips[1] >= flips[2]


def test_co_resident_busy_replica_slows_steps() -> None:
    alone = predict("gpt-oss-120b", "dgx-spark-pair", Layout(tp=2), EQUAL, 8)
    shared = predict(
        "gpt-oss-120b", "dgx-spark-pair", Layout(tp=2), EQUAL, 8, settings=EngineSettings(other_replica_busy=1.0)
    )
    assert shared.tpot_ms == pytest.approx(load_coresidence().interactive_next_to_decode.value * alone.tpot_ms)


def _constants(skew: float) -> ModelConstants:
    base = ModelConstants()
    return base.model_copy(
        update={"expert_popularity_skew": base.expert_popularity_skew.model_copy(update={"value": skew})}
    )


@pytest.mark.parametrize("skew", [0.0, ModelConstants().expert_popularity_skew.value])
def test_moe_expert_reads_grow_with_batch_until_every_expert_is_touched(skew: float) -> None:
    steps = StepModel(
        resolve_model("gpt-oss-120b"), load_hardware("dgx-spark"), load_engine("vllm"), constants=_constants(skew)
    )
    touched = [steps.distinct_experts(t) for t in (1, 2, 8, 64, 1024, 100_000)]
    assert touched[0] == pytest.approx(4) and touched == sorted(touched) and touched[-1] == pytest.approx(128, rel=1e-6)


def test_skewed_popularity_touches_fewer_experts_and_zero_skew_is_uniform_routing() -> None:
    arch, spark, engine = resolve_model("qwen3-coder-30b-a3b"), load_hardware("dgx-spark"), load_engine("vllm")
    uniform = StepModel(arch, spark, engine, constants=_constants(0.0))
    skewed = StepModel(arch, spark, engine, constants=_constants(1.0))
    e, k = arch.num_experts, arch.experts_per_token
    for tokens in (2, 32, 256):
        assert uniform.distinct_experts(tokens) == pytest.approx(e * (1 - (1 - k / e) ** tokens))
        assert skewed.distinct_experts(tokens) < uniform.distinct_experts(tokens)


def test_multi_token_launch_overhead_applies_to_batched_steps_only() -> None:
    arch, spark = resolve_model("gpt-oss-20b"), load_hardware("dgx-spark")
    llama = load_engine("llama.cpp")
    graphed = llama.model_copy(
        update={"multi_token_layer_overhead_us": llama.multi_token_layer_overhead_us.model_copy(update={"value": 0})}
    )
    eager, plain = StepModel(arch, spark, llama), StepModel(arch, spark, graphed)
    one, two = StepBatch(decode_tokens=1, decode_context=512), StepBatch(decode_tokens=2, decode_context=512)
    assert eager.cycle_seconds([one]) == plain.cycle_seconds([one])
    added = eager.cycle_seconds([two]) - plain.cycle_seconds([two])
    assert added == pytest.approx(arch.num_layers * llama.multi_token_layer_overhead_us.value * 1e-6)


def test_predict_is_fast_enough_for_the_tuner() -> None:
    import time

    start = time.perf_counter()
    for c in range(1, 101):
        predict("gpt-oss-120b", "dgx-spark-pair", Layout(pp=2), EQUAL, c)
    assert (time.perf_counter() - start) / 100 < 0.005


def test_cli_json_prints_one_object_per_layout_and_concurrency() -> None:
    from typer.testing import CliRunner

    from tuner.cli import app

    result = CliRunner().invoke(app, ["predict", "--model", "gpt-oss-120b", "--concurrency", "1,32", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["layout"], r["concurrency"]) for r in rows] == [
        (layout, c) for layout in ("tp1-pp1", "tp2-pp1", "tp1-pp2", "tp2-pp1-ep") for c in (1, 32)
    ]
    assert set(rows[0]) == {"layout", "tp", "pp", "ep", "concurrency", "ttft_ms", "tpot_ms", "output_tok_s", "fits"}
    unknown = CliRunner().invoke(app, ["predict", "--model", "nope"])
    assert unknown.exit_code == 2 and "gpt-oss-120b" in unknown.output
