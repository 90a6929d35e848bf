"""The routing evaluation's command (benchmarks/routing.py runs it): every routing policy on mixed
traffic, simulated and live, the old results kept where this run does not replace them.

Simulated: the perf model's traffic simulation of the Spark pair, for the shipped gpt-oss-120b and
llama-3.1-8b plans, every policy on every scenario over --seeds seeds (95% confidence intervals),
plus the steady mix without co-residence contention (the bound a perfect GPU partition gives).
Live: one CPU stack (the cpu-demo plan, or --live-plan), the policy switched through PUT /admin/routing
between runs, traffic from tuner.bench; the failure scenario last (it kills the interactive engine).

Prints one table per scenario and the issue's targets, writes the results as JSON (results of
settings not re-run are kept from the existing file), one chart per scenario, and with --docs the
tables into docs/routing.md. The live part starts vLLM engines: run it under the machine's lock
(the commands are in benchmarks/routing.py's docstring and docs/routing.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from deploy.demo_model import ensure_demo_model
from deploy.plan import load_plan, shipped_plan
from deploy.ports import free_port
from deploy.stack import running_stack
from gateway.contract.router import POLICIES
from tuner.policy_eval.live import run_live
from tuner.policy_eval.report import (
    FIGURES,
    TABLE_FIGURES,
    YIELD_COLUMNS,
    RoutingReport,
    check_targets,
    markdown_tables,
    ordering_check,
    plot_scenario,
    plot_yield,
    replace_results,
    table_rows,
    yield_rows,
    yield_settings,
)
from tuner.policy_eval.scenarios import LIVE_SLO, SCENARIOS, arbitration_off, live_scenarios
from tuner.policy_eval.simulated import YIELD_POINTS, run_simulated

ROOT = Path(__file__).resolve().parents[2]  # the repository: results, charts and docs live there
SPARK_PLANS = ("gpt-oss-120b", "llama-3.1-8b")
LIVE_PLAN = "cpu-demo"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "routing.json"
DOCS = ROOT / "docs" / "routing.md"
IMAGES = ROOT / "docs" / "img"
console = Console()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--simulated-only", action="store_true", help="skip the live CPU stack")
    only.add_argument("--live-only", action="store_true", help="skip the simulation")
    only.add_argument(
        "--report-only", action="store_true", help="run nothing: rebuild the report from the results file"
    )
    parser.add_argument("--seeds", type=int, default=5, help="simulation seeds per policy and scenario (default 5)")
    parser.add_argument("--quick", action="store_true", help="short runs: 2 seeds x 120 s simulated, 6 s live runs")
    parser.add_argument("--sim-duration", type=float, default=300.0, help="simulated seconds per run (default 300)")
    parser.add_argument(
        "--live-duration", type=float, default=20.0, help="seconds of traffic per live run (default 20)"
    )
    parser.add_argument(
        "--live-plan",
        default=LIVE_PLAN,
        help="plan for the live part: a shipped plan's name or a YAML path (default cpu-demo; "
        "benchmarks/plans/cpu-roles-swapped.yaml puts each class on this CPU's better layout for it)",
    )
    parser.add_argument(
        "--live-scenarios",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="live scenarios to run (default all); the others' results are kept from the results file",
    )
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON")
    parser.add_argument("--docs", action="store_true", help="write the charts and docs/routing.md's tables")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    args.live_setting = f"live {Path(args.live_plan).stem}"
    if args.quick:
        args.seeds, args.sim_duration, args.live_duration = min(args.seeds, 2), 120.0, 6.0
    return args


def simulated(args: argparse.Namespace, progress: Progress) -> tuple[list, dict, list]:
    plans = {key: load_plan(shipped_plan(f"{key}.dgx-spark-pair")) for key in SPARK_PLANS}
    runs = len(SPARK_PLANS) * ((len(SCENARIOS) + 3) * len(POLICIES) + len(YIELD_POINTS))
    task = progress.add_task("simulating", total=runs)
    return run_simulated(
        plans, args.seeds, args.sim_duration, progress=lambda what: progress.update(task, advance=1, description=what)
    )


def live(args: argparse.Namespace, progress: Progress) -> tuple[list, dict, list]:
    source = Path(args.live_plan)
    plan = load_plan(source if source.suffix in (".yaml", ".yml") else shipped_plan(args.live_plan))
    plan = plan.model_copy(update={"gateway": plan.gateway.model_copy(update={"port": free_port()})})
    routing = arbitration_off(plan)
    interactive = next(r.name for r in plan.replicas if r.traffic_class == "interactive")
    scenarios = [s for s in live_scenarios(args.live_duration, interactive).values() if s.name in args.live_scenarios]
    task = progress.add_task(
        "starting the CPU stack", total=sum(1 if s.fail_replica else len(POLICIES) for s in scenarios)
    )
    with running_stack(plan) as deployed:
        results = run_live(
            deployed.base_url,
            deployed.model,
            deployed.replica_urls,
            routing,
            scenarios,
            tuple(POLICIES),
            setting=args.live_setting,
            tokenizer=str(ensure_demo_model()),
            progress=lambda what: progress.update(task, advance=1, description=what),
        )
        progress.update(task, description="stopping the CPU stack")
    described = {
        args.live_setting: {
            "plan": args.live_plan,
            "replicas": {
                r.name: f"TP={r.tensor_parallel_size} PP={r.pipeline_parallel_size}, max_num_seqs {r.engine.max_num_seqs}"
                for r in plan.replicas
            },
            "routing": routing.model_dump(exclude={"policy"}),
            "slo": {c: s.model_dump(exclude_none=True) for c, s in LIVE_SLO.items()},
            "scenarios": [s.model_dump(mode="json") for s in live_scenarios(args.live_duration, interactive).values()],
            "machine": _machine(),
        }
    }
    return results, described, []


def _reruns(args: argparse.Namespace, setting: str, scenario: str | None = None) -> bool:
    """Whether this command runs the setting (and scenario) again, so the old results go."""
    if args.report_only:
        return False
    if setting.startswith("simulated"):
        return not args.live_only
    return (
        not args.simulated_only
        and setting == args.live_setting
        and (scenario is None or scenario in args.live_scenarios)
    )


def _machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, no GPU, Python {platform.python_version()}"


def print_report(report: RoutingReport) -> None:
    for setting in report.setting_names:
        for scenario, result in report.of_setting(setting).items():
            table = Table(title=f"{setting}: {scenario}", title_justify="left")
            table.add_column("policy")
            for figure in TABLE_FIGURES:
                table.add_column(FIGURES[figure], justify="right")
            for row in table_rows(result):
                table.add_row(*row, style="bold" if row[0] == "class-aware" else None)
            console.print(table)
    for setting in yield_settings(report):
        table = Table(title=f"{setting}: batch yielding on the steady mix (class-aware)", title_justify="left")
        for column in YIELD_COLUMNS:
            table.add_column(column, justify="left" if column == YIELD_COLUMNS[0] else "right")
        for row in yield_rows(report, setting):
            table.add_row(*row)
        console.print(table)
    targets = Table(title="targets", title_justify="left")
    for column in ("setting", "target", "value", "bound", "met"):
        targets.add_column(column)
    for t in report.targets:
        value = "-" if t.value is None else f"{t.value:.2f}"
        targets.add_row(t.setting, t.target, value, f"{t.bound:g}", {True: "yes", False: "NO", None: "-"}[t.met])
    console.print(targets)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = RoutingReport(
        command=" ".join(["benchmarks/routing.py", *(argv if argv is not None else sys.argv[1:])]), machine=_machine()
    )
    if args.output.is_file():  # keep what this command does not re-run
        previous = RoutingReport.model_validate_json(args.output.read_text())
        report.scenarios = [s for s in previous.scenarios if not _reruns(args, s.setting, s.scenario)]
        report.settings = {k: v for k, v in previous.settings.items() if not _reruns(args, k)}
        report.yield_sweep = [p for p in previous.yield_sweep if not _reruns(args, p.setting)]
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        parts = [] if args.report_only else [simulated] * (not args.live_only) + [live] * (not args.simulated_only)
        for part in parts:
            results, described, sweep = part(args, progress)
            report.scenarios += results
            report.settings |= described
            report.yield_sweep += sweep
    report.scenarios.sort(key=lambda s: (not s.setting.startswith("simulated"), s.setting, SCENARIOS.index(s.scenario)))
    for setting in report.setting_names:
        report.targets += check_targets(report, setting)
    for setting in report.setting_names:
        if setting.startswith("live "):
            report.targets.append(ordering_check(report, f"simulated {SPARK_PLANS[0]}", setting))
    print_report(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report.model_dump_json(indent=1) + "\n")
    console.print(f"results: {args.output}  ({time.perf_counter() - started:.0f} s)")
    if args.docs:
        for scenario in SCENARIOS:
            console.print(f"chart: {plot_scenario(report, scenario, IMAGES / f'routing-{scenario}.png')}")
        if report.yield_sweep:
            console.print(f"chart: {plot_yield(report, IMAGES / 'routing-yield.png')}")
        DOCS.write_text(replace_results(DOCS.read_text(), markdown_tables(report)))
        console.print(f"tables: {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
