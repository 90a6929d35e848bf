"""GPU arbitration on the simulated Spark pair: freeze vs admission yielding vs nothing, and the
frontier the starvation bound trades along. Every figure is a ratio against references simulated
in the same run (each class alone on its replica), with the measured co-residence slowdowns
(tuner/perfmodel/data/coresidence/, from benchmarks/coresidence/ on an H200).

    .venv/bin/python benchmarks/arbitration_simulated.py [--duration 300] [--seeds 3] [--models ...]
        [--loads plan 20:60 ...] [--batch-load half|saturating]
        [--combine RESULTS.json ...]   (one chart and table from runs made per model, e.g. in parallel)

Per model and chat load (its shipped Spark plan; batch "half": the routing benchmark's steady mix,
batch arriving at half what the batch replica completes alone, or "saturating": 1.25x of it, more
than it can complete (tuner.optimize.arbitration_search.BATCH_LOADS); chat users "plan": half as
many as the interactive replica has slots, thinking 2 s between turns, or "USERS:THINK_S", e.g.
20:120 for a team of twenty that reads each answer for two minutes on average):
  references   interactive-only (all-interactive) and batch-only (all-batch)
  settings     class-aware with arbitration off, admission yielding (fraction 0, the default hold),
               freeze at the default bound, and freeze along a sweep of (freeze_max_s, release_s);
               the bounded step (issue 23): freeze + a batch cap while chat is around + the batch
               engine's step budget (max_num_batched_tokens), at BOUNDED_BUDGETS
  baselines    the other routing policies, arbitration off
Targets (issue 23): interactive TTFT p99 <= 1.5x and TPOT p50 <= 1.1x alone; batch tok/s >= 0.9 x
alone x (1 - the interactive busy share alone); goodput (both classes' requests/s within their
SLOs) is reported against the best baseline. Writes benchmarks/results/arbitration-simulated.json
(or --out) and docs/img/arbitration-frontier.png (or --chart).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deploy.plan import load_plan, shipped_plan
from gateway.contract.config import RoutingSettings
from gateway.contract.router import POLICIES
from tuner.optimize.arbitration_search import (
    BATCH_LOADS,
    CAP_HOLD_S,
    arbitration_scenarios,
    point,
    with_batch_budget,
    with_held_running,
)
from tuner.perfmodel.simulate import InteractiveLoad, Scenario, SimResult, replica_models, simulate
from tuner.policy_eval.scenarios import arbitration_off
from tuner.workloads import get_workload

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "arbitration-simulated.json"
CHART = ROOT / "docs" / "img" / "arbitration-frontier.png"
BOUNDS = ((2.0, 2.0), (5.0, 2.5), (10.0, 2.5), (20.0, 2.5), (30.0, 1.0), (60.0, 1.0))
"""(freeze_max_s, freeze_release_s) along the frontier: batch gets at least release / (max + release)."""
BATCH_STEPS = ((64, 4096), (32, 2048), (16, 1024))
"""The batch engine's (max_num_seqs, max_num_batched_tokens) tried with the freeze (the Spark plans
ship 128-256 and 16384): a freeze takes effect after the step in flight, so a chat request that
starts one waits for a batch step, and a smaller batch makes that step shorter."""
BOUNDED_BUDGETS = (512, 1024, 2048)
"""The batch engine's step budgets of the bounded-step rows (the Spark plans ship 16384)."""
BOUNDED_CAP = {"fraction": 0.0625, "settle_s": 5.0, "hold_s": CAP_HOLD_S}
"""The bounded step's batch cap: 1/16 of the batch class's concurrency while chat is around, lifted
5 s after chat goes idle, never cut by the yield's starvation bound (the cap is above zero, so batch
is never starved by it; the freeze's own bound still applies)."""
BOUNDED_FREEZE_MAX_S = (10.0, 30.0)
RUNNING_CAPS = (8, 32)
"""The "running cap" rows: while chat is around and for the settle after, the batch engine steps at
most this many of its running sequences (the others wait with their KV cache: an idealised control,
SimReplica.held_running, that vLLM does not offer at runtime) and admits no more than that."""
RUNNING_CAP_SETTLES_S = (5.0, 60.0)
RUNNING_CAP_TOKENS = 2048
SMALL_BATCHES = (8, 32)
"""The batch engine's max_num_seqs of the small-batch rows (a static cap on running sequences)."""
SMALL_BATCH_TOKENS = 512
SMALL_STEP_FREEZE_MAX_S = 30.0


def mean_of(results: Sequence[SimResult], read: Callable[[SimResult], float | None]) -> float:
    values = [v for r in results if (v := read(r)) is not None]
    return statistics.fmean(values) if values else float("nan")


def summary(results: Sequence[SimResult]) -> dict[str, float]:
    return {
        "interactive_ttft_p99_ms": mean_of(results, lambda r: r.classes["interactive"].ttft_p99_ms),
        "interactive_tpot_p50_ms": mean_of(results, lambda r: r.classes["interactive"].tpot_p50_ms),
        "batch_step_p99_ms": mean_of(results, lambda r: r.batch_step_p99_ms),
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


def chat_load(text: str) -> dict[str, float]:
    """Read a chat load: "plan" (the plan-sized users and think time) or "USERS:THINK_S"."""
    if text == "plan":
        return {}
    users, _, think_s = text.partition(":")
    try:
        return {"users": int(users), "think_time_s": float(think_s)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"a chat load is 'plan' or USERS:THINK_S, e.g. 20:60, got {text!r}") from None


def with_batch_step(scenario: Scenario, seqs: int, tokens: int) -> Scenario:
    """`scenario` with its batch replica's engine stepping at most `seqs` sequences and `tokens`
    tokens at a time."""
    step = {"max_num_seqs": seqs, "max_num_batched_tokens": tokens}
    replicas = tuple(
        r.model_copy(update={"settings": r.settings.model_copy(update=step)}) if r.traffic_class == "batch" else r
        for r in scenario.replicas
    )
    return scenario.model_copy(update={"replicas": replicas})


def batch_step_ms(scenario: Scenario) -> dict[str, float]:
    """The batch replica's step at its full batch, from the perf model (alone, not slowed): decode
    only, and decode with a prompt chunk filling the rest of its token budget. A freeze that a chat
    request starts takes effect after such a step."""
    batch = next(r for r in scenario.replicas if r.traffic_class == "batch")
    model, shape = replica_models(scenario)[batch.name], scenario.batch.shape
    running, context = model.max_running, shape.input_len + shape.output_len / 2
    chunk = max(0, model.max_num_batched_tokens - running)
    return {
        "decode": 1e3 * model.cycle_seconds(running, context),
        "decode_and_prefill": 1e3 * model.cycle_seconds(running, context, chunk, shape.input_len / 2),
    }


def planned_rows(steady: Scenario, base: RoutingSettings) -> dict[str, tuple[Scenario, RoutingSettings]]:
    """Every row of the table: its name, the mixed scenario it runs (the batch engine's settings
    changed where the row says so) and the gateway's routing."""
    freeze = point("freeze", base).routing
    rows: dict[str, tuple[Scenario, RoutingSettings]] = {
        "off": (steady, base),
        "admission yielding": (steady, point("admission", base, fraction=0.0).routing),
        "freeze": (steady, freeze),
    }
    for max_s, release_s in BOUNDS:
        bound = freeze.replacing(
            arbitration=freeze.arbitration.model_copy(update={"max_s": max_s, "release_s": release_s})
        )
        rows[f"freeze {max_s:g}/{release_s:g}"] = (steady, bound)
    for seqs, tokens in BATCH_STEPS:
        rows[f"freeze, batch of {seqs}"] = (with_batch_step(steady, seqs, tokens), freeze)
    for max_s in BOUNDED_FREEZE_MAX_S:
        for tokens in BOUNDED_BUDGETS:
            bounded = point("bounded", base, freeze_max_s=max_s, batch_tokens=tokens, **BOUNDED_CAP)
            rows[f"bounded {max_s:g}/2.5, budget {tokens}"] = (with_batch_budget(steady, tokens), bounded.routing)
    slots = base.limits["batch"].max_concurrency
    for seqs in RUNNING_CAPS:
        for settle_s in RUNNING_CAP_SETTLES_S:
            capped = point(
                "bounded",
                base,
                fraction=seqs / slots,
                settle_s=settle_s,
                hold_s=CAP_HOLD_S,
                freeze_max_s=SMALL_STEP_FREEZE_MAX_S,
                batch_tokens=RUNNING_CAP_TOKENS,
            )
            scenario = with_held_running(with_batch_budget(steady, RUNNING_CAP_TOKENS), seqs)
            rows[f"running cap {seqs}, settle {settle_s:g} s"] = (scenario, capped.routing)
    small_step_freeze = point("freeze", base, freeze_max_s=SMALL_STEP_FREEZE_MAX_S).routing
    for seqs in SMALL_BATCHES:
        scenario = with_batch_step(steady, seqs, max(SMALL_BATCH_TOKENS, seqs))
        rows[f"max_num_seqs {seqs}, freeze {SMALL_STEP_FREEZE_MAX_S:g}/2.5"] = (scenario, small_step_freeze)
    return rows


def model_report(
    model: str, duration_s: float, seeds: int, load: dict[str, float], batch_load: str, only: tuple[str, ...] = ()
) -> dict[str, object]:
    plan = load_plan(shipped_plan(f"{model}.dgx-spark-pair"))
    chat = InteractiveLoad(shape=get_workload("chat"), **load) if load else None
    scenarios = arbitration_scenarios(plan, chat, batch_load, duration_s)
    base = arbitration_off(plan).model_copy(update={"policy": "class-aware"})
    alone_i = run(scenarios["interactive-only"], base.model_copy(update={"policy": "all-interactive"}), seeds)
    alone_b = run(scenarios["batch-only"], base.model_copy(update={"policy": "all-batch"}), seeds)
    steady = scenarios["mixed"]
    planned = planned_rows(steady, base)
    chosen = {name: rs for name, rs in planned.items() if not only or name.startswith(only)}
    rows = {name: run(scenario, routing, seeds) for name, (scenario, routing) in chosen.items()}
    steps = {"plan": batch_step_ms(steady)}
    for seqs, tokens in BATCH_STEPS:
        steps[f"batch of {seqs}"] = batch_step_ms(with_batch_step(steady, seqs, tokens))
    for tokens in BOUNDED_BUDGETS:
        steps[f"budget {tokens}"] = batch_step_ms(with_batch_budget(steady, tokens))
    for seqs in SMALL_BATCHES:
        steps[f"batch of {seqs}, budget {max(SMALL_BATCH_TOKENS, seqs)}"] = batch_step_ms(
            with_batch_step(steady, seqs, max(SMALL_BATCH_TOKENS, seqs))
        )
    baselines = (
        {}
        if only
        else {
            name: run(steady, base.model_copy(update={"policy": name}), seeds)
            for name in POLICIES
            if name != "class-aware"
        }
    )
    busy = alone_i["interactive_busy"]
    batch_floor = 0.9 * alone_b["batch_tok_s"] * (1 - busy)
    best_baseline = max(baselines.items(), key=lambda kv: kv[1]["goodput_req_s"], default=("none run", {}))
    for row in rows.values():
        row["ttft_p99_vs_alone"] = row["interactive_ttft_p99_ms"] / alone_i["interactive_ttft_p99_ms"]
        row["tpot_p50_vs_alone"] = row["interactive_tpot_p50_ms"] / alone_i["interactive_tpot_p50_ms"]
        row["batch_vs_alone"] = row["batch_tok_s"] / alone_b["batch_tok_s"]
        row["batch_vs_floor"] = row["batch_tok_s"] / batch_floor if batch_floor > 0 else float("inf")
        best = best_baseline[1].get("goodput_req_s")
        row["goodput_vs_best_baseline"] = row["goodput_req_s"] / best if best else float("nan")
    return {
        "model": model,
        "plan": f"{model}.dgx-spark-pair",
        "users": steady.interactive.users,
        "think_time_s": steady.interactive.think_time_s,
        "duration_s": duration_s,
        "seeds": seeds,
        "batch_load": batch_load,
        "alone": {"interactive": alone_i, "batch": alone_b},
        "interactive_busy_alone": busy,
        "batch_floor_tok_s": batch_floor,
        "batch_step_ms": steps,
        "best_baseline": best_baseline[0],
        "settings": rows,
        "baselines": baselines,
    }


def steps_line(report: dict[str, object]) -> str:
    """The batch step times beside the interactive TTFT they delay (a freeze waits for one step)."""
    steps, alone = report["batch_step_ms"], report["alone"]
    assert isinstance(steps, dict) and isinstance(alone, dict)
    told = "; ".join(
        f"{name}: {ms['decode']:.0f} ms decoding, {ms['decode_and_prefill']:.0f} ms with a prompt chunk"
        for name, ms in steps.items()
    )
    ttft = alone["interactive"]["interactive_ttft_p99_ms"]
    return f"Batch step at full batch (perf model, alone): {told}. Interactive TTFT p99 alone: {ttft:.0f} ms."


def ratio(value: float) -> str:
    """A ratio for the tables; "-" where there is none (no baseline policy was run)."""
    return "-" if math.isnan(value) else f"{value:.2f}x"


def markdown(report: dict[str, object]) -> str:
    rows = report["settings"]
    assert isinstance(rows, dict)
    lines = [
        f"**{report['model']}**, {report['users']} chat users thinking {report['think_time_s']:g} s, "
        f"batch {report['batch_load']} "
        f"(interactive busy share alone {report['interactive_busy_alone']:.2f}; "
        f"best baseline by goodput: {report['best_baseline']})",
        "",
        steps_line(report),
        "",
        "| class-aware, arbitration | int. TTFT p99 / alone | int. TPOT p50 / alone | batch tok/s / alone | "
        "batch / floor | goodput / best baseline | batch frozen | forced resumes | batch step p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['ttft_p99_vs_alone']:.2f}x | {r['tpot_p50_vs_alone']:.2f}x | {r['batch_vs_alone']:.2f}x | "
            f"{r['batch_vs_floor']:.2f}x | {ratio(r['goodput_vs_best_baseline'])} | {r['batch_frozen']:.2f} | "
            f"{r['forced_resumes']:.0f} | {r['batch_step_p99_ms']:.0f} ms |"
        )
    return "\n".join(lines)


def curve(ax: Any, rows: dict[str, dict[str, float]], prefix: str, style: str, label: str) -> None:
    """The rows named `prefix`..., as a line of TTFT p99 against batch output, each point labelled."""
    points = [(name.removeprefix(prefix), rows[name]) for name in rows if name.startswith(prefix)]
    ax.plot([r["batch_vs_alone"] for _, r in points], [r["ttft_p99_vs_alone"] for _, r in points], style, label=label)
    for name, r in points:
        ax.annotate(name, (r["batch_vs_alone"], r["ttft_p99_vs_alone"]), fontsize=8)


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
        curve(ax, rows, "freeze ", "o-", "freeze, along the starvation bound (max/release s)")
        curve(ax, rows, "freeze, batch of ", "d--", "freeze 10/2.5, a smaller batch step (max_num_seqs)")
        curve(ax, rows, "bounded ", "v-.", "bounded step: freeze + batch cap + step budget")
        curve(ax, rows, "running cap ", "x:", "freeze 30/2.5 + running cap (idealised), settle")
        curve(ax, rows, "max_num_seqs ", "p--", "freeze 30/2.5 + the batch engine's max_num_seqs, budget 512")
        for name, marker in (("off", "s"), ("admission yielding", "^"), ("freeze", "*")):
            if name not in rows:
                continue
            r = rows[name]
            ax.plot(r["batch_vs_alone"], r["ttft_p99_vs_alone"], marker, markersize=10, label=name)
        busy = float(report["interactive_busy_alone"])  # type: ignore[arg-type]
        ax.axhline(1.5, color="grey", linestyle="--", linewidth=0.8, label="TTFT target 1.5x")
        ax.axvline(0.9 * (1 - busy), color="grey", linestyle=":", linewidth=0.8, label="batch floor")
        ax.set_xlabel("batch output tok/s / batch alone")
        ax.set_ylabel("interactive TTFT p99 / interactive alone")
        ax.set_title(
            f"{report['model']}, {report['users']} chat users thinking {report['think_time_s']:g} s, "
            f"batch {report['batch_load']}, simulated Spark pair",
            fontsize=9,
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["gpt-oss-120b", "llama-3.1-8b"])
    parser.add_argument(
        "--loads", type=chat_load, nargs="+", default=[{}], help="chat loads: plan, or USERS:THINK_S (e.g. 20:60)"
    )
    parser.add_argument("--batch-load", choices=sorted(BATCH_LOADS), default="half")
    parser.add_argument(
        "--only", nargs="+", default=[], help="run only the rows whose names start so (and no baseline policies)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument(
        "--combine", type=Path, nargs="+", help="simulate nothing: combine these results files (runs per model)"
    )
    args = parser.parse_args()
    if args.combine:
        reports = [report for path in args.combine for report in json.loads(path.read_text())]
    else:
        reports = [
            model_report(model, args.duration, args.seeds, load, args.batch_load, tuple(args.only))
            for load in args.loads
            for model in args.models
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reports, indent=1) + "\n")
    plot(reports, args.chart)
    for report in reports:
        print(markdown(report), end="\n\n")
    print(f"results: {args.out}, chart: {args.chart}")


if __name__ == "__main__":
    main()
