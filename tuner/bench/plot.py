"""Charts of sweeps: output tok/s, TTFT and TPOT against load, one line per results file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
from matplotlib.ticker import ScalarFormatter

from tuner.bench.results import BenchResult, ResultSet

Stat = Literal["mean", "median", "p90", "p99"]


def _points(result_set: ResultSet) -> tuple[str, list[BenchResult]]:
    """The set's load axis and its runs sorted along it; mixed-traffic runs have no such axis."""
    axes = {run.sweep_point[0] for run in result_set.runs if run.sweep_point is not None}
    if len(axes) != 1 or any(run.sweep_point is None for run in result_set.runs):
        raise ValueError("only single-stream sweeps plot against load (all concurrency or all request rate)")
    return axes.pop(), sorted(result_set.runs, key=_load)


def _load(run: BenchResult) -> float:
    """The run's place on the load axis (concurrency or request rate)."""
    if run.sweep_point is None:
        raise ValueError("a mixed-traffic run has no place on a load axis")
    return run.sweep_point[1]


def plot_results(sets: dict[str, ResultSet], output: Path, *, stat: Stat = "median") -> Path:
    """Write one PNG with three panels; ``sets`` maps a line label to its results."""
    axis_names = set()
    figure, (throughput, ttft, tpot) = plt.subplots(1, 3, figsize=(16, 4.8), constrained_layout=True)
    for label, result_set in sets.items():
        axis, runs = _points(result_set)
        axis_names.add(axis)
        x = [_load(run) for run in runs]
        style = {"marker": "o", "label": label}
        throughput.plot(x, [run.overall.output_throughput for run in runs], **style)
        ttft.plot(x, [getattr(run.overall.ttft_ms, stat, float("nan")) for run in runs], **style)
        tpot.plot(x, [getattr(run.overall.tpot_ms, stat, float("nan")) for run in runs], **style)
    if len(axis_names) > 1:
        raise ValueError("cannot draw concurrency sweeps and request-rate sweeps on one axis")
    axis = axis_names.pop()
    for panel, ylabel in ((throughput, "output tokens/s"), (ttft, f"TTFT {stat} (ms)"), (tpot, f"TPOT {stat} (ms)")):
        panel.set_xlabel(axis)
        panel.set_ylabel(ylabel)
        panel.set_xscale("log", base=2)
        panel.xaxis.set_major_formatter(ScalarFormatter())
        panel.set_ylim(bottom=0)
        panel.grid(True, which="both", alpha=0.3)
        panel.legend()
    throughput.set_title("throughput")
    ttft.set_title("time to first token")
    tpot.set_title("time per output token")
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output
