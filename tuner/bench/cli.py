"""`tuner bench`: load-test an OpenAI-compatible endpoint; `tuner bench plot`: chart results.

Exit codes: 0 when every run completed at least one request, 1 when a run completed none
(its results are still written), 2 for bad arguments.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tuner.bench import (  # the package's own API: the CLI is a thin layer over it
    SLO,
    BenchConfig,
    BenchResult,
    Bounds,
    ClosedLoop,
    Endpoint,
    MixSpec,
    OpenLoop,
    ResultSet,
    TrafficStream,
    WorkloadSpec,
    run_benchmark,
)
from tuner.bench.client import RequestRecord, served_models
from tuner.bench.plot import Stat, plot_results
from tuner.bench.report import print_report
from tuner.workloads import WORKLOADS

bench_app = typer.Typer(
    help="Load-test any OpenAI-compatible endpoint: TTFT, TPOT, ITL, throughput, goodput.",
    invoke_without_command=True,
    no_args_is_help=False,
)
console = Console()
DEFAULT_NUM_REQUESTS = 200


def _numbers(text: str, kind: type[int] | type[float], option: str) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=option) from None
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter(f"expected positive numbers, got {text!r}", param_hint=option)
    return values


def _headers(pairs: list[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected NAME:VALUE, got {pair!r}", param_hint="--header")
        headers[name.strip()] = value.strip()
    return headers


def _resolve_model(url: str, model: str | None) -> str:
    if model:
        return model
    try:
        models = asyncio.run(served_models(url))
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        console.print(f"[red]cannot list models at {url}/models ({type(exc).__name__}: {exc}); pass --model[/red]")
        raise typer.Exit(1) from None
    if not models:
        console.print(f"[red]{url}/models lists no model; pass --model[/red]")
        raise typer.Exit(1)
    return models[0]


def _configs(
    *,
    endpoint: Endpoint,
    workload: WorkloadSpec,
    bounds: Bounds,
    slo: SLO | None,
    seed: int,
    tokenizer: str | None,
    concurrency: str | None,
    request_rate: str | None,
    burstiness: float,
    max_concurrency: int | None,
    mix: str | None,
    think_time: float,
) -> list[BenchConfig]:
    """One configuration per sweep point (a mix is a single point)."""
    if sum(option is not None for option in (concurrency, request_rate, mix)) > 1:
        raise typer.BadParameter("give one of --concurrency, --request-rate or --mix")
    if mix is not None:
        try:
            stream_sets = [MixSpec.parse(mix, think_time_s=think_time).streams(workload)]
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--mix") from None
    elif request_rate is not None:
        stream_sets = [
            [
                TrafficStream(
                    workload=workload,
                    load=OpenLoop(request_rate=rate, burstiness=burstiness, max_concurrency=max_concurrency),
                )
            ]
            for rate in _numbers(request_rate, float, "--request-rate")
        ]
    else:
        stream_sets = [
            [TrafficStream(workload=workload, load=ClosedLoop(concurrency=c, think_time_s=think_time))]
            for c in _numbers(concurrency or "1", int, "--concurrency")
        ]
    return [
        BenchConfig(endpoint=endpoint, streams=streams, bounds=bounds, slo=slo, seed=seed, tokenizer=tokenizer)
        for streams in stream_sets
    ]


def _run_with_progress(config: BenchConfig, index: int, total: int) -> BenchResult:
    bounds = config.bounds
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"[{index}/{total}] {config.load_label}", total=bounds.num_requests, errors=0)
        errors = 0

        def on_request(record: RequestRecord) -> None:
            nonlocal errors
            errors += not record.success
            progress.update(task, advance=1, errors=errors)

        def on_notice(note: str) -> None:
            console.print(f"[yellow]warning:[/yellow] {note}")

        return run_benchmark(config, on_request=on_request, on_notice=on_notice)


@bench_app.callback()
def bench(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(envvar="TANDEM_BENCH_URL", help="Base URL with /v1, e.g. http://127.0.0.1:8000/v1")
    ] = None,
    model: Annotated[
        str | None, typer.Option(envvar="TANDEM_BENCH_MODEL", help="Model name; default: the first of GET /models")
    ] = None,
    api: Annotated[str, typer.Option(help="completions (like vllm bench serve) or chat")] = "completions",
    workload: Annotated[
        str,
        typer.Option(help=f"Preset: {', '.join(f'{k} ({v.input_len}/{v.output_len})' for k, v in WORKLOADS.items())}"),
    ] = "equal",
    input_len: Annotated[int | None, typer.Option(help="Prompt tokens; overrides the preset")] = None,
    output_len: Annotated[int | None, typer.Option(help="Generated tokens; overrides the preset")] = None,
    range_ratio: Annotated[float, typer.Option(help="Lengths drawn from [L(1-r), L(1+r)]")] = 0.0,
    ignore_eos: Annotated[bool, typer.Option(help="Ask the server to ignore EOS so output lengths hold")] = True,
    concurrency: Annotated[str | None, typer.Option(help="Closed loop; a list sweeps, e.g. 1,2,4,8")] = None,
    request_rate: Annotated[str | None, typer.Option(help="Open loop, requests/s; a list sweeps")] = None,
    burstiness: Annotated[float, typer.Option(help="Gamma shape of arrival gaps (1 = Poisson)")] = 1.0,
    max_concurrency: Annotated[int | None, typer.Option(help="Cap on in-flight requests with --request-rate")] = None,
    mix: Annotated[str | None, typer.Option(help="interactive=N[:WORKLOAD],batch=M[:WORKLOAD] or batch-rate=R")] = None,
    think_time: Annotated[float, typer.Option(help="Seconds a closed-loop user waits between requests")] = 0.0,
    slo: Annotated[str | None, typer.Option(help="Goodput SLOs in ms, e.g. ttft:500,tpot:50,e2el:20000")] = None,
    num_requests: Annotated[
        int | None, typer.Option(help=f"Measured requests per run (default {DEFAULT_NUM_REQUESTS} without --duration)")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds per run to keep sending")] = None,
    warmup: Annotated[int, typer.Option(help="Unmeasured warm-up requests before each run")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for prompts, lengths and arrivals")] = 0,
    tokenizer: Annotated[str | None, typer.Option(help="Local tokenizer dir for exact prompt lengths")] = None,
    header: Annotated[list[str] | None, typer.Option(help="Extra header NAME:VALUE (repeatable)")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds before one request counts as timed out")] = 600.0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results JSON here")] = None,
    label: Annotated[str | None, typer.Option(help="Name of this result set in plots")] = None,
) -> None:
    """Benchmark an endpoint; several --concurrency or --request-rate values make a sweep."""
    if ctx.invoked_subcommand is not None:
        return
    if url is None:
        raise typer.BadParameter("the endpoint is required (or TANDEM_BENCH_URL)", param_hint="--url")
    if api not in ("completions", "chat"):
        raise typer.BadParameter("completions or chat", param_hint="--api")
    try:
        shape = WorkloadSpec.from_preset(workload, range_ratio=range_ratio, ignore_eos=ignore_eos)
        if input_len is not None or output_len is not None:
            shape = WorkloadSpec(
                input_len=input_len or shape.input_len,
                output_len=output_len or shape.output_len,
                range_ratio=range_ratio,
                ignore_eos=ignore_eos,
            )
        slo_spec = SLO.parse(slo) if slo else None
        bounds = Bounds(
            num_requests=num_requests if num_requests or duration else DEFAULT_NUM_REQUESTS,
            duration_s=duration,
            warmup_requests=warmup,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    endpoint = Endpoint(
        url=url, model=_resolve_model(url, model), api=api, headers=_headers(header or []), timeout_s=timeout
    )
    configs = _configs(
        endpoint=endpoint,
        workload=shape,
        bounds=bounds,
        slo=slo_spec,
        seed=seed,
        tokenizer=tokenizer,
        concurrency=concurrency,
        request_rate=request_rate,
        burstiness=burstiness,
        max_concurrency=max_concurrency,
        mix=mix,
        think_time=think_time,
    )
    result_set = ResultSet(label=label)
    for index, config in enumerate(configs, start=1):
        result_set.runs.append(_run_with_progress(config, index, len(configs)))
        if output is not None:
            result_set.save(output)  # after every point, so a broken-off sweep keeps what it measured
    print_report(result_set.runs, console)
    if output is not None:
        console.print(f"results: {output}")
    if any(run.overall.completed == 0 for run in result_set.runs):
        console.print("[red]a run completed no request; see the errors above[/red]")
        raise typer.Exit(1)


@bench_app.command("plot")
def plot(
    results: Annotated[list[Path], typer.Argument(help="Results JSON files; one line each")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write")] = Path("bench.png"),
    stat: Annotated[str, typer.Option(help="Latency statistic: mean, median, p90, p99")] = "median",
) -> None:
    """Draw output tok/s, TTFT and TPOT against concurrency (or request rate)."""
    if stat not in ("mean", "median", "p90", "p99"):
        raise typer.BadParameter("mean, median, p90 or p99", param_hint="--stat")
    sets: dict[str, ResultSet] = {}
    for path in results:
        try:
            result_set = ResultSet.load(path)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="RESULTS") from None
        sets[result_set.label or path.stem] = result_set
    chosen: Stat = stat  # type: ignore[assignment]  # checked against Stat's four values just above
    try:
        plot_results(sets, output, stat=chosen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="RESULTS") from None
    console.print(f"chart: {output}")
