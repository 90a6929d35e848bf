"""The `gateway` command: run a plan locally, deploy it to a cluster, or front plain upstreams.

- `gateway up [--plan FILE | --model DIR]`: local Ray + the plan's Serve app + the gateway, in
  the foreground; Ctrl-C or SIGTERM stops everything it started (what `make up` runs).
- `gateway deploy PLAN --address ADDR`: deploy onto a running cluster and return.
- `gateway status` / `gateway down`: look at, or remove, the deployed app (never the cluster).
- `gateway serve --config FILE`: the gateway alone, fronting OpenAI-compatible upstreams
  (gateway/cli.py's command, offered here too).

The commands that start stacks live in deploy/, above the gateway (docs/architecture.md's layers);
the console script `gateway` points here. Ray is imported only by the commands that need it, so a
gateway-only install (`pip install '.[gateway]'`) still runs `gateway serve`, and the others say what to
install instead of failing on an import.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from deploy.plan import PlanError, ServingPlan, load_plan, parse_plan, shipped_plan
from deploy.start_time import start_time_hint
from gateway.auth import exposure_warning
from gateway.cli import keys_app, serve, usage
from gateway.config import describe_fields

if TYPE_CHECKING:
    from deploy.stack import Deployed

app = typer.Typer(
    help="Tandem's gateway: one OpenAI endpoint over a TP and a PP replica.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)
ADDRESS_ENV = "RAY_ADDRESS"
T = TypeVar("T")

PlanOption = Annotated[Path | None, typer.Option("--plan", help="Serving plan YAML.", exists=True, dir_okay=False)]
AddressOption = Annotated[
    str | None,
    typer.Option("--address", envvar=ADDRESS_ENV, help="Ray cluster address (ray://host:10001 or host:6379)."),
]


def _load(plan_path: Path | None, model: Path | None, port: int | None) -> ServingPlan:
    """The plan to run: --plan, else the CPU demo plan; --model swaps in a local model dir."""
    try:
        plan = load_plan(plan_path or shipped_plan("cpu-demo"))
        changes: dict = {}
        if model is not None:
            model_dir = model.expanduser().resolve()
            changes["model"] = {"source": str(model_dir), "name": model_dir.name, "aliases": []}
        if port is not None:
            changes["gateway"] = {**plan.gateway.model_dump(), "port": port}
        if changes:  # python-mode dumps keep API keys (SecretStr); a JSON dump would mask them
            plan = parse_plan({**plan.model_dump(), **changes}, origin="the plan with your options")
        warning = exposure_warning(plan.gateway)  # reads the keys file and variable: their errors stop here
    except PlanError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (OSError, ValueError) as exc:  # a keys file or TANDEM_API_KEYS that cannot be read
        console.print(f"[red]error:[/red] the plan's API keys cannot be read: {_keys_problem(exc)}")
        raise typer.Exit(2) from None
    if warning:
        console.print(f"[yellow bold]warning:[/yellow bold] {warning}")
    return plan


def _keys_problem(exc: Exception) -> str:
    """What is wrong with the keys, naming fields, never echoing a key."""
    if isinstance(exc, ValidationError):
        return "\n" + describe_fields(exc)
    return str(exc)


def _require(*packages: str) -> None:
    """Stop with what to install when a package of the full install is missing (a gateway-only
    install has neither Ray nor vLLM); a clear message instead of an ImportError's traceback."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        console.print(
            f"[red]error:[/red] this command needs {' and '.join(missing)}, which this install lacks "
            "(a gateway-only install runs `gateway serve` alone); install everything with `make` "
            "or `pip install '.[deploy,tuner,cpu]'` (`cuda` instead of `cpu` on a GPU machine)"
        )
        raise typer.Exit(2)


def _print_welcome(deployed: Deployed) -> None:
    base_url, model = deployed.base_url, deployed.model
    out = Console()
    out.print(f"\n[bold green]Tandem is serving[/bold green] [bold]{model}[/bold] at [bold]{base_url}[/bold]\n")
    engines = {name: url for name, url in deployed.replica_urls.items() if url}
    if engines:
        out.print("vLLM's own servers behind it (to compare against):")
        for name, url in engines.items():
            out.print(f"  engine {name}: {url}", highlight=False)
        out.print()
    out.print("Try it with curl:\n")
    out.print(
        f"  curl {base_url}/chat/completions -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], '
        f'"max_tokens": 32}}\'\n',
        soft_wrap=True,
        highlight=False,
    )
    out.print("or with the OpenAI SDK:\n")
    out.print(
        "  from openai import OpenAI\n"
        f'  client = OpenAI(base_url="{base_url}", api_key="unused")\n'
        f'  reply = client.chat.completions.create(model="{model}", max_tokens=32,\n'
        '      messages=[{"role": "user", "content": "Hello!"}])\n'
        "  print(reply.choices[0].message.content)\n",
        highlight=False,
    )
    out.print("Press Ctrl-C to stop.")


def _stop_on_sigterm() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


@app.command()
def up(
    plan: PlanOption = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Serve this local HF-format model dir instead.", exists=True, file_okay=False),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Gateway port (default: the plan's).")] = None,
) -> None:
    """Start local Ray, the plan's engines and the gateway; stop all of it on Ctrl-C."""
    _require("ray", "vllm")
    from deploy.stack import running_stack  # imports Ray: only for the commands that need it

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serving_plan = _load(plan, model, port)
    stop = _stop_on_sigterm()
    console.print(
        f"Starting Ray and {len(serving_plan.replicas)} vLLM replicas of [bold]{serving_plan.model.name}[/bold] "
        f"({', '.join(f'{r.name}: {r.layout}' for r in serving_plan.replicas)}); {start_time_hint(serving_plan)}"
    )
    try:
        with running_stack(serving_plan) as deployed:
            _print_welcome(deployed)
            stop.wait()
            console.print("Stopping...")
    except Exception as exc:  # a failed start is reported, not dumped
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print("Stopped.")


@app.command("deploy")
def deploy_command(
    plan: Annotated[Path, typer.Argument(help="Serving plan YAML.", exists=True, dir_okay=False)],
    address: AddressOption = None,
    probe_link: Annotated[
        bool,
        typer.Option(
            "--probe-link",
            help="First measure the link between two nodes (as tuner probe-link) and warn if a TP replica spans a slow one.",
        ),
    ] = False,
) -> None:
    """Deploy a plan onto a running Ray cluster and return; the cluster keeps serving it."""
    _require("ray")
    from deploy.stack import RayConnection, deploy

    serving_plan = _load(plan, None, None)
    if not address:
        console.print(f"[red]error:[/red] --address (or {ADDRESS_ENV}) is required; for a local run use `gateway up`")
        raise typer.Exit(2)
    try:
        with RayConnection(address):
            if probe_link:
                _probe_link_first(serving_plan)
            deployed = deploy(serving_plan)
    except Exception as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    _print_welcome(deployed)


def _probe_link_first(plan: ServingPlan) -> None:
    """`gateway deploy --probe-link`: the link's headline figures, and a warning before a TP
    replica is put across a slow one (the deploy goes ahead: the user decides)."""
    from deploy.link_probe import check_before_deploy

    console.print("probing the link between two nodes (all-reduce, all-gather, send/recv, 8 KB-64 MB)...")
    samples, warning = check_before_deploy(plan)
    if samples is None:
        console.print("no TP replica spans nodes (or the cluster has one node): nothing to probe")
        return
    console.print(
        f"link: 8 KB all-reduce {samples.at('allreduce', 8192):.1f} us, "
        f"{samples.large_message_bandwidth_gbs('allreduce'):.2f} GB/s at 64 MB ({samples.backend})"
    )
    if warning is not None:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _on_cluster(address: str | None, query: Callable[[], T]) -> T:
    """Run `query` connected to the cluster at `address` (else the one running here), never
    stopping it; no cluster to ask is a clear error, not a traceback."""
    from deploy.stack import RayConnection

    try:
        with RayConnection(address or "auto"):
            return query()
    except ConnectionError as exc:
        console.print(f"no Ray cluster to ask: {exc}")
        raise typer.Exit(1) from None


@app.command()
def status(address: AddressOption = None) -> None:
    """Show the deployed app's state, deployment by deployment."""
    _require("ray")
    from deploy.stack import app_status

    states = _on_cluster(address, app_status)
    if states is None:
        console.print("No Tandem app is deployed.")
        raise typer.Exit(1)
    for name, state in states.items():
        Console().print(f"{name:24} {state}")


@app.command()
def down(address: AddressOption = None) -> None:
    """Remove the deployed app; the cluster itself keeps running."""
    _require("ray")
    from deploy.stack import undeploy

    removed = _on_cluster(address, undeploy)
    console.print("Removed the Tandem app." if removed else "No Tandem app was deployed.")


app.command()(serve)
app.command("usage")(usage)
app.add_typer(keys_app, name="keys")


if __name__ == "__main__":
    sys.exit(app())
