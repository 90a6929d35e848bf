"""`tuner optimize` with the performance model: whole runs in seconds, real studies in SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from deploy.plan import load_plan, shipped_plan
from tuner.cli import app
from tuner.optimize import ClassObjective, OptimizeRequest, optimize, resolve_model_choice, resolve_target
from tuner.optimize.evaluators import ModelEvaluator
from tuner.optimize.space import IntRange, SearchSpace, ShareRange
from tuner.optimize.study import warm_start
from tuner.perfmodel import load_hardware
from tuner.workloads import get_workload

runner = CliRunner()
FAST = dict(trials=16, routing_trials=4, arbitration_trials=0)


def _request(tmp_path: Path, **overrides: object) -> OptimizeRequest:
    values: dict[str, object] = dict(
        model="llama-3.1-8b", storage=f"sqlite:///{tmp_path / 'studies.db'}", out=tmp_path / "plans", **FAST
    )
    return OptimizeRequest(**(values | overrides))


def test_model_run_writes_a_valid_plan_that_respects_memory_and_slos(tmp_path: Path) -> None:
    result = optimize(_request(tmp_path))
    plan = load_plan(result.plan_path)
    by_class = {r.traffic_class: r for r in plan.replicas}
    assert set(by_class) == {"interactive", "batch"}
    # The two replicas share each GPU: their memory shares stay within the template's 0.85.
    assert sum(r.engine.gpu_memory_utilization for r in plan.replicas) <= 0.85 + 1e-9
    batch = result.classes["batch"]
    assert batch.chosen.measured.tpot_p99_ms <= 200 and batch.chosen.measured.ttft_p99_ms <= 10_000
    assert by_class["batch"].engine.max_num_seqs == batch.chosen.params["max_num_seqs"]
    assert batch.baseline is not None and batch.baseline_ratio["output_tok_s"] >= 1.0  # the template is trial 0
    front = result.classes["interactive"].pareto_front
    assert front and all(a["tpot_p50_ms"] >= b["tpot_p50_ms"] for a, b in zip(front, front[1:], strict=False))
    routing = plan.gateway.routing
    assert routing.spill.release_threshold < routing.spill.queue_threshold
    # No arbitration study (FAST): the shipped template's freeze is kept, though the routing study ran without it.
    template = load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair")).gateway.routing
    assert (routing.arbitration.mode, routing.arbitration.max_s) == (
        template.arbitration.mode,
        template.arbitration.max_s,
    )
    assert template.arbitration.mode == "freeze" and "GPU arbitration kept from the template" in " ".join(result.notes)
    assert result.report_path is not None and result.report_path.read_text().startswith("# tuner optimize")
    assert (result.report_path.parent / "llama-3.1-8b.dgx-spark-pair.report.png").stat().st_size > 10_000


def test_co_resident_plan_gets_the_arbitration_mode_the_study_chose(tmp_path: Path) -> None:
    """The replicas share the Spark pair's GPUs: the arbitration study runs, and the plan carries its
    choice (the gateway's mode and cap, and the batch engine's step budget in bounded mode)."""
    result = optimize(_request(tmp_path, trials=8, routing_trials=0, arbitration_trials=3))
    plan = load_plan(result.plan_path)
    info = result.routing["arbitration"]
    assert isinstance(info, dict) and info["study"] == "llama-3.1-8b.dgx-spark-pair.arbitration"
    routing = plan.gateway.routing
    expected = "freeze" if info["mode"] in ("freeze", "bounded") else "admission"
    assert routing.arbitration.mode == expected
    assert (routing.yielding.fraction < 1) == (info["mode"] in ("admission", "bounded"))
    assert info["batch_load"] == "saturating" and info["chat_load"] == "team"
    assert ("GPU arbitration" in " ".join(result.notes)) == (not info["meets_targets"])


def test_same_seed_same_result(tmp_path: Path) -> None:
    first = optimize(_request(tmp_path / "a", seed=7, routing_trials=0))
    second = optimize(_request(tmp_path / "b", seed=7, routing_trials=0))
    for name in ("interactive", "batch"):
        assert first.classes[name].chosen.params == second.classes[name].chosen.params


def test_resume_runs_only_the_missing_trials_and_requeues_interrupted_ones(tmp_path: Path) -> None:
    request = _request(tmp_path, trials=10, routing_trials=0)
    assert optimize(request).classes["batch"].ran_now == 10
    # A run killed mid-trial leaves it RUNNING in the storage.
    study = optuna.load_study(study_name="llama-3.1-8b.dgx-spark-pair.batch", storage=request.storage)
    study.ask(fixed_distributions=study.trials[-1].distributions)
    resumed = optimize(request.model_copy(update={"trials": 12}))
    assert resumed.classes["batch"].ran_now == 2
    assert any("interrupted earlier were queued again" in note for note in resumed.notes)
    again = optimize(request.model_copy(update={"trials": 12}))
    assert again.classes["batch"].ran_now == 0 and again.classes["interactive"].ran_now == 0
    assert again.classes["batch"].chosen == resumed.classes["batch"].chosen


def test_warm_start_ranks_by_the_model_and_keeps_points_distinct() -> None:
    model = resolve_model_choice("llama-3.1-8b")
    evaluator = ModelEvaluator(model.architecture, load_hardware("dgx-spark-pair"), get_workload("equal"))
    space = SearchSpace(
        layouts=("tp1-pp1", "tp2-pp1", "tp1-pp2"),
        max_num_seqs=IntRange(16, 128, step=16),
        max_num_batched_tokens=IntRange(2048, 8192, step=2048),
        max_model_len=32768,
        memory_share=ShareRange(0.3, 0.5),
    )
    objective = ClassObjective.batch(64)
    picked = warm_start(space, objective, evaluator, 3)
    assert len({(c.layout, c.max_num_seqs) for c in picked}) == 3
    best = max(
        (
            evaluator.evaluate(c, None, objective).output_tok_s
            for c in space.candidates()
            if evaluator.predict(c, 64).fits
        ),  # type: ignore[arg-type]
    )
    assert evaluator.evaluate(picked[0], None, objective).output_tok_s == pytest.approx(best)  # type: ignore[arg-type]


def test_cli_json_and_plan_file(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["optimize", "--model", "gpt-oss-20b", "--trials", "12", "--routing-trials", "0", "--json",
         "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "gpt-oss-20b" and data["cluster"] == "dgx-spark-pair"
    assert Path(data["plan_path"]) == tmp_path / "gpt-oss-20b.dgx-spark-pair.yaml"
    assert load_plan(data["plan_path"]).models[0].source == "openai/gpt-oss-20b"


# ---- bad input ----------------------------------------------------------------------------------------


def _invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Exit code and output with rich's line wrapping undone."""
    result = runner.invoke(app, ["optimize", *args, "--trials", "8", "--routing-trials", "0",
                                 "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path)])  # fmt: skip
    return result.exit_code, " ".join(result.output.split())


def test_unknown_model_alias(tmp_path: Path) -> None:
    code, output = _invoke(tmp_path, "--model", "llama-9")
    assert code == 2
    assert "unknown model 'llama-9'" in output and "llama-3.1-8b" in output


def test_impossible_slo_says_no_trial_met_it_and_why(tmp_path: Path) -> None:
    code, output = _invoke(tmp_path, "--model", "llama-3.1-8b", "--slo", "tpot_p99:1")
    assert code == 1
    assert "no batch trial is feasible" in output
    assert "closest" in output and "tpot_p99" in output and "> 1 ms" in output
    assert not (tmp_path / "llama-3.1-8b.dgx-spark-pair.yaml").exists()


def test_malformed_slo(tmp_path: Path) -> None:
    code, output = _invoke(tmp_path, "--model", "llama-3.1-8b", "--slo", "latency:5")
    assert code == 2 and "bad SLO 'latency:5'" in output


def test_cluster_that_cannot_hold_the_model(tmp_path: Path) -> None:
    target = tmp_path / "small-box.yaml"
    target.write_text(yaml.safe_dump({
        "name": "small-box",
        "hardware": "dgx-spark",
        "memory_budget": 0.3,
        "cluster": {"name": "small-box", "nodes": 1, "devices_per_node": 1, "accelerator": "GB10", "memory_per_node_gb": 119.7},
    }))  # fmt: skip
    assert resolve_target(str(target)).layouts()[0].name == "tp1-pp1"
    code, output = _invoke(tmp_path, "--model", "gpt-oss-120b", "--cluster", str(target))
    assert code == 2
    assert "cannot hold gpt-oss-120b" in output and "weights do not fit" in output


def test_model_evaluation_needs_a_hardware_profile(tmp_path: Path) -> None:
    code, output = _invoke(tmp_path, "--model", "demo", "--cluster", "local-cpu")
    assert code == 2 and "--evaluate live" in output


def test_unknown_cluster(tmp_path: Path) -> None:
    code, output = _invoke(tmp_path, "--model", "llama-3.1-8b", "--cluster", "dgx-spark-quad")
    assert code == 2 and "unknown cluster 'dgx-spark-quad'" in output
