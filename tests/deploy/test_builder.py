"""The Serve application a plan becomes (deploy.builder): engines that share a GPU start in turn
unless each has its KV budget, each engine's actor takes the resources its executor needs, and a
plan of two models gives the gateway two served models, each engine loading its own model."""

from __future__ import annotations

from deploy.builder import SHARED_DEVICES, build_app, device_group, gateway_config, starts_in_turn
from deploy.placement import actor_resources
from deploy.plan import ServingPlan, load_plan, shipped_plan


def _without_kv_budgets(plan: ServingPlan) -> ServingPlan:
    plan = plan.model_copy(deep=True)
    for replica in plan.replicas:
        replica.engine.kv_cache_memory_bytes = None
    return plan


def _start_after(plan: ServingPlan) -> dict[str, object]:
    """Each engine's `start_after` argument, by deployment name (None or the engine it waits for)."""
    gateway = build_app(plan, {g.name: "demo" for g in plan.models}, "/tmp/tandem-logs")._bound_deployment
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


def test_a_plan_of_two_models_gives_the_gateway_two_served_models() -> None:
    plan = load_plan(shipped_plan("cpu-two-models"))
    config = gateway_config(plan, {"demo": "http://127.0.0.1:9001/v1", "small": "http://127.0.0.1:9002/v1"})
    assert [(m.name, m.aliases) for m in config.models] == [
        ("tandem-demo", ["demo"]),
        ("tandem-demo-small", ["demo-small"]),
    ]
    demo, small = config.models
    assert [(r.name, r.model, r.base_url) for r in demo.replicas] == [
        ("demo", "tandem-demo", "http://127.0.0.1:9001/v1")
    ]
    assert [(r.name, r.model, r.base_url) for r in small.replicas] == [
        ("small", "tandem-demo-small", "http://127.0.0.1:9002/v1")
    ]
    assert config.model_named("demo-small") is small and config.model_named("nope") is None
    # One worker per engine on a two-slot CPU: the engines share no device.
    assert {r.device_group for r in config.replicas} == {None}


def test_each_engine_loads_its_own_model_under_its_models_name() -> None:
    plan = load_plan(shipped_plan("cpu-two-models"))
    gateway = build_app(plan, {"tandem-demo": "/models/big", "tandem-demo-small": "/models/small"}, "/tmp/logs")
    engines = gateway._bound_deployment.init_args[1]
    loaded = {name: app._bound_deployment.init_args[:2] for name, app in engines.items()}
    assert loaded == {"demo": ("/models/big", "tandem-demo"), "small": ("/models/small", "tandem-demo-small")}


def test_the_spark_plan_of_two_models_shares_the_gpus_across_models_with_each_models_limits() -> None:
    plan = load_plan(shipped_plan("two-models.dgx-spark-pair"))
    config = gateway_config(plan)
    assert device_group(plan) == SHARED_DEVICES
    assert {r.name: (r.model, r.device_group) for r in config.replicas} == {
        "chat": ("gpt-oss-20b", SHARED_DEVICES),
        "batch": ("gpt-oss-20b", SHARED_DEVICES),
        "llama": ("llama-3.1-8b-instruct", SHARED_DEVICES),
    }
    gpt, llama = config.models
    assert gpt.aliases == [] and llama.aliases == ["llama-3.1-8b"]  # a plan's alias equal to the name is dropped
    assert gpt.limits == {} and llama.limits["interactive"].max_concurrency == 40
    assert llama.routing(config.settings.routing).limits["interactive"].max_concurrency == 40
    assert not starts_in_turn(plan)
