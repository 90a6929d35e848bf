"""The shipped Spark-pair plans fit their boxes: per box, each replica's memory share holds its
slice of the weights, a runtime reserve and the KV cache of its longest sequences, the two shares
leave room for the OS, and each replica carries the KV budget that the fit check gives it (so two
engines on one GPU never size their caches by profiling). Weights come from the performance
model's sourced architectures (tuner.plan_fit)."""

from __future__ import annotations

import pytest

from deploy.builder import starts_in_turn
from deploy.plan import SHIPPED_PLANS_DIR, load_plan
from tuner.perfmodel import resolve_model
from tuner.plan_fit import fit_problems, plan_memory, with_kv_budgets

SPARK_PLANS = sorted(SHIPPED_PLANS_DIR.glob("*.dgx-spark*.yaml"))


@pytest.mark.parametrize("path", SPARK_PLANS, ids=lambda p: p.name.removesuffix(".yaml"))
def test_both_replicas_fit_each_box_with_their_kv_budgets(path) -> None:
    plan = load_plan(path)
    arch = resolve_model(plan.model.aliases[0])
    assert arch.hub_id == plan.model.source
    assert fit_problems(plan, arch) == []
    for replica, memory in zip(plan.replicas, plan_memory(plan, arch), strict=True):
        assert replica.engine.kv_cache_memory_bytes == memory.kv_cache_bytes, replica.name
    assert not starts_in_turn(plan), "every engine has its KV budget, so both start at once"


def test_the_fit_check_names_what_does_not_fit() -> None:
    plan = load_plan(SPARK_PLANS[0])
    arch = resolve_model(plan.model.aliases[0])
    greedy = plan.model_copy(deep=True)
    greedy.replicas[0].engine.kv_cache_memory_bytes = 10**12
    greedy.replicas[1].engine.gpu_memory_utilization = 0.1
    problems = fit_problems(greedy, arch)
    assert any("kv_cache_memory_bytes 1000.0 GB is more than its share leaves" in p for p in problems), problems
    assert any(p.startswith(f"{plan.replicas[1].name}: ") and "of KV cache, under 4 sequences" in p for p in problems)


def test_kv_budgets_follow_the_shares() -> None:
    plan = load_plan(SPARK_PLANS[0])
    arch = resolve_model(plan.model.aliases[0])
    bigger = plan.model_copy(deep=True)
    bigger.replicas[1].engine.gpu_memory_utilization += 0.05
    before, after = (with_kv_budgets(p, arch).replicas[1].engine.kv_cache_memory_bytes for p in (plan, bigger))
    assert before is not None and after is not None
    assert after - before == pytest.approx(0.05 * plan.cluster.memory_per_node_gb * 1e9, rel=1e-3)


def test_every_shipped_model_has_a_spark_plan() -> None:
    aliases = {load_plan(p).model.aliases[0] for p in SPARK_PLANS if "spark-pair" in p.name}
    assert aliases == {"llama-3.1-8b", "gpt-oss-20b", "gpt-oss-120b", "mistral-small-3.1-24b", "qwen3-coder-30b-a3b"}
