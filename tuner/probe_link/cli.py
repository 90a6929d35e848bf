"""`tuner probe-link`: measure the link of a two-node Ray cluster (or two local processes) and write
a hardware profile that `tuner predict --hardware FILE` and `tuner optimize --hardware FILE` read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deploy.link_probe import DEFAULT_SIZES, LinkSamples, probe_cluster, probe_local, socket_fallback_warning
from deploy.stack import RayConnection
from tuner.perfmodel.architecture import resolve_model
from tuner.perfmodel.collectives import LinkProfile
from tuner.perfmodel.figures import save_figure
from tuner.perfmodel.hardware import known_hardware, load_hardware
from tuner.perfmodel.link_sweep import compare_layouts
from tuner.probe_link.profile import (
    LIKELY_CAUSES,
    LinkCheck,
    check_link,
    default_base,
    dump_profile,
    measured_link,
    profile_from_samples,
)
from tuner.workloads import WORKLOADS

console = Console()


def probe_link_command(
    out: Annotated[Path, typer.Option(help="Hardware profile YAML to write.", dir_okay=False)],
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (host:port, or 'auto'); two nodes are probed.")
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            help=f"Profile whose device figures to keep ({', '.join(known_hardware())}); default: the one matching the nodes."
        ),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Two processes on this host (torch.multiprocessing), no Ray.")
    ] = False,
    backend: Annotated[str | None, typer.Option(help="gloo or nccl (default: nccl on GPU nodes, else gloo).")] = None,
    max_bytes: Annotated[int, typer.Option(min=8192, help="Largest message measured.")] = DEFAULT_SIZES[-1],
    plot: Annotated[Path | None, typer.Option(help="PNG of time vs size (default: next to --out).")] = None,
    samples_out: Annotated[Path | None, typer.Option(help="Also write the raw samples as JSON.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Also say which layout this link favours for this model (TP=2 vs PP=2).")
    ] = None,
) -> None:
    """Measure all-reduce, all-gather and send/recv from 8 KB to 64 MB between two nodes, fit the
    collective model to it, and write a complete hardware profile with the measured link."""
    if backend not in (None, "gloo", "nccl"):
        raise typer.BadParameter("backend must be gloo or nccl", param_hint="--backend")
    if not local and not address:
        raise typer.BadParameter("give --address of a two-node Ray cluster, or --local", param_hint="--address")
    sizes = tuple(s for s in DEFAULT_SIZES if s <= max_bytes)
    try:
        if local:
            samples = probe_local(backend or "gloo", sizes)
        else:
            with RayConnection(address):
                samples = probe_cluster(sizes, backend=backend)
    except (ValueError, TimeoutError, ConnectionError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    try:
        base_name = base or default_base(samples)
        data = profile_from_samples(samples, base_name, name=out.stem)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--base") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_profile(data))
    if samples_out is not None:
        samples_out.write_text(samples.model_dump_json(indent=2))
    link = measured_link(samples)
    check = check_link(link, base_name)
    _print_table(samples, link, check)
    _print_verdict(check, base_name)
    plot_path = plot or out.with_suffix(".png")
    _plot(samples, link, check.nominal, plot_path)
    if model is not None:
        _print_favoured(model, out, base_name)
    console.print(f"profile: {out}  plot: {plot_path}  (use: tuner predict --hardware {out} --link-sweep)")


FAVOURED_LEVELS = (1, 8, 32, 128)


def _print_favoured(model: str, profile: Path, base: str) -> None:
    """PP/TP output tok/s per workload and concurrency on the measured link and on the base's
    nominal one: above 1, PP=2 wins."""
    try:
        arch = resolve_model(model)
    except ValueError as exc:
        console.print(f"[yellow]cannot say which layout it favours:[/yellow] {exc}")
        return
    measured = load_hardware(str(profile))
    links = {"measured": measured, "nominal": load_hardware(base)}
    table = Table(title=f"{arch.name}: PP=2 / TP=2 output tok/s (above 1: PP=2 wins)")
    table.add_column("workload")
    table.add_column("link")
    for c in FAVOURED_LEVELS:
        table.add_column(f"C={c}", justify="right")
    for name, shape in WORKLOADS.items():
        for label, hardware in links.items():
            try:
                rows = compare_layouts(arch, hardware, shape, FAVOURED_LEVELS)
            except ValueError as exc:
                console.print(f"[yellow]{label} link:[/yellow] {exc}")
                return
            table.add_row(name, label, *("-" if r is None else f"{r:.2f}" for _, r, _ in rows))
    console.print(table)


def _print_table(samples: LinkSamples, link: LinkProfile, check: LinkCheck) -> None:
    table = Table(title=f"{samples.backend} link, {' <-> '.join(samples.nodes)}, {samples.date}")
    for column in ("size", "all-reduce us", "fit us", "GB/s", "nominal us", "all-gather us", "send/recv us"):
        table.add_column(column, justify="right")
    gathered = {s.bytes: s.microseconds for s in samples.results.get("allgather", ())}
    sent = {s.bytes: s.microseconds for s in samples.results["p2p"]}
    for s in samples.results["allreduce"]:
        nominal = f"{check.nominal.allreduce.seconds(s.bytes) * 1e6:,.1f}" if check.nominal else "-"
        table.add_row(
            _size(s.bytes),
            f"{s.microseconds:,.1f}",
            f"{link.allreduce.seconds(s.bytes) * 1e6:,.1f}",
            f"{s.bytes / (s.microseconds * 1e3):.2f}",
            nominal,
            f"{gathered[s.bytes]:,.1f}" if s.bytes in gathered else "-",
            f"{sent[s.bytes]:,.1f}" if s.bytes in sent else "-",
        )
    console.print(table)
    regimes = ", ".join(
        f"{r.protocol} from {_size(r.from_bytes)}: {r.latency_us.value:.1f} us + n / {r.bandwidth_gbs.value:.2f} GB/s"
        for r in link.allreduce.regimes
    )
    console.print(f"all-reduce model: {regimes}")
    if samples.environment:
        console.print("environment: " + " ".join(f"{k}={v}" for k, v in samples.environment.items()))
    evidence = f" ({samples.transport_evidence[0]})" if samples.transport_evidence else ""
    console.print(f"transport: {samples.transport or 'unknown'}{evidence}")
    fallback = socket_fallback_warning(samples)
    if fallback is not None:
        console.print(f"[yellow]warning:[/yellow] {fallback}")


def _print_verdict(check: LinkCheck, base: str) -> None:
    if check.nominal is None:
        console.print(f"{base} has no nominal link to compare with.")
        return
    if not check.degraded:
        console.print(f"[green]link OK[/green] against {base}'s nominal figures.")
        return
    console.print(f"[yellow]degraded link[/yellow] against {base}'s nominal figures:")
    for problem in check.problems:
        console.print(f"  - {problem}")
    console.print("Likely causes (docs/cluster.md):")
    for cause in LIKELY_CAUSES:
        console.print(f"  - {cause}")


def _size(nbytes: float) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes:g} B"


def _plot(samples: LinkSamples, link: LinkProfile, nominal: LinkProfile | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [s.bytes for s in samples.results["allreduce"]]
    models = {"allreduce": link.allreduce, "allgather": link.allgather, "p2p": link.p2p}
    for op, points in samples.results.items():
        line = ax.plot([p.bytes for p in points], [p.microseconds for p in points], "o", label=f"{op} measured")
        model = models.get(op)
        if model is not None:
            ax.plot(sizes, [model.seconds(n) * 1e6 for n in sizes], "-", color=line[0].get_color(), alpha=0.6)
    if nominal is not None:
        ax.plot(sizes, [nominal.allreduce.seconds(n) * 1e6 for n in sizes], "k--", label="all-reduce nominal")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("message bytes")
    ax.set_ylabel("microseconds")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{samples.backend} link: measured points, fitted regimes (lines)")
    save_figure(fig, path, dpi=110)
