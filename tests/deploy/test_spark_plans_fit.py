"""The shipped Spark-pair plans fit their boxes: per box, each replica's memory share holds its
slice of the weights, a runtime reserve and the KV cache of its longest sequences, and the two
shares leave room for the OS. Weights come from the performance model's sourced architectures."""

from __future__ import annotations

import pytest

from deploy.plan import SHIPPED_PLANS_DIR, load_plan
from tuner.perfmodel import resolve_model

RUNTIME_RESERVE_GB = 4.0  # activations, CUDA graphs, NCCL buffers per engine: vLLM's profile run
OS_HEADROOM = 0.10  # of each box's memory: the OS and the other processes on unified memory
SPARK_PLANS = sorted(SHIPPED_PLANS_DIR.glob("*.dgx-spark-pair.yaml"))


@pytest.mark.parametrize("path", SPARK_PLANS, ids=lambda p: p.name.split(".dgx")[0])
def test_both_replicas_fit_each_box(path) -> None:
    plan = load_plan(path)
    arch = resolve_model(plan.model.aliases[0])
    assert arch.hub_id == plan.model.source
    box_gb = plan.cluster.memory_per_node_gb
    shares = 0.0
    for replica in plan.replicas:
        tp, pp = replica.tensor_parallel_size, replica.pipeline_parallel_size
        share_gb = replica.engine.gpu_memory_utilization * box_gb
        weights_gb = arch.weights_per_device_gb(tp, pp)
        layers_per_stage = range(arch.num_layers // pp)
        longest_gb = arch.kv_bytes_for_sequence(replica.engine.max_model_len, layers_per_stage, tp) / 1e9
        kv_gb = share_gb - weights_gb - RUNTIME_RESERVE_GB
        assert kv_gb >= 4 * longest_gb, (
            f"{replica.name}: {share_gb:.1f} GB share - {weights_gb:.1f} GB weights - {RUNTIME_RESERVE_GB} GB "
            f"reserve leaves {kv_gb:.1f} GB of KV, under four {replica.engine.max_model_len}-token sequences"
        )
        shares += replica.engine.gpu_memory_utilization
    assert shares <= 1 - OS_HEADROOM, f"shares add up to {shares:.2f}: no room left for the OS"


def test_every_shipped_model_has_a_spark_plan() -> None:
    aliases = {load_plan(p).model.aliases[0] for p in SPARK_PLANS}
    assert aliases == {"llama-3.1-8b", "gpt-oss-20b", "gpt-oss-120b", "mistral-small-3.1-24b", "qwen3-coder-30b-a3b"}
