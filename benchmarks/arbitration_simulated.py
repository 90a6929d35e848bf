"""GPU arbitration on the simulated Spark pair: freeze vs admission yielding vs nothing, and the
frontier the starvation bound trades along. Every figure is a ratio against references simulated
in the same run (each class alone on its replica), with the measured co-residence slowdowns
(tuner/perfmodel/data/coresidence/, from benchmarks/coresidence/ on an H200).

    .venv/bin/python benchmarks/arbitration_simulated.py [--duration 300] [--seeds 3] [--models ...]

Per model (its shipped Spark plan, the routing benchmark's steady mix: half as many chat users as
the interactive replica has slots, batch at half what the batch replica completes alone):
  references   interactive-only (all-interactive) and batch-only (all-batch)
  settings     class-aware with arbitration off, admission yielding (fraction 0, the default hold),
               freeze at the default bound, and freeze along a sweep of (freeze_max_s, release_s)
  baselines    the other routing policies, arbitration off
Targets (issue 13): interactive TTFT p99 <= 1.2x alone; batch tok/s >= 0.9 x alone x (1 - the
interactive busy share alone); goodput (both classes' requests/s within their SLOs) >= every
baseline's. Writes benchmarks/results/arbitration-simulated.json and docs/img/arbitration-frontier.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from deploy.plan import load_plan, shipped_plan
from gateway.config import RoutingSettings
from gateway.policy import POLICIES
from tuner.perfmodel.simulate import Scenario, SimResult, simulate
from tuner.policy_eval.scenarios import plan_routing, simulated_scenarios

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "arbitration-simulated.json"
CHART = ROOT / "docs" / "img" / "arbitration-frontier.png"
BOUNDS = ((2.0, 2.0), (5.0, 2.5), (10.0, 2.5), (20.0, 2.5), (30.0, 1.0), (60.0, 1.0))
"""(freeze_max_s, freeze_release_s) along the frontier: batch gets at least release / (max + release)."""


def mean_of(results: Sequence[SimResult], read: Callable[[SimResult], float | None]) -> float:
    values = [v for r in results if (v := read(r)) is not None]
    return statistics.fmean(values) if values else float("nan")


def summary(results: Sequence[SimResult]) -> dict[str, float]:
    return {
        "interactive_ttft_p99_ms": mean_of(results, lambda r: r.classes["interactive"].ttft_p99_ms),
        "interactive_tpot_p50_ms": mean_of(results, lambda r: r.classes["interactive"].tpot_p50_ms),
        "batch_tok_s": mean_of(results, lambda r: r.classes["batch"].output_tok_s),
        "batch_failed": mean_of(results, lambda r: r.classes["batch"].failed),
        "goodput_req_s": mean_of(
            results, lambda r: r.classes["interactive"].goodput_req_s + r.classes["batch"].goodput_req_s
        ),
        "interactive_busy": mean_of(results, lambda r: r.class_busy_fraction["interactive"]),
        "batch_frozen": mean_of(results, lambda r: r.batch_frozen_fraction),
        "forced_resumes": mean_of(results, lambda r: r.forced_resumes),
    }


def run(scenario: Scenario, settings: RoutingSettings, seeds: int) -> dict[str, float]:
    return summary([simulate(scenario, settings, seed=seed) for seed in range(seeds)])


def model_report(model: str, duration_s: float, seeds: int, users: int | None = None) -> dict[str, object]:
    plan = load_plan(shipped_plan(f"{model}.dgx-spark-pair"))
    scenarios = simulated_scenarios(plan, duration_s)
    if users is not None:  # a lighter (or heavier) chat load than the plan-sized one
        for name in ("steady", "interactive-only"):
            chat = scenarios[name].interactive.model_copy(update={"users": users})
            scenarios[name] = scenarios[name].model_copy(update={"interactive": chat})
    base = plan_routing(plan).model_copy(update={"policy": "class-aware"})
    alone_i = run(scenarios["interactive-only"], base.model_copy(update={"policy": "all-interactive"}), seeds)
    alone_b = run(scenarios["batch-only"], base.model_copy(update={"policy": "all-batch"}), seeds)
    steady = scenarios["steady"]
    settings: dict[str, RoutingSettings] = {
        "off": base,
        "admission yielding": base.model_copy(update={"batch_yield_fraction": 0.0}),
        "freeze": base.model_copy(update={"gpu_arbitration": "freeze", "batch_yield_fraction": 1.0}),
    }
    for max_s, release_s in BOUNDS:
        settings[f"freeze {max_s:g}/{release_s:g}"] = settings["freeze"].model_copy(
            update={"freeze_max_s": max_s, "freeze_release_s": release_s}
        )
    rows = {name: run(steady, s, seeds) for name, s in settings.items()}
    baselines = {
        name: run(steady, base.model_copy(update={"policy": name}), seeds) for name in POLICIES if name != "class-aware"
    }
    busy = alone_i["interactive_busy"]
    batch_floor = 0.9 * alone_b["batch_tok_s"] * (1 - busy)
    best_baseline = max(baselines.items(), key=lambda kv: kv[1]["goodput_req_s"])
    for row in rows.values():
        row["ttft_p99_vs_alone"] = row["interactive_ttft_p99_ms"] / alone_i["interactive_ttft_p99_ms"]
        row["batch_vs_alone"] = row["batch_tok_s"] / alone_b["batch_tok_s"]
        row["batch_vs_floor"] = row["batch_tok_s"] / batch_floor if batch_floor > 0 else float("inf")
        row["goodput_vs_best_baseline"] = row["goodput_req_s"] / best_baseline[1]["goodput_req_s"]
    return {
        "model": model,
        "plan": f"{model}.dgx-spark-pair",
        "users": scenarios["steady"].interactive.users,
        "duration_s": duration_s,
        "seeds": seeds,
        "alone": {"interactive": alone_i, "batch": alone_b},
        "interactive_busy_alone": busy,
        "batch_floor_tok_s": batch_floor,
        "best_baseline": best_baseline[0],
        "settings": rows,
        "baselines": baselines,
    }


def markdown(report: dict[str, object]) -> str:
    rows = report["settings"]
    assert isinstance(rows, dict)
    lines = [
        f"**{report['model']}**, {report['users']} chat users (interactive busy share alone {report['interactive_busy_alone']:.2f}; "
        f"best baseline by goodput: {report['best_baseline']})",
        "",
        "| class-aware, arbitration | int. TTFT p99 / alone | batch tok/s / alone | batch / floor | "
        "goodput / best baseline | batch frozen | forced resumes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['ttft_p99_vs_alone']:.2f}x | {r['batch_vs_alone']:.2f}x | {r['batch_vs_floor']:.2f}x | "
            f"{r['goodput_vs_best_baseline']:.2f}x | {r['batch_frozen']:.2f} | {r['forced_resumes']:.0f} |"
        )
    return "\n".join(lines)


def plot(reports: Sequence[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2
    rows_n = (len(reports) + columns - 1) // columns
    fig, axes = plt.subplots(rows_n, columns, figsize=(6 * columns, 4.5 * rows_n), squeeze=False)
    for ax, report in zip(axes.flat, reports, strict=False):
        rows = report["settings"]
        assert isinstance(rows, dict)
        frontier = [(name, rows[name]) for name in rows if name.startswith("freeze ")]
        ax.plot(
            [r["batch_vs_alone"] for _, r in frontier],
            [r["ttft_p99_vs_alone"] for _, r in frontier],
            "o-",
            label="freeze, along the starvation bound (max/release s)",
        )
        for name, r in frontier:
            ax.annotate(name.removeprefix("freeze "), (r["batch_vs_alone"], r["ttft_p99_vs_alone"]), fontsize=8)
        for name, marker in (("off", "s"), ("admission yielding", "^"), ("freeze", "*")):
            r = rows[name]
            ax.plot(r["batch_vs_alone"], r["ttft_p99_vs_alone"], marker, markersize=10, label=name)
        busy = float(report["interactive_busy_alone"])  # type: ignore[arg-type]
        ax.axhline(1.2, color="grey", linestyle="--", linewidth=0.8, label="TTFT target 1.2x")
        ax.axvline(0.9 * (1 - busy), color="grey", linestyle=":", linewidth=0.8, label="batch floor")
        ax.set_xlabel("batch output tok/s / batch alone")
        ax.set_ylabel("interactive TTFT p99 / interactive alone")
        ax.set_title(f"{report['model']}, {report['users']} chat users, simulated Spark pair", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["gpt-oss-120b", "llama-3.1-8b"])
    parser.add_argument("--users", type=int, nargs="+", default=[0], help="chat users; 0: the plan-sized number")
    args = parser.parse_args()
    reports = [
        model_report(model, args.duration, args.seeds, users or None) for users in args.users for model in args.models
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(reports, indent=1) + "\n")
    plot(reports, CHART)
    for report in reports:
        print(markdown(report), end="\n\n")
    print(f"results: {RESULTS.relative_to(ROOT)}, chart: {CHART.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
