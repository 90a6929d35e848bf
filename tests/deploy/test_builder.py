"""The Serve application a plan becomes (deploy.builder): engines that share a GPU start in turn
unless each has its KV budget, and each engine's actor takes the resources its executor needs."""

from __future__ import annotations

from deploy.builder import build_app, starts_in_turn
from deploy.placement import actor_resources
from deploy.plan import ServingPlan, load_plan, shipped_plan


def _without_kv_budgets(plan: ServingPlan) -> ServingPlan:
    plan = plan.model_copy(deep=True)
    for replica in plan.replicas:
        replica.engine.kv_cache_memory_bytes = None
    return plan


def _start_after(plan: ServingPlan) -> dict[str, object]:
    """Each engine's `start_after` argument, by deployment name (None or the engine it waits for)."""
    gateway = build_app(plan, "demo", "/tmp/tandem-logs")._bound_deployment
    engines = gateway.init_args[1]
    waits = {}
    for name, app in engines.items():
        after = app._bound_deployment.init_args[5]
        waits[name] = None if after is None else after._bound_deployment.name
    return waits


def test_engines_on_one_gpu_start_in_turn_unless_each_has_its_kv_budget() -> None:
    budgeted = load_plan(shipped_plan("one-gpu"))
    assert not starts_in_turn(budgeted)
    assert _start_after(budgeted) == {"interactive": None, "batch": None}
    profiling = _without_kv_budgets(budgeted)
    assert starts_in_turn(profiling)
    assert _start_after(profiling) == {"interactive": None, "batch": "engine-interactive"}


def test_cpu_engines_start_together() -> None:
    assert not starts_in_turn(_without_kv_budgets(load_plan(shipped_plan("cpu-demo"))))


def test_an_engine_actor_leaves_the_gpu_to_its_ray_workers_or_takes_its_share() -> None:
    spark = load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair"))
    assert [actor_resources(r, spark.cluster.accelerator) for r in spark.replicas] == [
        {"num_cpus": 2, "num_gpus": 0.0}
    ] * 2
    one_gpu = load_plan(shipped_plan("one-gpu"))
    assert [actor_resources(r, one_gpu.cluster.accelerator)["num_gpus"] for r in one_gpu.replicas] == [0.5, 0.5]
