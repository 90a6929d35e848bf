"""`tuner predict`: the performance model's figures for one layout, or every feasible layout side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tuner.perfmodel.architecture import ModelArchitecture, resolve_model
from tuner.perfmodel.build import known_builds
from tuner.perfmodel.engine import EngineSettings, known_engines, load_engine
from tuner.perfmodel.figures import save_figure
from tuner.perfmodel.hardware import HardwareProfile, known_hardware, load_hardware
from tuner.perfmodel.link_sweep_report import run_link_sweep
from tuner.perfmodel.predict import Layout, Prediction, build_replica, predict_replica
from tuner.perfmodel.terms import Term, replica_terms
from tuner.workloads import WORKLOADS, Workload, get_workload

predict_app = typer.Typer(help="Predict TP/PP latency and throughput from first principles (runs nothing).")


def candidate_layouts(hardware: HardwareProfile, model: ModelArchitecture | None = None) -> list[Layout]:
    """The layouts worth comparing on a two-device budget: one device alone, TP=2, PP=2, and for a
    MoE model EP=2 (vLLM's enable_expert_parallel over the two TP ranks)."""
    layouts = [Layout()]
    if hardware.devices >= 2:
        layouts += [Layout(tp=2), Layout(pp=2)]
        if model is not None and model.is_moe:
            layouts.append(Layout(tp=2, ep=True))
    return layouts


def _concurrencies(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise typer.BadParameter("concurrency values must be positive integers")
    return values


@predict_app.callback(invoke_without_command=True)
def predict_command(
    model: Annotated[str, typer.Option(help="Model alias, hub id, or local HF model directory.")],
    hardware: Annotated[
        str,
        typer.Option(help=f"Hardware profile: {', '.join(known_hardware())}, or a profile file (tuner probe-link)."),
    ] = "dgx-spark-pair",
    tp: Annotated[int | None, typer.Option(min=1, help="Tensor parallel size (omit both to compare layouts).")] = None,
    pp: Annotated[int | None, typer.Option(min=1, help="Pipeline parallel size.")] = None,
    ep: Annotated[
        bool, typer.Option("--ep", help="Expert parallel over the TP ranks (MoE models, with --tp).")
    ] = False,
    build: Annotated[
        str | None,
        typer.Option(
            help=f"vLLM build: {', '.join(known_builds())}, or none for bytes, FLOPs and the link alone "
            "(default: the hardware's default_build)."
        ),
    ] = None,
    workload: Annotated[str, typer.Option(help=f"Workload preset: {', '.join(WORKLOADS)}.")] = "equal",
    input_len: Annotated[int | None, typer.Option(min=1, help="Override the preset's prompt length.")] = None,
    output_len: Annotated[int | None, typer.Option(min=1, help="Override the preset's output length.")] = None,
    concurrency: Annotated[str, typer.Option(help="Closed-loop concurrencies, comma-separated.")] = "1,8,32,128",
    engine: Annotated[str, typer.Option(help=f"Engine constants: {', '.join(known_engines())}.")] = "vllm",
    gpu_memory_utilization: Annotated[float, typer.Option(min=0.01, max=1.0)] = 0.9,
    max_num_seqs: Annotated[int | None, typer.Option(min=1)] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per (layout, concurrency).")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of throughput and TPOT vs concurrency.")] = None,
    link_sweep: Annotated[
        bool,
        typer.Option(
            "--link-sweep",
            help="PP/TP throughput and TP/PP TPOT against the TP link's all-reduce latency and bandwidth "
            "(table, and a plot with --plot), marking the nominal and the measured link.",
        ),
    ] = False,
) -> None:
    try:
        arch = resolve_model(model)
        hw = load_hardware(hardware)
        profile = load_engine(engine)
        preset = get_workload(workload)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    shape = Workload(input_len=input_len or preset.input_len, output_len=output_len or preset.output_len)
    levels = _concurrencies(concurrency)
    layouts = candidate_layouts(hw, arch) if tp is None and pp is None else [Layout(tp=tp or 1, pp=pp or 1, ep=ep)]
    settings = EngineSettings(
        gpu_memory_utilization=gpu_memory_utilization,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        build=build,
    )
    if link_sweep:
        try:
            run_link_sweep(arch, hw, shape, levels, settings, profile, plot)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return
    results: dict[str, list[Prediction]] = {}
    terms: dict[str, list[Term]] = {}
    for layout in layouts:
        try:
            replica = build_replica(arch, hw, layout, shape, settings, profile)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        results[layout.name] = [predict_replica(replica, shape, c) for c in levels]
        terms[layout.name] = replica_terms(replica.steps)
    if as_json:
        for rows in results.values():
            for row in rows:
                typer.echo(json.dumps(row.as_row()))
    else:
        _print_table(results, f"{arch.name} on {hw.name}, {engine}, in {shape.input_len} / out {shape.output_len}")
        if len(results) > 1:
            _print_winners(results, levels)
        _print_terms(terms)
    if plot is not None:
        _plot(results, plot, f"{arch.name} on {hw.name} ({shape.input_len}/{shape.output_len})")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _print_table(results: dict[str, list[Prediction]], title: str) -> None:
    table = Table(title=title)
    for column in (
        "layout",
        "concurrency",
        "running",
        "TTFT ms",
        "TPOT ms",
        "output tok/s",
        "req/s",
        "weights GB/dev",
        "max conc.",
    ):
        table.add_column(column, justify="left" if column == "layout" else "right", no_wrap=column == "layout")
    for layout, rows in results.items():
        for r in rows:
            table.add_row(
                layout if r.fits else f"{layout} (does not fit)",
                str(r.concurrency),
                str(r.running),
                _fmt(r.ttft_ms),
                _fmt(r.tpot_ms),
                _fmt(r.output_tok_s),
                _fmt(r.request_s, 3),
                _fmt(r.weights_per_device_gb),
                str(r.max_concurrency),
            )
    Console().print(table)


def _print_winners(results: dict[str, list[Prediction]], levels: list[int]) -> None:
    table = Table(title="Which layout wins")
    for column in ("concurrency", "best throughput", "x runner-up", "best TTFT", "x runner-up"):
        table.add_column(column, justify="right")
    for i, level in enumerate(levels):
        fitting = [rows[i] for rows in results.values() if rows[i].fits]
        if not fitting:
            table.add_row(str(level), "none fits", "-", "-", "-")
            continue
        by_rate = sorted(fitting, key=lambda r: -(r.output_tok_s or 0.0))
        # In a closed loop TPOT ranks as throughput does; time to first token can rank otherwise.
        by_ttft = sorted(fitting, key=lambda r: r.ttft_ms or float("inf"))
        rate_ratio = _ratio(by_rate, lambda r: r.output_tok_s or 0.0, higher=True)
        ttft_ratio = _ratio(by_ttft, lambda r: r.ttft_ms or 0.0, higher=False)
        table.add_row(str(level), by_rate[0].layout, rate_ratio, by_ttft[0].layout, ttft_ratio)
    Console().print(table)


def _print_terms(terms: dict[str, list[Term]]) -> None:
    """The build-dependent terms each layout was priced with, and where each figure comes from."""
    if not any(terms.values()):
        return
    table = Table(title="Terms (docs/perfmodel.md, 'v3'); kind: how far to trust a figure")
    for column in ("layout", "term", "value", "kind", "source"):
        table.add_column(column, overflow="fold")
    shown: set[tuple[str, str]] = set()
    for layout, rows in terms.items():
        for term in rows:
            if (term.name, term.value) in shown:  # the same figure for every layout: print it once
                continue
            shown.add((term.name, term.value))
            table.add_row(layout, term.name, term.value, term.kind, term.source)
    Console().print(table)


def _ratio(ranked: list[Prediction], metric, higher: bool) -> str:
    if len(ranked) < 2:
        return "-"
    best, second = metric(ranked[0]), metric(ranked[1])
    ratio = best / second if higher else second / best
    return f"{ratio:.2f}x vs {ranked[1].layout}"


def _plot(results: dict[str, list[Prediction]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, tpot_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for layout, rows in results.items():
        fitting = [r for r in rows if r.fits]
        xs = [r.concurrency for r in fitting]
        rate_ax.plot(xs, [r.output_tok_s for r in fitting], marker="o", label=layout)
        tpot_ax.plot(xs, [r.tpot_ms for r in fitting], marker="o", label=layout)
    for ax, label in ((rate_ax, "output tok/s"), (tpot_ax, "TPOT ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{title} - predicted, not measured")
    save_figure(fig, path)
