"""ServingPlan validation: every bad plan gets an error that names the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from pydantic import Field

from deploy.placement import bundles, executor
from deploy.plan import SHIPPED_PLANS_DIR, PlanError, ServingPlan, dump_plan, load_plan, parse_plan, shipped_plan
from deploy.plan_version import PLAN_VERSION
from gateway.contract.config import RoutingSettings, nest_flat_routing
from gateway.engines import ENGINES, EngineArguments
from gateway.engines.vllm import EngineArgs


def demo_data() -> dict:
    return yaml.safe_load(shipped_plan("cpu-demo").read_text())


def spark_data() -> dict:
    return yaml.safe_load(shipped_plan("llama-3.1-8b.dgx-spark-pair").read_text())


def test_shipped_plans_all_validate() -> None:
    """Each model of a shipped plan has a replica per class, or one replica that takes both."""
    paths = sorted(SHIPPED_PLANS_DIR.glob("*.yaml"))
    assert len(paths) == 10
    for path in paths:
        plan = load_plan(path)
        for group in plan.models:
            classes = sorted(r.traffic_class for r in group.replicas)
            assert classes in (["batch", "interactive"], ["interactive"]), path
    assert [len(load_plan(p).models) for p in paths].count(2) == 2  # cpu-two-models, two-models.dgx-spark-pair


def test_spark_plans_run_tp2_interactive_and_pp2_batch_spread_over_both_boxes() -> None:
    """Every replica of a Spark-pair plan holds a bundle on each box, the GPU shared between the
    plan's replicas (half a GPU per worker for two replicas, a quarter for the two-model plan's three)."""
    for path in SHIPPED_PLANS_DIR.glob("*.dgx-spark-pair.yaml"):
        plan = load_plan(path)
        first = plan.models[0]
        interactive = next(r for r in first.replicas if r.traffic_class == "interactive")
        batch = next(r for r in first.replicas if r.traffic_class == "batch")
        assert (interactive.tensor_parallel_size, interactive.pipeline_parallel_size) == (2, 1)
        assert (batch.tensor_parallel_size, batch.pipeline_parallel_size) == (1, 2)
        share = 0.5 if len(plan.replicas) == 2 else 0.25
        for replica in plan.replicas:
            assert replica.placement.strategy == "STRICT_SPREAD"
            assert bundles(replica, plan.cluster.accelerator) == [{"CPU": 2, "GPU": share}] * 2


def test_cpu_demo_plan_uses_real_tp2_and_pp2_without_eager_mode() -> None:
    plan = load_plan(shipped_plan("cpu-demo"))
    assert [r.layout for r in plan.replicas] == ["tp2-pp1", "tp1-pp2"]
    assert not any(r.engine.enforce_eager for r in plan.replicas)
    assert bundles(plan.replica_for("batch"), None) == [{"CPU": 0.5}, {"CPU": 0.5}]


def expect_error(data: dict, *fragments: str) -> str:
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_layout_larger_than_the_cluster_is_refused() -> None:
    data = spark_data()
    data["replicas"][0]["tensor_parallel_size"] = 4
    expect_error(data, "replica 'interactive'", "= 4 is larger than the cluster's 2 devices")


def test_strict_spread_needs_a_node_per_worker() -> None:
    data = demo_data()
    data["replicas"][0]["placement"]["strategy"] = "STRICT_SPREAD"
    expect_error(data, "STRICT_SPREAD needs one node per worker (2)", "has 1")


def test_memory_shares_past_one_are_refused() -> None:
    data = spark_data()
    data["replicas"][0]["engine"]["gpu_memory_utilization"] = 0.6
    data["replicas"][1]["engine"]["gpu_memory_utilization"] = 0.5
    expect_error(data, "gpu_memory_utilization add up to 1.10")


def test_whole_gpu_bundles_cannot_be_co_resident() -> None:
    data = spark_data()
    for replica in data["replicas"]:
        replica["placement"]["gpus_per_worker"] = 1
    expect_error(data, "ask for 4 GPUs in all but the cluster has 2")


def test_unknown_engine_argument_is_named_with_a_suggestion() -> None:
    data = demo_data()
    data["replicas"][1]["engine"]["max_num_seq"] = 8
    expect_error(data, "replicas.1.engine", "'max_num_seq' (did you mean 'max_num_seqs'?)")


def test_extra_engine_arguments_are_checked_against_vllm() -> None:
    data = demo_data()
    data["replicas"][0]["engine"]["extra"] = {"swap_space_gb_typo": 4}
    expect_error(data, "vLLM does not know: swap_space_gb_typo")
    data["replicas"][0]["engine"]["extra"] = {"kv_cache_dtype": "auto"}
    assert parse_plan(data).replicas[0].engine.engine_kwargs()["kv_cache_dtype"] == "auto"


def test_the_batch_step_budget_follows_vllms_rules() -> None:
    """The bounded step (docs/routing.md): a budget below max_num_seqs, or a per-request prefill
    threshold above the budget, is refused before an engine starts; a valid one reaches vLLM."""
    data = spark_data()
    batch = data["replicas"][1]["engine"]
    batch["max_num_batched_tokens"] = batch["max_num_seqs"] - 1
    expect_error(data, "replicas.1.engine", "below max_num_seqs")
    batch["max_num_batched_tokens"], batch["long_prefill_token_threshold"] = 2048, 4096
    expect_error(data, "long_prefill_token_threshold (4096) is above max_num_batched_tokens (2048)")
    batch["long_prefill_token_threshold"] = 512
    kwargs = parse_plan(data).replicas[1].engine.engine_kwargs()
    assert (kwargs["max_num_batched_tokens"], kwargs["long_prefill_token_threshold"]) == (2048, 512)


def test_missing_local_model_path_is_refused() -> None:
    data = demo_data()
    data["model"]["source"] = "/nonexistent/model-dir"
    expect_error(data, "model.source", "'/nonexistent/model-dir' is not a directory")


def test_eager_pipeline_parallel_on_cpu_is_refused_with_the_reason() -> None:
    data = demo_data()
    data["replicas"][1]["engine"]["enforce_eager"] = True
    expect_error(data, "pipeline parallelism with enforce_eager fails on vLLM's CPU backend")


def test_a_plan_that_names_a_data_path_runs_on_the_one_that_remains() -> None:
    for path in ("http", "handle"):
        data = spark_data() | {"version": 1, "data_path": path}  # a plan of the format before one data path
        assert parse_plan(data) == parse_plan(spark_data())


def test_a_version_3_plan_with_flat_routing_reads_as_the_nested_one(caplog: pytest.LogCaptureFixture) -> None:
    """Plan format 4 writes gateway.routing by concern; a version-3 plan's flat settings move into
    their groups with a note naming each move, and the plan is the one written nested."""
    data = spark_data() | {"version": 3}
    data["gateway"]["routing"] = {
        "gpu_arbitration": "freeze",
        "freeze_max_s": 60,
        "batch_yield_fraction": 0.25,
        "batch_yield_settle_s": 5,
        "batch_yield_max_hold_s": 3600,
    }
    with caplog.at_level("WARNING", logger="tandem.deploy.plan"):
        plan = parse_plan(data, origin="v3.yaml")
    assert "version 3 -> 4" in caplog.text and "gpu_arbitration -> arbitration.mode" in caplog.text
    assert plan == parse_plan(spark_data())
    assert plan.gateway.routing.arbitration.max_s == 60 and plan.gateway.routing.yielding.fraction == 0.25


def test_a_replica_runs_vllm_unless_it_names_its_engine(caplog: pytest.LogCaptureFixture) -> None:
    """Plan format 3 names each replica's engine; a version-2 plan (no `engine_kind`) runs vLLM,
    with a note, and an engine with no adapter is refused naming the known ones."""
    with caplog.at_level("WARNING", logger="tandem.deploy.plan"):
        plan = parse_plan(spark_data() | {"version": 2}, origin="v2.yaml")
    assert "version 2 -> 3" in caplog.text
    assert plan == parse_plan(spark_data())
    assert all(r.engine_kind == "vllm" and r.adapter.name == "vllm" for r in plan.replicas)
    data = spark_data()
    data["replicas"][0]["engine_kind"] = "sglang"
    expect_error(data, "replicas.0.engine_kind", "no engine adapter named 'sglang'; known: vllm")


class TinyArgs(EngineArguments):
    """A second engine's argument model: the common knobs and one field of its own."""

    engine_label: ClassVar[str] = "tiny"

    warmup_steps: int = Field(0, ge=0)

    @classmethod
    def known_argument_names(cls) -> frozenset[str] | None:
        return frozenset({"tiny_flag"})


class TinyEngine:
    """Just what a plan asks of an adapter: its name, argument model and priority rule."""

    name = "tiny"
    args_model = TinyArgs

    def accepts_request_priority(self, scheduling_policy: str) -> bool:
        return True

    def layout_problem(self, pipeline_parallel_size: int, args: EngineArguments, on_cpu: bool) -> str | None:
        return "tiny runs on GPUs only" if on_cpu else None


def test_a_replica_s_engine_arguments_are_read_with_the_model_of_the_engine_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Adding an engine touches no plan code: a replica naming it is read with that adapter's own
    argument model (its fields, checks and messages), and vLLM's own fields are refused there."""
    monkeypatch.setitem(ENGINES, "tiny", TinyEngine())
    data = spark_data()
    replica = data["replicas"][1]
    replica["engine_kind"] = "tiny"
    replica["engine"] = {"max_num_seqs": 16, "warmup_steps": 3, "extra": {"tiny_flag": 1}}
    plan = parse_plan(data)
    interactive, tiny = plan.replicas
    assert isinstance(interactive.engine, EngineArgs) and type(tiny.engine) is TinyArgs
    assert tiny.engine.engine_kwargs() == {
        **tiny.engine.model_dump(exclude={"extra"}, exclude_none=True),
        "tiny_flag": 1,
    }
    assert tiny.engine.engine_kwargs()["warmup_steps"] == 3
    assert tiny.accepts_request_priority
    assert "warmup_steps: 3" in yaml.safe_dump(plan.model_dump(mode="json"))  # a dump keeps the engine's fields
    replica["engine"] = {"dtype": "bfloat16"}
    expect_error(data, "replicas.1.engine", "unknown engine argument(s) 'dtype'; other tiny arguments go under 'extra'")
    replica["engine"] = {"warmup_steps": 1}
    replica["engine_kind"] = "vllm"
    expect_error(data, "replicas.1.engine", "'warmup_steps'", "other vLLM arguments go under 'extra'")
    replica["engine"], replica["engine_kind"] = {"extra": {"swap_space": 4}}, "tiny"
    expect_error(data, "engine.extra has argument(s) tiny does not know: swap_space")
    on_cpu = demo_data()
    on_cpu["replicas"][0].update(engine_kind="tiny", engine={"max_num_seqs": 16})
    expect_error(on_cpu, "replica 'interactive': tiny runs on GPUs only")  # the layout rule is the adapter's


def test_a_priority_scheduler_is_asked_of_the_replicas_engine() -> None:
    data = spark_data()
    data["replicas"][0]["engine"]["scheduling_policy"] = "priority"
    data["replicas"][1]["engine"]["scheduling_policy"] = "fcfs"
    interactive, batch = parse_plan(data).replicas
    assert interactive.accepts_request_priority and not batch.accepts_request_priority


def test_gpu_workers_of_a_layout_use_vllms_ray_executor_and_cpu_workers_stay_in_the_replica() -> None:
    spark = parse_plan(spark_data())
    assert {executor(r, spark.cluster.accelerator) for r in spark.replicas} == {"ray"}
    one_gpu = load_plan(shipped_plan("one-gpu"))
    assert {executor(r, one_gpu.cluster.accelerator) for r in one_gpu.replicas} == {"uni"}
    cpu = load_plan(shipped_plan("cpu-demo"))
    assert {executor(r, cpu.cluster.accelerator) for r in cpu.replicas} == {"mp"}


def test_duplicate_replica_names_and_bad_hysteresis() -> None:
    data = demo_data()
    data["replicas"][1]["name"] = "interactive"
    expect_error(data, "replica names must be unique")
    data = demo_data()
    data["gateway"]["routing"] = {"spill_queue_threshold": 2, "spill_release_threshold": 2}
    expect_error(data, "gateway.routing.spill", "must be below queue_threshold")


def test_yaml_round_trip_keeps_the_plan(tmp_path: Path) -> None:
    plan = load_plan(shipped_plan("gpt-oss-120b.dgx-spark-pair"))
    path = dump_plan(plan, tmp_path / "plan.yaml", header="written by a test")
    assert path.read_text().startswith("# written by a test\n")
    assert load_plan(path) == plan


def test_relative_model_path_resolves_against_the_plan_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    data = demo_data()
    data["model"]["source"] = "./models/tiny"
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(data))
    assert load_plan(tmp_path / "plan.yaml").models[0].source == str(tmp_path / "models" / "tiny")


def test_unreadable_plans_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no plan at"):
        load_plan(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(PlanError, match="not valid YAML"):
        load_plan(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(PlanError, match="must hold a mapping"):
        load_plan(tmp_path / "list.yaml")


def test_plan_model_is_a_pydantic_contract() -> None:
    assert ServingPlan.model_json_schema()["required"] == ["models"]


def test_a_plan_without_routing_gets_thresholds_derived_from_its_replicas() -> None:
    plan = load_plan(shipped_plan("cpu-demo"))  # interactive max_num_seqs 16, batch 64
    routing = plan.gateway.routing
    assert (routing.spill.queue_threshold, routing.spill.release_threshold, routing.spill.target_headroom) == (4, 1, 8)
    assert routing.limits["interactive"].max_concurrency == 16 + 8
    assert routing.limits["batch"].max_concurrency == 64 + 16


def test_routing_a_plan_sets_is_kept_as_written_and_the_rest_still_follows_its_replicas() -> None:
    data = demo_data()
    data["gateway"]["routing"] = {"spill_queue_threshold": 9, "spill_release_threshold": 3}
    routing = parse_plan(data).gateway.routing
    assert (routing.spill.queue_threshold, routing.spill.release_threshold) == (9, 3)
    assert routing.spill.target_headroom == 64 // 8  # not named: derived from the batch replica
    assert routing.limits["interactive"].max_concurrency == 16 + 8


def test_a_plan_naming_only_its_arbitration_keeps_the_derived_thresholds() -> None:
    """The shipped co-resident plans name their GPU arbitration and nothing else of the routing."""
    data = demo_data()
    data["gateway"]["routing"] = {"gpu_arbitration": "freeze", "freeze_max_s": 30, "batch_yield_fraction": 0.25}
    routing = parse_plan(data).gateway.routing
    assert (routing.arbitration.mode, routing.arbitration.max_s, routing.yielding.fraction) == ("freeze", 30, 0.25)
    derived = load_plan(shipped_plan("cpu-demo")).gateway.routing
    assert routing.limits == derived.limits and routing.spill.queue_threshold == derived.spill.queue_threshold
    assert routing.arbitration.release_s == RoutingSettings().arbitration.release_s  # not named: the settings' default


def test_a_plan_without_a_version_is_read_as_the_current_one_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    data = demo_data()
    del data["version"]
    with caplog.at_level("WARNING", logger="tandem.deploy.plan"):
        plan = parse_plan(data, origin="old.yaml")
    assert plan.version == PLAN_VERSION
    assert "old.yaml" in caplog.text and "no `version:`" in caplog.text
    caplog.clear()
    parse_plan(demo_data())  # the shipped plans say their version: no note
    assert caplog.text == ""


@pytest.mark.parametrize("version", [PLAN_VERSION + 1, 99])
def test_a_plan_from_a_newer_tandem_is_refused_before_its_fields_are_read(version: int) -> None:
    data = demo_data() | {"version": version, "a_field_of_the_future": {"x": 1}}
    with pytest.raises(PlanError, match=f"version {version}.*upgrade this one"):
        parse_plan(data)


@pytest.mark.parametrize("version", ["1", 1.5, -1, True])
def test_a_version_that_is_not_a_whole_number_is_refused(version: object) -> None:
    with pytest.raises(PlanError, match="version must be a whole number"):
        parse_plan(demo_data() | {"version": version})


def test_written_plans_carry_the_version(tmp_path: Path) -> None:
    path = dump_plan(parse_plan(demo_data()), tmp_path / "plan.yaml")
    assert yaml.safe_load(path.read_text())["version"] == PLAN_VERSION


def test_the_shipped_co_resident_plans_carry_the_arbitration_the_study_chose() -> None:
    """docs/routing.md, the shipped plans: each Spark plan names the mode and settings of the
    arbitration study's choice (benchmarks/arbitration_plans.py, its results file), and its batch
    engine the study's step budget where the choice is bounded."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "arbitration-plans.json"
    chosen = json.loads(results.read_text())
    plans = {p.stem: load_plan(p) for p in SHIPPED_PLANS_DIR.glob("*.yaml")}
    # The study sizes one model's traffic: the two-model plan takes gpt-oss-20b's choice.
    spark = {n for n, plan in plans.items() if plan.cluster.name.startswith("dgx-spark") and len(plan.models) == 1}
    assert {r["plan"] for r in chosen} == spark
    for result in chosen:
        plan = load_plan(shipped_plan(result["plan"]))
        chosen_routing = nest_flat_routing(result["routing"])  # the results file is written flat or nested
        shipped = plan.gateway.routing.model_dump()
        named = {group: {name: shipped[group][name] for name in fields} for group, fields in chosen_routing.items()}
        assert named == chosen_routing, result["plan"]
        batch = plan.replica_for("batch")
        assert batch is not None
        if result["batch_max_num_batched_tokens"] is not None:
            assert batch.engine.max_num_batched_tokens == result["batch_max_num_batched_tokens"], result["plan"]
    # The one-GPU plan has no perf-model profile: the freeze, from real engines on an H100 (docs/routing.md).
    assert load_plan(shipped_plan("one-gpu")).gateway.routing.arbitration.mode == "freeze"


def test_a_version_4_plan_of_one_model_reads_as_one_model_group(caplog: pytest.LogCaptureFixture) -> None:
    """Plan format 5 lists model groups; a version-4 plan's `model:` and `replicas:` become the one
    group, with a note, and the plan is the one the short form of version 5 reads."""
    data = demo_data() | {"version": 4}
    with caplog.at_level("WARNING", logger="tandem.deploy.plan"):
        plan = parse_plan(data, origin="v4.yaml")
    assert "version 4 -> 5: `model:` and `replicas:` moved into `models:`" in caplog.text
    assert plan == parse_plan(demo_data())
    (group,) = plan.models
    assert (group.name, group.aliases, [r.name for r in group.replicas]) == (
        "tandem-demo",
        ["demo"],
        ["interactive", "batch"],
    )
    assert "model" in data and "replicas" in data  # the caller's data is left as it was


def test_a_plan_is_written_with_models_and_reads_back(tmp_path: Path) -> None:
    plan = parse_plan(demo_data())
    path = dump_plan(plan, tmp_path / "plan.yaml")
    written = yaml.safe_load(path.read_text())
    assert "model" not in written and "replicas" not in written
    assert [g["name"] for g in written["models"]] == ["tandem-demo"]
    assert load_plan(path) == plan


def two_models_data() -> dict:
    return yaml.safe_load(shipped_plan("cpu-two-models").read_text())


def test_a_plan_of_two_models_keeps_each_models_replicas() -> None:
    plan = load_plan(shipped_plan("cpu-two-models"))
    assert [(g.name, g.source, [r.name for r in g.replicas]) for g in plan.models] == [
        ("tandem-demo", "demo", ["demo"]),
        ("tandem-demo-small", "demo-small", ["small"]),
    ]
    assert [r.name for r in plan.replicas] == ["demo", "small"]  # every model's, in order
    assert plan.group_of("small").name == "tandem-demo-small"
    with pytest.raises(KeyError, match="no replica named 'nope'"):
        plan.group_of("nope")
    with pytest.raises(PlanError, match="tuning works on a plan of one model; this one serves 2"):
        plan.only_model("tuning")
    assert parse_plan(demo_data()).only_model("tuning").name == "tandem-demo"


def test_replica_names_and_model_names_are_unique_across_models() -> None:
    data = two_models_data()
    data["models"][1]["replicas"][0]["name"] = "demo"
    expect_error(data, "replica names must be unique across models", "['demo', 'demo']")
    data = two_models_data()
    data["models"][1]["aliases"] = ["demo"]
    expect_error(data, "a model name or alias may name one model only: ['demo'] name several")
    data = two_models_data()
    data["models"] = []
    expect_error(data, "models", "at least 1 item")
    data = two_models_data()
    data["models"][0]["replicas"] = []
    expect_error(data, "models.0.replicas", "at least 1 item")


def test_a_models_own_limits_are_read_per_class() -> None:
    data = two_models_data()
    data["models"][1]["limits"] = {"interactive": {"max_concurrency": 40}}
    plan = parse_plan(data)
    assert plan.models[1].limits["interactive"].max_concurrency == 40 and plan.models[0].limits == {}
    data["models"][1]["limits"] = {"bulk": {"max_concurrency": 40}}
    expect_error(data, "models.1.limits")


def test_changing_replicas_goes_through_the_groups() -> None:
    """`replicas` is every group's, read-only: a change is made to the groups, and reaches all of them."""
    plan = load_plan(shipped_plan("cpu-two-models"))
    longer = plan.with_each_replica(lambda r: r.model_copy(update={"env": {**r.env, "X": "1"}}))
    assert [r.env["X"] for r in longer.replicas] == ["1", "1"]
    assert "X" not in plan.replicas[0].env
    one = parse_plan(demo_data())
    only_batch = one.with_one_model("a test", replicas=[one.replicas[1]])
    assert [r.name for r in only_batch.replicas] == ["batch"]
    with pytest.raises(PlanError):
        plan.with_one_model("a test", replicas=[])


def test_routing_is_derived_from_the_first_model_with_both_classes() -> None:
    two = load_plan(shipped_plan("two-models.dgx-spark-pair"))
    alone = load_plan(shipped_plan("gpt-oss-20b.dgx-spark-pair"))
    assert two.gateway.routing.spill == alone.gateway.routing.spill
    assert two.gateway.routing.limits == alone.gateway.routing.limits
    assert load_plan(shipped_plan("cpu-two-models")).gateway.routing == RoutingSettings()  # no model has both
