"""`tuner optimize` with several models: the split of the boxes, priced by the performance model."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.plan import load_plan
from tuner.cli import app
from tuner.optimize import NoFeasibleTrial, OptimizeRequest, SplitRequest, optimize_split
from tuner.plan_fit import box_memory_gb, fit_problems

runner = CliRunner()
MODELS = ["llama-3.1-8b", "gpt-oss-20b"]


def _request(tmp_path: Path, memory_per_box_gb: float | None, **overrides: object) -> SplitRequest:
    base = OptimizeRequest(
        model=MODELS[0],
        storage=f"sqlite:///{tmp_path / 'studies.db'}",
        out=tmp_path / "plans",
        trials=12,
        routing_trials=0,
        arbitration_trials=0,
    )
    return SplitRequest(models=MODELS, memory_per_box_gb=memory_per_box_gb, base=base, **overrides)  # type: ignore[arg-type]


def test_generous_budget_gives_a_plan_of_both_models_that_fits(tmp_path: Path) -> None:
    result = optimize_split(_request(tmp_path, 107.0))
    plan = load_plan(result.plan_path)
    assert [g.name for g in plan.models] == ["llama-3.1-8b-instruct", "gpt-oss-20b"]
    assert not fit_problems(plan)
    assert max(box_memory_gb(plan).values()) <= 107.0 + 1e-6
    assert sum(r.engine.gpu_memory_utilization for r in plan.replicas) <= 1.0
    # Every assignment is reported; the chosen one is the best score among those that fit.
    assert len(result.alternatives) == 4 and result.alternatives[0] == result.chosen
    fitting = [a for a in result.alternatives if a.fits]
    assert result.chosen.score == max(a.score or 0 for a in fitting)
    assert all("lower score" in a.verdict for a in fitting[1:])
    # With room for both pairs, a pair serves each model's batch class at least as well as a single.
    roles = result.chosen.roles
    for group, model in zip(plan.models, MODELS, strict=True):
        classes = sorted(r.traffic_class for r in group.replicas)
        assert classes == (["batch", "interactive"] if roles[model] == "pair" else ["interactive"])
    assert roles == {"llama-3.1-8b": "pair", "gpt-oss-20b": "pair"}
    report = result.report_path.read_text() if result.report_path else ""
    assert "## Every assignment" in report and "llama-3.1-8b single, gpt-oss-20b single" in report


def test_tight_budget_demotes_a_model_to_one_replica_and_says_why(tmp_path: Path) -> None:
    result = optimize_split(_request(tmp_path, 60.0))
    roles = result.chosen.roles
    assert "single" in roles.values()
    plan = load_plan(result.plan_path)
    assert not fit_problems(plan) and max(box_memory_gb(plan).values()) <= 60.0 + 1e-6
    both_pairs = next(a for a in result.alternatives if set(a.roles.values()) == {"pair"})
    assert (
        not both_pairs.fits
        and "does not fit" in both_pairs.verdict
        and "GB over the 60.0 GB budget" in both_pairs.verdict
    )
    single = next(m for m in result.chosen.models if m.role == "single")
    assert single.chat_ratio <= 1.0 and single.batch_ratio <= 1.0  # a single replica serves both classes


def test_traffic_shares_weigh_the_models(tmp_path: Path) -> None:
    result = optimize_split(_request(tmp_path, 60.0, traffic_shares={"llama-3.1-8b": 3, "gpt-oss-20b": 1}))
    shares = {m.model: m.traffic_share for m in result.chosen.models}
    assert shares == pytest.approx({"llama-3.1-8b": 0.75, "gpt-oss-20b": 0.25})


def test_nothing_fits_is_refused_with_by_how_much(tmp_path: Path) -> None:
    with pytest.raises(NoFeasibleTrial, match=r"fits 20\.0 GB per box.*GB over"):
        optimize_split(_request(tmp_path, 20.0))
    assert not list((tmp_path / "plans").glob("*.yaml"))


def _words(output: str) -> str:
    """The output without rich's line wrapping and error box."""
    return " ".join(output.replace("│", " ").split())


def _invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["optimize", "--model", MODELS[0], "--model", MODELS[1], *args, "--trials", "6",
                                 "--routing-trials", "0", "--arbitration-trials", "0",
                                 "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path)])  # fmt: skip
    return result.exit_code, _words(result.output)


def test_cli_writes_one_plan_for_both_models(tmp_path: Path) -> None:
    code, output = _invoke(tmp_path, "--memory-per-box", "107", "--share", "llama-3.1-8b=0.7,gpt-oss-20b=0.3")
    assert code == 0, output
    plan = load_plan(tmp_path / "llama-3.1-8b+gpt-oss-20b.dgx-spark-pair.yaml")
    assert len(plan.models) == 2
    assert (tmp_path / "llama-3.1-8b+gpt-oss-20b.dgx-spark-pair.report.md").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--evaluate", "live"), "several models are split with the performance model"),
        (("--share", "llama-3.1-8b=0.7"), "give a traffic share for every model or none"),
        (("--share", "llama-3.1-8b:0.7"), "bad share"),
        (("--memory-per-box", "500"), "more than the 107.7 GB the engines may take"),
    ],
)
def test_bad_input_for_several_models(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    code, output = _invoke(tmp_path, *args)
    assert code == 2 and message in output


def test_memory_per_box_needs_several_models(tmp_path: Path) -> None:
    result = runner.invoke(app, ["optimize", "--model", "llama-3.1-8b", "--memory-per-box", "60"])
    assert result.exit_code == 2 and "give --model twice or more" in _words(result.output)
