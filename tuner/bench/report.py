"""The terminal view of results: one table row per run and traffic class, errors spelled out."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from tuner.bench.metrics import LatencyStats, Metrics
from tuner.bench.results import BenchResult


def _ms(stats: LatencyStats | None, field: str) -> str:
    return "-" if stats is None else f"{getattr(stats, field):,.1f}"


def _rows(result: BenchResult) -> Iterable[tuple[str, str, Metrics]]:
    """The whole run, then each traffic class with its own load when the run mixes several."""
    streams = result.config.streams
    yield (streams[0].load.label if len(streams) == 1 else "mix"), "all", result.overall
    loads: dict[str | None, str] = {stream.traffic_class: stream.load.label for stream in streams}
    for name, metrics in result.by_class.items():
        yield (loads[name] if len(streams) > 1 else ""), name, metrics


def results_table(results: Iterable[BenchResult], *, title: str = "tuner bench") -> Table:
    results = list(results)
    with_slo = any(r.config.slo is not None for r in results)
    table = Table(title=f"{title} (latencies in ms)", header_style="bold", title_justify="left")
    for name in ("load", "class"):
        table.add_column(name, no_wrap=True)
    for name in (
        "ok/sent",
        "req/s",
        "tok/s out",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "ITL p50",
        "E2EL p50",
    ):
        table.add_column(name, justify="right")
    if with_slo:
        table.add_column("good req/s", justify="right")
        table.add_column("SLO met", justify="right")
    for result in results:
        for load, name, m in _rows(result):
            row = [
                load,
                name,
                f"{m.completed}/{m.requests}",
                f"{m.request_throughput:,.2f}",
                f"{m.output_throughput:,.1f}",
                _ms(m.ttft_ms, "median"),
                _ms(m.ttft_ms, "p99"),
                _ms(m.tpot_ms, "median"),
                _ms(m.tpot_ms, "p99"),
                _ms(m.itl_ms, "median"),
                _ms(m.e2el_ms, "median"),
            ]
            if with_slo:
                row += [
                    "-" if m.request_goodput is None else f"{m.request_goodput:,.2f}",
                    "-" if m.slo_attainment is None else f"{m.slo_attainment:.0%}",
                ]
            table.add_row(*row, style="red" if m.failed else None)
    return table


def print_report(results: Iterable[BenchResult], console: Console) -> None:
    """The table, then one line per error type with a sample message, then the workload."""
    results = list(results)
    console.print(results_table(results))
    for result in results:
        for error_type, count in result.overall.errors.items():
            sample = result.overall.error_samples.get(error_type, "")
            console.print(f"[red]{result.config.load_label}: {count} x {error_type}[/red]: {sample}")
        if result.warmup.failed:
            console.print(
                f"[yellow]{result.config.load_label}: {result.warmup.failed}/{result.warmup.requests} warm-up requests failed[/yellow]"
            )
    if results:
        m = results[0].overall
        if m.mean_input_tokens is not None and m.mean_output_tokens is not None:
            merged = f"; {m.tokens_per_event:.2f} tokens per stream event" if m.tokens_per_event else ""
            console.print(
                f"tokens per request (server usage): {m.mean_input_tokens:,.0f} in / {m.mean_output_tokens:,.0f} out"
                + merged
            )
