"""Engine-mode terms: CUDA graphs vs eager, and the per-step control cost of layouts spanning nodes."""

from __future__ import annotations

import pytest

from tuner.perfmodel import EngineSettings, Layout, load_engine, load_hardware, predict, resolve_model
from tuner.perfmodel.hardware import with_link
from tuner.perfmodel.sourced import Figure
from tuner.perfmodel.step import StepBatch, StepModel
from tuner.workloads import get_workload


def test_eager_reproduces_the_public_enforce_eager_drop() -> None:
    """gpt-oss-120b single stream on one Spark: 59 tok/s with graphs, about 26 eager (conselara.dev)."""
    arch, spark, engine = resolve_model("gpt-oss-120b"), load_hardware("dgx-spark"), load_engine("vllm")
    arch = arch.with_weights(attention="fp8", lm_head="fp8")  # as calibration.yaml's vLLM point
    batch = [StepBatch(decode_tokens=1, decode_context=1024)]
    graphed = 1 / StepModel(arch, spark, engine).cycle_seconds(batch)
    eager = 1 / StepModel(arch, spark, engine, enforce_eager=True).cycle_seconds(batch)
    assert graphed == pytest.approx(59, rel=0.10)
    assert eager == pytest.approx(26, rel=0.10)


def test_eager_is_never_faster_and_reaches_predict_through_settings() -> None:
    shape = get_workload("chat")
    for layout in (Layout(), Layout(tp=2), Layout(pp=2)):
        graphed = predict("llama-3.1-8b", "dgx-spark-pair", layout, shape, 8)
        eager = predict("llama-3.1-8b", "dgx-spark-pair", layout, shape, 8, settings=EngineSettings(enforce_eager=True))
        assert eager.tpot_ms > graphed.tpot_ms


def test_control_round_trip_is_charged_once_per_step_only_across_nodes() -> None:
    arch, engine = resolve_model("llama-3.1-8b"), load_engine("vllm")
    pair = load_hardware("dgx-spark-pair")
    control = Figure(value=400, kind="measured", source="test")
    measured = with_link(pair, 2, pair.inter_node_link.model_copy(update={"control_roundtrip_us": control}))
    batch = [StepBatch(decode_tokens=4, decode_context=512)]
    for tp, pp in ((2, 1), (1, 2)):
        base = StepModel(arch, pair, engine, tp, pp).cycle_seconds(batch)
        charged = StepModel(arch, measured, engine, tp, pp).cycle_seconds(batch)
        assert charged - base == pytest.approx(400e-6, rel=1e-6)
    node = load_hardware("h100-sxm-node")  # TP=2 inside one node: no Ray hop per step
    inside = with_link(node, 2, node.intra_node_link.model_copy(update={"control_roundtrip_us": control}))
    assert StepModel(arch, inside, engine, 2, 1).cycle_seconds(batch) == StepModel(
        arch, node, engine, 2, 1
    ).cycle_seconds(batch)
