"""The shipped Spark-pair plans fit their boxes: per box, each replica's memory share holds its
slice of its model's weights, a runtime reserve and the KV cache of its longest sequences, the
shares of every engine on a box (of every model) leave room for the OS, and each replica carries
the KV budget that the fit check gives it (so two engines on one GPU never size their caches by
profiling). Weights come from the performance model's sourced architectures (tuner.plan_fit); a
plan of two models is checked the same way, and one too large for its boxes is refused with how
many GB each box is over."""

from __future__ import annotations

import pytest

from deploy.builder import starts_in_turn
from deploy.plan import SHIPPED_PLANS_DIR, load_plan, shipped_plan
from tuner.perfmodel import resolve_model
from tuner.plan_fit import box_memory_gb, fit_problems, group_architecture, plan_memory, with_kv_budgets

SPARK_PLANS = sorted(SHIPPED_PLANS_DIR.glob("*.dgx-spark*.yaml"))
TWO_MODELS = shipped_plan("two-models.dgx-spark-pair")


@pytest.mark.parametrize("path", SPARK_PLANS, ids=lambda p: p.name.removesuffix(".yaml"))
def test_every_replica_fits_each_box_with_its_kv_budget(path) -> None:
    plan = load_plan(path)
    for group in plan.models:
        assert resolve_model(group.aliases[0]).hub_id == group.source  # the alias names the model served
    assert fit_problems(plan) == []
    for replica, memory in zip(plan.replicas, plan_memory(plan), strict=True):
        assert replica.engine.kv_cache_memory_bytes == memory.kv_cache_bytes, replica.name
    assert not starts_in_turn(plan), "every engine has its KV budget, so all start at once"


def test_the_fit_check_names_what_does_not_fit() -> None:
    plan = load_plan(SPARK_PLANS[0])
    greedy = plan.model_copy(deep=True)
    greedy.replicas[0].engine.kv_cache_memory_bytes = 10**12
    greedy.replicas[1].engine.gpu_memory_utilization = 0.1
    problems = fit_problems(greedy)
    assert any("kv_cache_memory_bytes 1000.0 GB is more than its share leaves" in p for p in problems), problems
    assert any(p.startswith(f"{plan.replicas[1].name}: ") and "of KV cache, under 4 sequences" in p for p in problems)


def test_kv_budgets_follow_the_shares() -> None:
    plan = load_plan(SPARK_PLANS[0])
    bigger = plan.model_copy(deep=True)
    bigger.replicas[1].engine.gpu_memory_utilization += 0.05
    before, after = (with_kv_budgets(p).replicas[1].engine.kv_cache_memory_bytes for p in (plan, bigger))
    assert before is not None and after is not None
    assert after - before == pytest.approx(0.05 * plan.cluster.memory_per_node_gb * 1e9, rel=1e-3)


def test_every_shipped_model_has_a_spark_plan() -> None:
    one_model = [load_plan(p) for p in SPARK_PLANS if "spark-pair" in p.name]
    aliases = {plan.models[0].aliases[0] for plan in one_model if len(plan.models) == 1}
    assert aliases == {"llama-3.1-8b", "gpt-oss-20b", "gpt-oss-120b", "mistral-small-3.1-24b", "qwen3-coder-30b-a3b"}


def test_the_two_model_plan_sums_every_engine_of_both_models_on_each_box() -> None:
    """Each box holds one worker of each of the three replicas (all spread over both boxes): their
    shares add up per box, each replica's KV budget comes from its own model's weights."""
    plan = load_plan(TWO_MODELS)
    assert [g.name for g in plan.models] == ["gpt-oss-20b", "llama-3.1-8b-instruct"]
    shares = sum(r.engine.gpu_memory_utilization for r in plan.replicas)
    assert box_memory_gb(plan) == pytest.approx({0: shares * 119.7, 1: shares * 119.7})
    weights = {m.name: m.weights_gb for m in plan_memory(plan)}
    gpt, llama = (group_architecture(g) for g in plan.models)
    assert weights["chat"] == pytest.approx(gpt.weights_per_device_gb(2, 1))
    assert weights["llama"] == pytest.approx(llama.weights_per_device_gb(2, 1))
    assert weights["chat"] != pytest.approx(weights["llama"])
    assert with_kv_budgets(plan) == plan  # the shipped budgets are the fit check's


def test_a_two_model_plan_too_large_for_its_boxes_is_refused_by_how_much() -> None:
    plan = load_plan(TWO_MODELS)
    larger = plan.model_copy(deep=True)
    llama = next(r for r in larger.replicas if r.name == "llama")
    llama.engine.gpu_memory_utilization += 0.1  # past the 10% the OS keeps of each 119.7 GB box
    over = (sum(r.engine.gpu_memory_utilization for r in larger.replicas) - 0.9) * 119.7
    problems = fit_problems(with_kv_budgets(larger))
    for node in (0, 1):
        expected = f"node {node}: the engines' shares take {over + 107.73:.1f} GB, {over:.1f} GB over the 107.7 GB"
        assert any(p.startswith(expected) for p in problems), problems
