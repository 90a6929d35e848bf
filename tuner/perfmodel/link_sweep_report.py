"""`tuner predict --link-sweep`: the sweep of link_sweep.py as a table and a plot.

Rows are links (the TP link's latency scaled, then its bandwidth scaled); columns are the
concurrencies; each cell is PP/TP output tok/s and TP/PP TPOT (above 1: PP=2 wins). The link the
profile holds is marked `measured` when `tuner probe-link` wrote it (and the shipped profile it
was measured against adds a `nominal` row), else `nominal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tuner.perfmodel.architecture import ModelArchitecture
from tuner.perfmodel.collectives import LinkProfile
from tuner.perfmodel.engine import EngineProfile, EngineSettings
from tuner.perfmodel.figures import save_figure
from tuner.perfmodel.hardware import HardwareProfile, load_hardware, with_link
from tuner.perfmodel.link_sweep import LayoutRow, SweepPoint, compare_layouts, sweep_link
from tuner.workloads import Workload


def reference_links(hardware: HardwareProfile) -> dict[str, LinkProfile]:
    """The links to mark: the profile's own (measured or nominal) and, for a measured profile, its
    base's nominal one."""
    own = hardware.link_for(2)
    if own is None:
        raise ValueError(f"hardware {hardware.name!r} has fewer than two devices: nothing to sweep")
    if own.measured is None:
        return {"nominal": own}
    marks = {"measured": own}
    if hardware.base:
        nominal = load_hardware(hardware.base).link_for(2)
        if nominal is not None:
            marks["nominal"] = nominal
    return marks


def _cell(rate: float | None, tpot: float | None) -> str:
    if rate is None or tpot is None:
        return "does not fit"
    return f"{rate:.2f} | {tpot:.2f}" + (" PP" if rate > 1 else "")


def run_link_sweep(
    model: ModelArchitecture,
    hardware: HardwareProfile,
    workload: Workload,
    levels: Sequence[int],
    settings: EngineSettings | None,
    engine: EngineProfile,
    plot: Path | None,
) -> list[SweepPoint]:
    """Print the sweep (and plot it when `plot` is given); returns the points."""
    marks = reference_links(hardware)

    def compare(on: HardwareProfile) -> list[LayoutRow]:
        return compare_layouts(model, on, workload, levels, settings, engine)

    points = sweep_link(hardware, compare)
    table = Table(
        title=(
            f"{model.name} on {hardware.name}, in {workload.input_len} / out {workload.output_len}: "
            "PP/TP output tok/s | TP/PP TPOT (above 1: PP=2 wins)"
        )
    )
    table.add_column("link", no_wrap=True)
    table.add_column("8 KB all-reduce us", justify="right")
    table.add_column("GB/s", justify="right")
    for c in levels:
        table.add_column(f"C={c}", justify="right")
    for label, link in marks.items():
        rows = compare(with_link(hardware, 2, link))
        table.add_row(
            label,
            f"{link.allreduce.small_message_latency_us:.1f}",
            f"{link.allreduce.large_message_bandwidth_gbs:.2f}",
            *(_cell(rate, tpot) for _, rate, tpot in rows),
        )
    for axis in ("latency", "bandwidth"):
        row_keys = sorted({p.scale for p in points if p.axis == axis})
        for scale in row_keys:
            cells = [p for p in points if p.axis == axis and p.scale == scale]
            table.add_row(
                f"{axis} x{scale:g}",
                f"{cells[0].latency_us:.1f}",
                f"{cells[0].bandwidth_gbs:.2f}",
                *(_cell(p.pp_over_tp_throughput, p.tp_over_pp_tpot) for p in cells),
            )
    Console().print(table)
    if plot is not None:
        _plot(
            points, marks, levels, plot, f"{model.name} on {hardware.name} ({workload.input_len}/{workload.output_len})"
        )
    return points


def _plot(
    points: list[SweepPoint], marks: dict[str, LinkProfile], levels: Sequence[int], path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey="row")
    for col, axis in enumerate(("latency", "bandwidth")):
        for row, metric in enumerate(("pp_over_tp_throughput", "tp_over_pp_tpot")):
            ax = axes[row][col]
            for c in levels:
                series = [p for p in points if p.axis == axis and p.concurrency == c]
                xs = [p.latency_us if axis == "latency" else p.bandwidth_gbs for p in series]
                ax.plot(xs, [getattr(p, metric) for p in series], marker="o", label=f"C={c}")
            for label, link in marks.items():
                x = (
                    link.allreduce.small_message_latency_us
                    if axis == "latency"
                    else link.allreduce.large_message_bandwidth_gbs
                )
                ax.axvline(x, linestyle="--", color="k" if label == "nominal" else "tab:red", alpha=0.7)
                ax.annotate(label, (x, 1), textcoords="offset points", xytext=(3, 5), fontsize=8)
            ax.axhline(1.0, color="grey", linewidth=0.8)
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            ax.set_xlabel("8 KB all-reduce, us" if axis == "latency" else "large-message all-reduce, GB/s")
            ax.set_ylabel("PP/TP output tok/s" if row == 0 else "TP/PP TPOT")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{title}: above 1, PP=2 wins (predicted)")
    save_figure(fig, path, dpi=110)
