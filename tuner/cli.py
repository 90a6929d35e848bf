"""The `tuner` command: each subcommand lives with the part it drives."""

from __future__ import annotations

from typing import Annotated

import typer

from deploy.plan_version import PLAN_VERSION
from gateway.version import version_option
from tuner.bench.cli import bench_app
from tuner.optimize.cli import optimize_app
from tuner.perfmodel.cli import predict_app
from tuner.probe_link.cli import probe_link_command

app = typer.Typer(
    help="Benchmark endpoints, predict layouts, and tune serving plans for Tandem.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _main(
    version: Annotated[bool, version_option(f"plan format {PLAN_VERSION}")] = False,
) -> None:
    """Benchmark endpoints, predict layouts, and tune serving plans for Tandem."""


# Subcommands register below, one line each (bench, predict, optimize).
app.add_typer(bench_app, name="bench")
app.add_typer(predict_app, name="predict")
app.add_typer(optimize_app, name="optimize")
app.command("probe-link")(probe_link_command)
