"""The `gateway` command: run a plan locally, deploy it to a cluster, or front plain upstreams.

- `gateway up [--plan FILE | --model DIR]`: local Ray + the plan's Serve app + the gateway, in
  the foreground; Ctrl-C or SIGTERM stops everything it started (what `make up` runs).
- `gateway deploy PLAN --address ADDR`: deploy onto a running cluster and return.
- `gateway status` / `gateway down`: look at, or remove, the deployed app (never the cluster).
- `gateway plan validate PLAN`: the plan's checks, and what each box will hold.
- `gateway pull --plan P [--address ADDR]`: the plan's model into every node's Hugging Face cache.
- `gateway service install --plan P`: systemd units (Ray head or worker, the deploy) for reboots.
- `gateway observability --plan P`: Prometheus's scrape config for the plan, and the Grafana dashboard.
- `gateway serve --config FILE`: the gateway alone, fronting OpenAI-compatible upstreams; `gateway
  keys ...` and `gateway usage` against a running gateway (gateway/cli.py's commands, offered here too).

The commands that start stacks live in deploy/, above the gateway (docs/architecture.md's layers);
the console script `gateway` points here. Ray is imported only by the commands that need it, so a
gateway-only install (`pip install '.[gateway]'`) still runs `gateway serve`, and the others say what to
install instead of failing on an import.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from deploy.plan import PlanError, ServingPlan, default_plan, load_plan, parse_plan
from deploy.plan_version import PLAN_VERSION
from deploy.start_time import start_time_hint
from gateway.admin_client import ADMIN_KEY_ENV, DEFAULT_URL
from gateway.auth import exposure_warning
from gateway.cli import CaOption, UrlOption, keys_app, serve, show_gateway_status, usage
from gateway.contract.config import GatewaySettings, check_key_models, describe_fields
from gateway.version import version_option

if TYPE_CHECKING:
    from deploy.stack import Deployed

app = typer.Typer(
    help="Tandem's gateway: one OpenAI endpoint over a TP and a PP replica.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)
ADDRESS_ENV = "RAY_ADDRESS"


@app.callback()
def _main(
    version: Annotated[bool, version_option(f"plan format {PLAN_VERSION}")] = False,
) -> None:
    """Tandem's gateway: one OpenAI endpoint over a TP and a PP replica."""


T = TypeVar("T")

PlanOption = Annotated[Path | None, typer.Option("--plan", help="Serving plan YAML.", exists=True, dir_okay=False)]
AddressOption = Annotated[
    str | None,
    typer.Option("--address", envvar=ADDRESS_ENV, help="Ray cluster address (ray://host:10001 or host:6379)."),
]


def _load(plan_path: Path | None, model: Path | None, port: int | None) -> ServingPlan:
    """The plan to run: --plan, else the embedded default (deploy.plan.default_plan); --model swaps
    in a local model dir (for a plan of one model)."""
    try:
        plan = load_plan(plan_path or default_plan())
        if model is not None or port is not None:
            data = plan.model_dump()  # python mode keeps API keys (SecretStr); a JSON dump would mask them
            if model is not None:
                plan.only_model("--model")
                model_dir = model.expanduser().resolve()
                data["models"][0] |= {"source": str(model_dir), "name": model_dir.name, "aliases": []}
            if port is not None:
                data["gateway"]["port"] = port
            plan = parse_plan(data, origin="the plan with your options")
        auth = plan.gateway.auth.resolved()  # reads the keys file and variable once: their errors stop here
        check_key_models(auth.keys, [name for group in plan.models for name in group.served_names])
        warning = exposure_warning(plan.gateway.model_copy(update={"auth": auth}))
    except PlanError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (OSError, ValueError) as exc:  # a keys file or TANDEM_API_KEYS that cannot be read
        console.print(f"[red]error:[/red] the plan's API keys: {_keys_problem(exc)}")
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


CLIENT_KEY_ENV = "OPENAI_API_KEY"  # what the OpenAI SDK reads when no api_key is given


def _print_welcome(deployed: Deployed, settings: GatewaySettings, *, foreground: bool) -> None:
    """Where the endpoint is (here, and for the team when it listens beyond loopback), whether it
    wants a key (asked of the gateway itself: plan keys and stored ones alike) and how to send one."""
    base_url, model = deployed.base_url, deployed.model
    out = Console()
    served = ", ".join(f"[bold]{name}[/bold]" for name in deployed.models)
    out.print(f"\n[bold green]Tandem is serving[/bold green] {served} at [bold]{base_url}[/bold]")
    for url in team_urls(settings):
        out.print(f"  for the team, from other machines: [bold]{url}[/bold]", highlight=False)
    keyed = requires_key(base_url)
    if keyed:
        out.print(
            f"\nIt wants an API key (`Authorization: Bearer <key>`); the examples read it from ${CLIENT_KEY_ENV}. "
            f"Give each teammate their own with `gateway keys add NAME` (your admin key in ${ADMIN_KEY_ENV}).",
            highlight=False,
        )
    else:
        out.print(
            "\nIt takes no API key: anyone who reaches the port may use it. Turn keys on, without a redeploy, "
            "with `gateway keys add ops --admin` run on this machine.",
            highlight=False,
        )
    out.print()
    engines = {name: url for name, url in deployed.replica_urls.items() if url}
    if engines:
        out.print("vLLM's own servers behind it (to compare against):")
        for name, url in engines.items():
            out.print(f"  engine {name}: {url}", highlight=False)
        out.print()
    auth_header = f'    -H "Authorization: Bearer ${CLIENT_KEY_ENV}" \\\n' if keyed else ""
    out.print("Try it with curl:\n")
    out.print(
        f"  curl {base_url}/chat/completions -H 'Content-Type: application/json' \\\n{auth_header}"
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], '
        f'"max_tokens": 32}}\'\n',
        soft_wrap=True,
        highlight=False,
    )
    api_key = f'os.environ["{CLIENT_KEY_ENV}"]' if keyed else '"unused"'
    out.print("or with the OpenAI SDK:\n")
    out.print(
        ("  import os\n" if keyed else "")
        + "  from openai import OpenAI\n"
        + f'  client = OpenAI(base_url="{base_url}", api_key={api_key})\n'
        + f'  reply = client.chat.completions.create(model="{model}", max_tokens=32,\n'
        + '      messages=[{"role": "user", "content": "Hello!"}])\n'
        + "  print(reply.choices[0].message.content)\n",
        highlight=False,
    )
    if foreground:
        out.print("Press Ctrl-C to stop.")


def team_urls(settings: GatewaySettings) -> list[str]:
    """The gateway's URL as teammates reach it, when it listens on every interface: this host's
    name (DNS or /etc/hosts must know it on their machines)."""
    if settings.host not in ("0.0.0.0", "::", ""):
        return []
    scheme = "https" if settings.tls is not None else "http"
    return [f"{scheme}://{socket.getfqdn()}:{settings.port}/v1"]


def requires_key(base_url: str) -> bool:
    """Whether the gateway refuses a request without a key (GET /v1/models answers 401). No key
    is sent; over https the certificate is not checked, since only the status is read."""
    context = ssl._create_unverified_context() if base_url.startswith("https") else None
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=10, context=context):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (urllib.error.URLError, OSError):
        return True  # unknown: show how to send a key, which works either way


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
        f"Starting Ray and {len(serving_plan.replicas)} vLLM replicas of {_models_and_replicas(serving_plan)}; "
        f"{start_time_hint(serving_plan)}"
    )
    try:
        with running_stack(serving_plan, on_progress=_show_progress) as deployed:
            _print_welcome(deployed, serving_plan.gateway, foreground=True)
            stop.wait()
            console.print("Stopping...")
    except Exception as exc:  # a failed start is reported, not dumped
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print("Stopped.")


def _models_and_replicas(plan: ServingPlan) -> str:
    """Each model in bold with its replicas' layouts: `m (interactive: tp2-pp1, batch: tp1-pp2)`."""
    return ", ".join(
        f"[bold]{group.name}[/bold] ({', '.join(f'{r.name}: {r.layout}' for r in group.replicas)})"
        for group in plan.models
    )


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
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Seconds to wait for engines and gateway, past which the app is removed "
            "(default: $TANDEM_READY_TIMEOUT_S, else 900).",
            min=1,
        ),
    ] = None,
) -> None:
    """Deploy a plan onto a running Ray cluster and return; the cluster keeps serving it. Shows
    each deployment's state as it changes; on failure or timeout removes the app and says why."""
    _require("ray")
    from deploy.stack import READY_TIMEOUT_S, RayConnection, deploy, undeploy

    timeout = timeout or READY_TIMEOUT_S
    serving_plan = _load(plan, None, None)
    if not address:
        console.print(f"[red]error:[/red] --address (or {ADDRESS_ENV}) is required; for a local run use `gateway up`")
        raise typer.Exit(2)
    console.print(f"deploying {plan.name}: {start_time_hint(serving_plan)}; waiting at most {timeout:.0f} s")
    try:
        with RayConnection(address):
            _check_weights(serving_plan, plan, address)
            if probe_link:
                _probe_link_first(serving_plan)
            try:
                deployed = deploy(serving_plan, timeout_s=timeout, on_progress=_show_progress)
            except BaseException as exc:  # a failure, the timeout or Ctrl-C: what was started goes
                undeploy()
                why = "stopped by Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc)
                console.print(f"[red]error:[/red] {why}", highlight=False)
                console.print("removed the app this deploy started; the cluster keeps running")
                raise typer.Exit(1) from None
    except typer.Exit:
        raise
    except Exception as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    _print_welcome(deployed, serving_plan.gateway, foreground=False)


def _check_weights(plan: ServingPlan, plan_path: Path, address: str) -> None:
    """Before any engine starts: every node of the cluster holds each of the plan's hub models (a
    local directory or a demo model is the plan's own check); else say what to run."""
    from deploy.weights import check_on_cluster, hub_ids

    lacking = False
    for repo_id in hub_ids(plan):
        for node, what in check_on_cluster(repo_id).items():
            lacking = True
            console.print(f"[red]error:[/red] {repo_id} on node {node}: {what}", highlight=False)
    if lacking:
        console.print(
            f"download it first, on every node: `gateway pull --plan {plan_path} --address {address}` "
            "(with HF_TOKEN in its environment for a gated model); nothing was deployed",
            highlight=False,
        )
        raise typer.Exit(1)


def _show_progress(elapsed_s: float, states: dict[str, str]) -> None:
    """One line per change of state: the app's, then each deployment's (gateway, engine-NAME)."""
    console.print(
        f"[{elapsed_s:5.0f} s] " + "  ".join(f"{name} {state}" for name, state in states.items()), highlight=False
    )


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
def status(address: AddressOption = None, url: UrlOption = DEFAULT_URL, cacert: CaOption = None) -> None:
    """The gateway's replicas, health, queues, frozen state, recent TTFT/TPOT and usage (as its
    /status page shows them), then the Serve app's deployments where Ray is installed."""
    answered = show_gateway_status(url, cacert)
    if importlib.util.find_spec("ray") is None:
        console.print("(Ray is not installed here: no deployment states; a gateway-only install has none)")
        raise typer.Exit(0 if answered else 1)
    from deploy.stack import RayConnection, app_status

    try:
        with RayConnection(address or "auto"):
            states = app_status()
    except ConnectionError as exc:
        console.print(f"no Ray cluster to ask: {exc}")
        raise typer.Exit(0 if answered else 1) from None
    if states is None:
        console.print("No Tandem app is deployed.")
        raise typer.Exit(0 if answered else 1)
    table = Table(title="Serve deployments", title_justify="left")
    table.add_column("deployment")
    table.add_column("state")
    for name, state in states.items():
        table.add_row(name, state)
    Console().print(table)


@app.command()
def down(address: AddressOption = None) -> None:
    """Remove the deployed app; the cluster itself keeps running."""
    _require("ray")
    from deploy.stack import undeploy

    removed = _on_cluster(address, undeploy)
    console.print("Removed the Tandem app." if removed else "No Tandem app was deployed.")


plan_app = typer.Typer(help="Check a serving plan before deploying it.", no_args_is_help=True)


@plan_app.command("validate")
def plan_validate(
    plan: Annotated[Path, typer.Argument(help="Serving plan YAML.", exists=True, dir_okay=False)],
) -> None:
    """Run the plan's checks (fields, layout against the cluster, API keys readable) and print
    what each box will hold: every replica's workers and memory, node by node."""
    from deploy.plan_report import box_shares, box_warnings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")  # an older plan's note
    serving_plan = _load(plan, None, None)
    cluster = serving_plan.cluster
    where = "CPU" if cluster.is_cpu else f"{cluster.devices_per_node} x {cluster.accelerator}"
    out = Console()
    out.print(
        f"[bold green]valid[/bold green]: {plan} (plan format {serving_plan.version}): "
        f"{', '.join(f'[bold]{group.name}[/bold]' for group in serving_plan.models)} on {cluster.nodes} node(s) "
        f"of {cluster.name} ({where}, {cluster.memory_per_node_gb:g} GB each)",
        highlight=False,
    )
    table = Table(title="what each box will hold", title_justify="left")
    for column in ("node", "replica", "class", "layout", "workers", "memory (GB)", "of which", "model"):
        table.add_column(column, justify="right" if column in ("node", "workers", "memory (GB)") else "left")
    shares = box_shares(serving_plan)
    for node in sorted({share.node for share in shares}):
        on_node = [share for share in shares if share.node == node]
        for share in on_node:
            replica = serving_plan.replica_for_name(share.replica)
            memory = "-" if share.memory_gb is None else f"{share.memory_gb:.1f}"
            table.add_row(
                str(node),
                share.replica,
                replica.traffic_class,
                replica.layout,
                str(share.workers),
                memory,
                share.what,
                serving_plan.group_of(share.replica).name,
            )
        total = sum(share.memory_gb or 0.0 for share in on_node)
        workers = sum(share.workers for share in on_node)
        table.add_row(
            str(node),
            "[bold]all[/bold]",
            "",
            "",
            str(workers),
            f"[bold]{total:.1f}[/bold]",
            f"of {cluster.memory_per_node_gb:g} GB",
            end_section=True,
        )
    out.print(table)
    for warning in box_warnings(serving_plan, shares):
        console.print(f"[yellow bold]warning:[/yellow bold] {warning}", highlight=False)
    if not cluster.is_cpu:
        out.print(
            "Whether the weights and the KV cache fit inside these shares: `tuner predict` (the performance model).",
            highlight=False,
        )


@app.command()
def observability(
    plan: Annotated[Path, typer.Option("--plan", help="Serving plan YAML.", exists=True, dir_okay=False)],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write prometheus.yml and the Grafana dashboard here (default: the YAML on stdout)."
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option("--gateway", help="HOST:PORT Prometheus reaches the gateway at (default: from the plan)."),
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="Scrape interval in seconds.", min=1)] = 15.0,
    cacert: CaOption = None,
) -> None:
    """Prometheus's scrape config for a plan (the gateway, and each engine's vLLM metrics passed on
    by it) and the Grafana dashboard that reads them."""
    import shutil

    import yaml

    from deploy.scrape_config import dashboard_path, scrape_config

    serving_plan = _load(plan, None, None)
    config = yaml.safe_dump(
        scrape_config(serving_plan, gateway=gateway, interval_s=interval, ca_file=cacert), sort_keys=False
    )
    if out is None:
        sys.stdout.write(config)
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "prometheus.yml").write_text(config)
    shutil.copyfile(dashboard_path(), out / dashboard_path().name)
    console.print(
        f"wrote {out / 'prometheus.yml'} and {out / dashboard_path().name}: run `prometheus "
        f"--config.file={out / 'prometheus.yml'}`, then import the dashboard in Grafana (Dashboards > Import) "
        "with that Prometheus as its data source",
        highlight=False,
    )


@app.command()
def pull(
    plan: Annotated[Path, typer.Option("--plan", help="Serving plan YAML.", exists=True, dir_okay=False)],
    address: AddressOption = None,
) -> None:
    """Download the plan's models into the Hugging Face cache of every node that loads them (with
    --address: each node of that Ray cluster; without: this machine). Resumable: run it again
    after a failure. The token is HF_TOKEN from the environment, never from the plan."""
    from deploy.weights import hub_id, hub_ids

    serving_plan = _load(plan, None, None)
    for group in serving_plan.models:
        if hub_id(group) is None:
            console.print(f"{group.source}: not a hub id (a local directory or a demo model): nothing to pull")
    failed = False
    for repo_id in hub_ids(serving_plan):
        failed |= not _pull_one(repo_id, address)
    if failed:
        raise typer.Exit(1)


def _pull_one(repo_id: str, address: str | None) -> bool:
    """`gateway pull` of one hub model, here or on every node at `address`; False when it failed."""
    from deploy.weights import TOKEN_ENV, describe, download, pull_on_cluster

    if not address:
        auth = (
            f"with {TOKEN_ENV} from the environment"
            if os.environ.get(TOKEN_ENV)
            else f"without a token ({TOKEN_ENV} unset)"
        )
        _require("huggingface_hub")
        console.print(f"downloading {repo_id} here, {auth}", highlight=False)
        try:
            folder = download(repo_id, lambda what, done, total: console.print(describe(what, done, total)))
        except Exception as exc:  # the hub's own message: no token, gated, not found, no network
            console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", highlight=False)
            return False
        Console(soft_wrap=True).print(f"{repo_id} is in {folder}", highlight=False)
        return True
    _require("ray", "huggingface_hub")
    from deploy.stack import RayConnection

    console.print(
        f"downloading {repo_id} on every node of {address}; each node uses the {TOKEN_ENV} of its own Ray "
        "environment (the service's EnvironmentFile), not this shell's",
        highlight=False,
    )
    with RayConnection(address):
        results = pull_on_cluster(repo_id, lambda line: console.print(line, highlight=False))
    for result in results:
        where = result.folder if result.error is None else f"[red]failed[/red]: {result.error}"
        console.print(f"{result.node}: {where} ({result.seconds:.0f} s)", highlight=False)
    return not any(result.error for result in results)


service_app = typer.Typer(help="Run Tandem as systemd services that come back after a reboot.", no_args_is_help=True)


@service_app.command("install")
def service_install(
    plan: Annotated[Path, typer.Option("--plan", help="Serving plan YAML.", exists=True, dir_okay=False)],
    role: Annotated[str, typer.Option("--role", help="head (Ray head + deploy) or worker (Ray worker).")] = "head",
    head: Annotated[
        str | None, typer.Option("--head", help="The head's address, HOST[:PORT] (a worker's Ray joins it).")
    ] = None,
    node_ip: Annotated[
        str | None, typer.Option("--node-ip", help="This box's address on the cluster link (ray --node-ip-address).")
    ] = None,
    unit_dir: Annotated[Path | None, typer.Option("--dir", help="Where to write the units.")] = None,
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="EnvironmentFile every unit reads (HF_TOKEN, NCCL_*).")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Run the services as this user (default: root).")] = None,
    timeout: Annotated[
        int, typer.Option("--timeout", help="The deploy unit's `gateway deploy --timeout`.", min=1)
    ] = 900,
    enable: Annotated[bool, typer.Option("--enable", help="Also run the systemctl lines printed.")] = False,
) -> None:
    """Write systemd units for this box (the venv's own ray and gateway), and print how to turn
    them on; secrets stay in the EnvironmentFile, never in a unit."""
    import subprocess

    from deploy.service import (
        DEFAULT_ENV_FILE,
        DEFAULT_UNIT_DIR,
        ServiceSpec,
        enable_commands,
        env_file_template,
        render_units,
    )

    if role not in ("head", "worker"):
        console.print(f"[red]error:[/red] --role is head or worker, not {role!r}")
        raise typer.Exit(2)
    _load(plan, None, None)  # the plan's own checks, before anything is written
    try:
        spec = ServiceSpec(
            plan=plan,
            role=role,  # type: ignore[arg-type]  # checked above
            head=head,
            node_ip=node_ip,
            env_file=env_file or DEFAULT_ENV_FILE,
            user=user,
            deploy_timeout_s=timeout,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    missing = [name for name in ("ray", "gateway") if not Path(spec.binary(name)).exists()]
    if missing:
        console.print(f"[yellow]warning:[/yellow] {', '.join(missing)} not found in {spec.bin_dir}", highlight=False)
    folder = unit_dir or DEFAULT_UNIT_DIR
    units = render_units(spec)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (folder / name).write_text(text)
        console.print(f"wrote {folder / name}", highlight=False)
    if not spec.env_file.exists():
        console.print(
            f"{spec.env_file} does not exist yet; every unit reads it. Make it (chmod 600) with, e.g.:\n"
            + env_file_template(),
            highlight=False,
        )
    commands = enable_commands(units)
    if not enable:
        Console().print("Turn them on, now and at every boot:\n" + "\n".join(" ".join(c) for c in commands))
        return
    for command in commands:
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            console.print(f"[red]error:[/red] `{' '.join(command)}` exited {done.returncode}")
            raise typer.Exit(1)


app.add_typer(plan_app, name="plan")
app.add_typer(service_app, name="service")
app.command()(serve)
app.command("usage")(usage)
app.add_typer(keys_app, name="keys")


if __name__ == "__main__":
    sys.exit(app())
