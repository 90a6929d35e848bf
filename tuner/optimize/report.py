"""The run's report: a Markdown page and one PNG (Pareto front, TP vs PP throughput, trial history)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from gateway.contract.config import BatchYieldSettings, SpillRules

if TYPE_CHECKING:
    from gateway.contract.config import TrafficClass
    from tuner.optimize.evaluators import ModelEvaluator
    from tuner.optimize.request import OptimizeRequest, OptimizeResult, SplitResult
    from tuner.optimize.space import SearchSpace

CONCURRENCY_AXIS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _best_by_layout_kind(study: optuna.Study, space: SearchSpace) -> dict[str, optuna.trial.FrozenTrial]:
    """The fastest completed batch trial of each multi-GPU kind: TP > 1, PP > 1, and EP."""
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        layout = space.from_params(trial.params).layout
        kind = "EP" if layout.ep else "TP" if layout.tp > 1 else "PP" if layout.pp > 1 else None
        if kind and (kind not in best or trial.values[0] > best[kind].values[0]):
            best[kind] = trial
    return best


def write_plot(
    path: Path,
    studies: dict[TrafficClass, optuna.Study],
    predictor: ModelEvaluator | None,
    spaces: dict[TrafficClass, SearchSpace],
    chosen_interactive: int,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (front_ax, scale_ax, history_ax) = plt.subplots(1, 3, figsize=(16, 4.8))
    interactive = studies["interactive"]
    done = interactive.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in interactive.best_trials}
    front_ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], s=12, c="lightgray", label="trials")
    on_front = sorted((t for t in done if t.number in front), key=lambda t: t.values[0])
    front_ax.plot(
        [t.values[0] for t in on_front], [t.values[1] for t in on_front], "o-", c="tab:blue", label="Pareto front"
    )
    chosen = next(t for t in done if t.number == chosen_interactive)
    front_ax.scatter([chosen.values[0]], [chosen.values[1]], s=120, marker="*", c="tab:red", zorder=3, label="chosen")
    front_ax.set(title="Interactive: Pareto front", xlabel="TTFT p90 (ms)", ylabel="TPOT p50 (ms)")
    front_ax.legend()

    batch_space = spaces["batch"]
    if predictor is not None:
        for kind, trial in _best_by_layout_kind(studies["batch"], batch_space).items():
            candidate = batch_space.from_params(trial.params)
            points = [(c, predictor.predict(candidate, c).output_tok_s) for c in CONCURRENCY_AXIS]
            scale_ax.plot(
                [c for c, v in points if v],
                [v for _, v in points if v],
                "o-",
                label=f"best {kind}: {candidate.label()}",
            )
        scale_ax.set(
            xscale="log", title="Batch: throughput vs concurrency (model)", xlabel="concurrency", ylabel="output tok/s"
        )
        scale_ax.legend(fontsize=7)
    else:
        scale_ax.text(0.5, 0.5, "no performance-model profile\nfor this cluster", ha="center", va="center")
        scale_ax.set_axis_off()

    batch = studies["batch"].get_trials(deepcopy=False)
    best_so_far, running = [], 0.0
    for trial in batch:
        if trial.state == TrialState.COMPLETE and not any(c > 0 for c in trial.constraints.values()):
            running = max(running, trial.values[0])
        best_so_far.append(running)
    xs = [t.number for t in batch]
    history_ax.scatter(
        [t.number for t in batch if t.state == TrialState.COMPLETE],
        [t.values[0] for t in batch if t.state == TrialState.COMPLETE],
        s=12,
        c="gray",
        label="trial",
    )
    history_ax.step(xs, best_so_far, where="post", c="tab:green", label="best meeting SLOs")
    history_ax.set(title="Batch: trial history", xlabel="trial", ylabel="output tok/s")
    history_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(result: OptimizeResult, png_name: str) -> str:
    lines = [
        f"# tuner optimize: {result.model} on {result.cluster}",
        "",
        f"Evaluator: **{result.evaluate}**, workload `{result.workload}`, studies in `{result.storage}`. "
        f"Plan: `{result.plan_path}`.",
        "",
        "| class | objective | trials (infeasible) | chosen | TTFT p90 ms | TPOT p50 ms | output tok/s | vs template |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in result.classes.items():
        m = summary.chosen.measured
        ratio = ", ".join(f"{k.removesuffix('_ms')} x{v:.2f}" for k, v in summary.baseline_ratio.items()) or "-"
        lines.append(
            f"| {name} | {summary.objective} | {summary.trials} ({summary.infeasible}) | {summary.chosen.settings} | "
            f"{_fmt(m.ttft_p90_ms)} | {_fmt(m.tpot_p50_ms)} | {_fmt(m.output_tok_s)} | {ratio} |"
        )
    errors = {name: s.model_error for name, s in result.classes.items() if s.model_error}
    if errors:
        lines += ["", "## How far the model was off (median measured / predicted over live trials)", ""]
        lines += ["| class | TTFT p90 | TPOT p50 | output tok/s |", "|---|---|---|---|"]
        for name, error in errors.items():
            lines.append(
                f"| {name} | {error['ttft_p90_ms']:.2f} | {error['tpot_p50_ms']:.2f} | {error['output_tok_s']:.2f} |"
            )
    routing = result.routing
    spill = SpillRules.model_validate(routing["spill"])
    yielding = BatchYieldSettings.model_validate(routing["yielding"])
    lines += [
        "",
        "## Routing",
        "",
        f"spill queue_threshold {spill.queue_threshold}, release_threshold {spill.release_threshold}, "
        f"target_headroom {spill.target_headroom}; batch yielding fraction {yielding.fraction:g}, "
        f"max_hold_s {yielding.max_hold_s:g} "
        f"({'tuned on the simulator' if routing.get('tuned') else 'kept from the template'}).",
    ]
    front = result.classes["interactive"].pareto_front
    if front:
        lines += ["", "## Interactive Pareto front", "", "| trial | TTFT p90 ms | TPOT p50 ms |", "|---|---|---|"]
        lines += [f"| {int(p['trial'])} | {p['ttft_p90_ms']:.1f} | {p['tpot_p50_ms']:.2f} |" for p in front]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    lines += ["", f"![report]({png_name})", ""]
    return "\n".join(lines)


def write_report(
    result: OptimizeResult,
    studies: dict[TrafficClass, optuna.Study],
    predictor: ModelEvaluator | None,
    spaces: dict[TrafficClass, SearchSpace],
    request: OptimizeRequest,
) -> Path:
    stem = f"{result.model}.{result.cluster}.report"
    png = write_plot(
        request.out / f"{stem}.png", studies, predictor, spaces, result.classes["interactive"].chosen.trial
    )
    path = request.out / f"{stem}.md"
    path.write_text(markdown(result, png.name))
    return path


SCORING = (
    "Per model, weighted by its traffic share: half the batch figure plus half the chat figure. Batch: the "
    "predicted output tok/s of what serves the model's batch class (its batch replica, or its single replica) at "
    "the batch concurrency, over the fastest batch point its study found. Chat: its interactive replica's TPOT p50 "
    "serving chat alone, over its TPOT here (1.0 for a pair; a single replica decodes chat in the steps its batch "
    "work fills: TPOT at chat + batch concurrency). Memory: every engine counts on every box it may share, at its "
    "share of the box (weights + runtime reserve + KV cache, tuner/plan_fit.py)."
)


def split_markdown(result: SplitResult) -> str:
    """The report of a run over several models: the split, how it was scored, every alternative."""
    chosen = result.chosen
    lines = [
        f"# tuner optimize: {' + '.join(result.models)} on {result.cluster}",
        "",
        f"Memory budget **{result.memory_per_box_gb:.1f} GB per box** for every engine of every model. Evaluator: "
        f"**model**, workload `{result.workload}`, studies in `{result.storage}`. Plan: `{result.plan_path}`.",
        "",
        f"## The split: {chosen.label()}",
        "",
        f"Score {chosen.score:.3f} of 1, {chosen.gb_per_box:.1f} GB per box.",
        "",
        "| model | role | traffic share | replicas | GB per box | batch tok/s (x best) | chat TPOT ms (x alone) | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in chosen.models:
        replicas = "<br>".join(
            f"{name}: {settings} (trial {m.trials[name]}"
            + (
                f", at share {m.share_from[name]:.2f} there; here the fit check's minimum"
                if name in m.share_from
                else ""
            )
            + ")"
            for name, settings in m.replicas.items()
        )
        lines.append(
            f"| {m.model} | {m.role} | {m.traffic_share:.2f} | {replicas} | {m.gb_per_box:.1f} | "
            f"{m.batch_tok_s:,.0f} (x{m.batch_ratio:.2f}) | {m.chat_tpot_ms:.1f} (x{m.chat_ratio:.2f}) | {m.score:.3f} |"
        )
    lines += ["", "## How the split is scored", "", SCORING, "", "## Every assignment", ""]
    lines += ["| assignment | fits | GB per box | score | verdict |", "|---|---|---|---|---|"]
    for a in result.alternatives:
        score = "-" if a.score is None else f"{a.score:.3f}"
        lines.append(f"| {a.label()} | {'yes' if a.fits else 'no'} | {a.gb_per_box:.1f} | {score} | {a.verdict} |")
    lines += ["", "## Class studies", ""]
    lines += [
        "| model | class | objective | trials (infeasible) | chosen trial | TTFT p90 ms | TPOT p50 ms | output tok/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, classes in result.classes.items():
        for name, summary in classes.items():
            figures = summary.chosen.measured
            lines.append(
                f"| {model} | {name} | {summary.objective} | {summary.trials} ({summary.infeasible}) | "
                f"{summary.chosen.trial}: {summary.chosen.settings} | {_fmt(figures.ttft_p90_ms)} | "
                f"{_fmt(figures.tpot_p50_ms)} | {_fmt(figures.output_tok_s)} |"
            )
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def write_split_report(result: SplitResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(split_markdown(result))
    return path
