"""The routing report: estimates with confidence intervals, the issue's targets, markdown and charts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.policy_eval.report import (
    BEGIN,
    END,
    Estimate,
    PolicyResult,
    RoutingReport,
    ScenarioResult,
    YieldPoint,
    check_targets,
    kendall_tau,
    markdown_tables,
    ordering_check,
    plot_scenario,
    plot_yield,
    replace_results,
    yield_rows,
)


def test_estimate_is_the_mean_with_a_student_t_interval() -> None:
    estimate = Estimate.of([1.0, 2.0, 3.0, None])
    assert estimate.mean == 2.0 and estimate.n == 3
    assert estimate.half_width == pytest.approx(4.303 * 1.0 / 3**0.5)
    assert Estimate.of([5.0]).half_width == 0.0
    assert Estimate.of([None]).mean is None and Estimate.of([None]).text() == "-"


def test_kendall_tau_measures_rank_agreement() -> None:
    assert kendall_tau([0, 1, 2], [0, 1, 2]) == 1.0
    assert kendall_tau([0, 1, 2], [2, 1, 0]) == -1.0
    assert kendall_tau([0, 1, 2], [0, 2, 1]) == pytest.approx(1 / 3)
    assert kendall_tau([0], [0]) is None


def result(setting: str, scenario: str, **policies: dict[str, float]) -> ScenarioResult:
    return ScenarioResult(
        setting=setting,
        scenario=scenario,
        description=scenario,
        policies=[PolicyResult(policy=name.replace("_", "-"), samples=[figures]) for name, figures in policies.items()],
    )


def report(setting: str = "sim", tandem_goodput: float = 3.0) -> RoutingReport:
    return RoutingReport(
        command="test",
        machine="test",
        scenarios=[
            result(
                setting,
                "steady",
                class_aware={
                    "interactive_ttft_p99_ms": 110.0,
                    "batch_output_tok_s": 96.0,
                    "goodput_req_s": tandem_goodput,
                },
                round_robin={"interactive_ttft_p99_ms": 300.0, "batch_output_tok_s": 90.0, "goodput_req_s": 2.0},
                all_batch={"interactive_ttft_p99_ms": 500.0, "batch_output_tok_s": 99.0, "goodput_req_s": 1.0},
            ),
            result(setting, "interactive-only", all_interactive={"interactive_ttft_p99_ms": 100.0}),
            result(setting, "batch-only", all_batch={"batch_output_tok_s": 100.0}),
        ],
    )


def test_targets_compare_class_aware_with_the_alone_references_and_the_baselines() -> None:
    ttft, tok, goodput = check_targets(report(), "sim")
    assert ttft.value == pytest.approx(1.1) and ttft.met is True
    assert tok.value == pytest.approx(0.96) and tok.met is True
    assert goodput.value == pytest.approx(1.5) and goodput.met is True
    assert "class-aware > round-robin > all-batch" in goodput.detail
    losing = check_targets(report(tandem_goodput=1.5), "sim")[2]
    assert losing.met is False and "best baseline round-robin" in losing.detail


def test_targets_without_the_runs_are_undecided_not_failed() -> None:
    checks = check_targets(RoutingReport(command="t", machine="t"), "sim")
    assert [c.met for c in checks] == [None, None]


def test_live_ordering_is_judged_against_the_simulated_one() -> None:
    both = report("sim")
    both.scenarios += report("live", tandem_goodput=1.5).scenarios
    check = ordering_check(both, "sim", "live")
    assert check.met is False and check.value == pytest.approx(1 / 3)  # one adjacent pair swapped
    assert ordering_check(both, "sim", "sim").met is True


def test_markdown_has_a_table_per_scenario_and_fills_only_the_marked_section() -> None:
    full = report()
    full.targets = check_targets(full, "sim")
    tables = markdown_tables(full)
    assert tables.count("| policy |") == 3
    assert "| **class-aware** | - | 110 |" in tables
    assert "### Targets" in tables and "| sim | interactive TTFT p99 / TP replica alone | 1.10 | 1.2 | yes |" in tables
    document = f"# Routing\n\nintro\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    filled = replace_results(document, tables)
    assert filled.startswith("# Routing\n\nintro\n\n") and filled.endswith("\n\nafter\n")
    assert "old" not in filled and "### Targets" in filled
    with pytest.raises(ValueError, match="results"):
        replace_results("no markers", tables)


def test_one_chart_per_scenario(tmp_path: Path) -> None:
    path = plot_scenario(report(), "steady", tmp_path / "routing-steady.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def with_sweep() -> RoutingReport:
    full = report()
    full.yield_sweep = [
        YieldPoint(
            setting="sim",
            fraction=fraction,
            max_hold_s=hold,
            release_s=10,
            result=PolicyResult(policy="class-aware", samples=[figures]),
        )
        for fraction, hold, figures in (
            (1.0, 30, {"interactive_ttft_p99_ms": 200.0, "batch_output_tok_s": 90.0, "goodput_req_s": 3.0}),
            (
                0.0,
                60,
                {
                    "interactive_ttft_p99_ms": 120.0,
                    "batch_output_tok_s": 50.0,
                    "goodput_req_s": 2.0,
                    "batch_held_fraction": 0.8,
                },
            ),
        )
    ]
    return full


def test_the_yield_sweep_is_read_against_the_alone_references() -> None:
    rows = yield_rows(with_sweep(), "sim")
    assert rows[0][:3] == ["off", "200 (2.00x)", "90.0 (0.90x)"]  # alone: TTFT p99 100 ms, 100 tok/s
    assert rows[1][:3] == ["0 of slots, hold <= 60 s", "120 (1.20x)", "50.0 (0.50x)"]
    tables = markdown_tables(with_sweep())
    assert "**batch yielding, sim**" in tables and "| 0 of slots, hold <= 60 s | 120 (1.20x) |" in tables
    assert "batch yielding" not in markdown_tables(report())  # no sweep, no table


def test_the_yield_chart_is_drawn(tmp_path: Path) -> None:
    assert plot_yield(with_sweep(), tmp_path / "routing-yield.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
