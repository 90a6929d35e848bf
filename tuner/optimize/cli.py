"""`tuner optimize`: per-class Bayesian search of layouts and engine settings; writes a ServingPlan.

Exit codes: 0 with a plan written, 1 when no usable plan came out (no feasible trial: the
message says why), 2 for bad input (unknown model or cluster, a cluster that cannot hold the
model, malformed SLOs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import optuna
import typer
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from deploy.plan import PlanError
from tuner.optimize.compose import INFEASIBLE, NoFeasibleTrial
from tuner.optimize.objectives import parse_slo
from tuner.optimize.request import DEFAULT_STORAGE, OptimizeRequest, OptimizeResult, SplitRequest, SplitResult
from tuner.optimize.runner import Reporter, optimize
from tuner.optimize.split import optimize_split
from tuner.optimize.targets import BUILT_IN_TARGETS, TargetError
from tuner.workloads import WORKLOADS

optimize_app = typer.Typer(help="Tune layouts and engine settings per traffic class and write a deployable plan.")
console = Console(stderr=True)


class ProgressReporter(Reporter):
    """A rich progress bar per phase, a line per infeasible trial."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def phase(self, label: str, total: int) -> None:
        self.tasks[label] = self.progress.add_task(label, total=total)

    def trial(self, label: str, trial: FrozenTrial) -> None:
        self.progress.advance(self.tasks[label])
        if trial.user_attrs.get(INFEASIBLE):
            self.progress.console.print(
                f"[yellow]{label} trial {trial.number} infeasible:[/] {trial.user_attrs[INFEASIBLE]}"
            )
        elif trial.state == TrialState.COMPLETE and "live" in label:
            self.progress.console.print(
                f"{label} trial {trial.number}: {trial.user_attrs.get('candidate')} -> {trial.values}"
            )


def _slo(text: str | None, option: str) -> dict | None:
    if text is None:
        return None
    try:
        return parse_slo(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _table(result: OptimizeResult) -> Table:
    table = Table(title=f"tuner optimize: {result.model} on {result.cluster} ({result.evaluate})")
    for column in (
        "class",
        "trials",
        "infeasible",
        "chosen",
        "TTFT p90 ms",
        "TPOT p50 ms",
        "output tok/s",
        "vs template",
    ):
        table.add_column(column, justify="left" if column in ("class", "chosen", "vs template") else "right")
    for name, summary in result.classes.items():
        m = summary.chosen.measured
        ratio = ", ".join(f"{k.removesuffix('_ms')} x{v:.2f}" for k, v in summary.baseline_ratio.items()) or "-"
        table.add_row(
            name,
            str(summary.trials),
            str(summary.infeasible),
            summary.chosen.settings,
            f"{m.ttft_p90_ms:,.1f}",
            f"{m.tpot_p50_ms:,.2f}",
            f"{m.output_tok_s:,.1f}",
            ratio,
        )
    return table


def _shares(text: str | None) -> dict[str, float]:
    """`a=0.7,b=0.3` -> {'a': 0.7, 'b': 0.3}; anything else is bad input."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, number = part.rpartition("=")
        try:
            value: float | None = float(number)
        except ValueError:
            value = None
        if not name.strip() or value is None:
            raise typer.BadParameter(f"bad share {part!r}: expected MODEL=FRACTION", param_hint="--share")
        shares[name.strip()] = value
    return shares


def _split_request(
    models: list[str], memory_per_box: float | None, share: str | None, base: OptimizeRequest
) -> SplitRequest:
    try:
        return SplitRequest(models=models, memory_per_box_gb=memory_per_box, traffic_shares=_shares(share), base=base)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def _split_table(result: SplitResult) -> Table:
    title = (
        f"tuner optimize: {' + '.join(result.models)} on {result.cluster}, {result.memory_per_box_gb:.1f} GB per box"
    )
    table = Table(title=title)
    for column in ("assignment", "GB per box", "score", "verdict"):
        table.add_column(column, justify="right" if column in ("GB per box", "score") else "left")
    for a in result.alternatives:
        table.add_row(a.label(), f"{a.gb_per_box:.1f}", "-" if a.score is None else f"{a.score:.3f}", a.verdict)
    return table


@optimize_app.callback(invoke_without_command=True)
def optimize_command(
    model: Annotated[
        list[str],
        typer.Option(
            help="Model alias (llama-3.1-8b, gpt-oss-20b, ...), hub id, local HF dir, or 'demo'. Repeat it to "
            "split the cluster between several models (one plan serving them all)."
        ),
    ],
    cluster: Annotated[
        str, typer.Option(help=f"{' | '.join(BUILT_IN_TARGETS)} | a cluster-target YAML file.")
    ] = "dgx-spark-pair",
    hardware: Annotated[
        str | None,
        typer.Option(
            help="Performance-model profile, by name or file (tuner probe-link writes one); default: the cluster's."
        ),
    ] = None,
    build: Annotated[
        str | None,
        typer.Option(
            help="vLLM build the performance model prices (MoE kernels, host overlap); default: the hardware's."
        ),
    ] = None,
    evaluate: Annotated[
        str, typer.Option(help="model: the performance model (seconds); live: deploy and bench each trial.")
    ] = "model",
    trials: Annotated[int, typer.Option(min=1, help="Trials per class (a resumed study counts the ones it has).")] = 40,
    workload: Annotated[str, typer.Option(help=f"Request shape: {', '.join(WORKLOADS)}.")] = "equal",
    slo: Annotated[str | None, typer.Option(help="Batch SLOs, e.g. tpot_p99:200,ttft_p99:10000 (the default).")] = None,
    interactive_slo: Annotated[str | None, typer.Option(help="Optional interactive SLOs, e.g. ttft_p90:1000.")] = None,
    interactive_concurrency: Annotated[
        int, typer.Option(min=1, help="Concurrency the interactive class is judged at.")
    ] = 4,
    batch_concurrency: Annotated[int, typer.Option(min=1, help="Concurrency the batch class is judged at.")] = 64,
    storage: Annotated[
        str, typer.Option(help="Optuna storage URL; the same one resumes the studies.")
    ] = DEFAULT_STORAGE,
    out: Annotated[Path, typer.Option(help="Folder for the plan and the report.")] = Path("plans"),
    seed: Annotated[int, typer.Option(help="Sampler seed (model-evaluated studies are reproducible with it).")] = 0,
    routing_trials: Annotated[
        int, typer.Option(min=0, help="Simulated trials for the spill thresholds (0: keep the template's).")
    ] = 20,
    arbitration_trials: Annotated[
        int,
        typer.Option(
            min=0, help="Simulated trials for GPU arbitration of co-resident replicas (0: keep the template's)."
        ),
    ] = 24,
    arbitration_batch_load: Annotated[
        str, typer.Option(help="Batch load the arbitration study runs beside the chat team: saturating or half.")
    ] = "saturating",
    arbitration_live_url: Annotated[
        str | None,
        typer.Option(
            help="Score the arbitration study live on the stack behind this gateway URL (routing switched per "
            "trial through /admin/routing, restored after; admin key from TANDEM_ADMIN_KEY)."
        ),
    ] = None,
    arbitration_live_duration: Annotated[
        float, typer.Option(min=1, help="Live arbitration: seconds per measured phase (the references, each trial).")
    ] = 600.0,
    warm_start: Annotated[int, typer.Option(min=0, help="Live: model-ranked points tried first.")] = 2,
    live_requests: Annotated[int, typer.Option(min=1, help="Live: measured requests per trial (at most).")] = 64,
    live_duration: Annotated[
        float, typer.Option(min=1, help="Live: longest measured phase per trial, seconds.")
    ] = 60.0,
    trial_timeout: Annotated[
        float, typer.Option(min=1, help="Live: a trial not started and measured by then is infeasible.")
    ] = 600.0,
    ray_address: Annotated[
        str | None, typer.Option(help="Live: join this Ray cluster instead of starting a local one.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    memory_per_box: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Several models: GB each box gives every engine of every model; default: the template's share.",
        ),
    ] = None,
    share: Annotated[
        str | None, typer.Option(help="Several models: traffic share per model, e.g. gpt-oss-20b=0.7,llama-3.1-8b=0.3.")
    ] = None,
) -> None:
    """Find the best layout and engine settings per traffic class; write plans/<model>.<cluster>.yaml.
    With several --model: split the cluster between them; write plans/<model>+<model>.<cluster>.yaml."""
    if evaluate not in ("model", "live"):
        raise typer.BadParameter("choose model or live", param_hint="--evaluate")
    if workload not in WORKLOADS:
        raise typer.BadParameter(f"choose one of {', '.join(WORKLOADS)}", param_hint="--workload")
    if len(model) == 1 and (memory_per_box is not None or share is not None):
        raise typer.BadParameter("--memory-per-box and --share split several models: give --model twice or more")
    if len(model) > 1 and evaluate == "live":
        raise typer.BadParameter(
            "several models are split with the performance model: tune each alone with --evaluate live",
            param_hint="--evaluate",
        )
    request = OptimizeRequest(
        model=model[0],
        cluster=cluster,
        hardware=hardware,
        build=build,
        evaluate=evaluate,
        trials=trials,
        workload=workload,
        batch_slo=_slo(slo, "--slo"),
        interactive_slo=_slo(interactive_slo, "--interactive-slo") or {},
        interactive_concurrency=interactive_concurrency,
        batch_concurrency=batch_concurrency,
        storage=storage,
        out=out,
        seed=seed,
        routing_trials=routing_trials,
        arbitration_trials=arbitration_trials,
        arbitration_batch_load=arbitration_batch_load,
        arbitration_live_url=arbitration_live_url,
        arbitration_live_duration_s=arbitration_live_duration,
        warm_start=warm_start,
        live_requests=live_requests,
        live_duration_s=live_duration,
        trial_timeout_s=trial_timeout,
        ray_address=ray_address,
    )
    split = _split_request(model, memory_per_box, share, request) if len(model) > 1 else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=json_output,
    )
    try:
        with progress:
            result: OptimizeResult | SplitResult = (
                optimize(request, ProgressReporter(progress))
                if split is None
                else optimize_split(split, ProgressReporter(progress))
            )
    except (TargetError, PlanError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except NoFeasibleTrial as exc:
        console.print(f"[red]no plan written:[/] {exc}")
        raise typer.Exit(1) from None
    if json_output:
        # Flushed now: after a live run, Ray's leftover threads can end the interpreter abruptly.
        print(result.model_dump_json(indent=2), flush=True)
        return
    Console().print(_table(result) if isinstance(result, OptimizeResult) else _split_table(result))
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"plan: {result.plan_path}\nreport: {result.report_path}")
