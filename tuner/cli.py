"""The `tuner` command: each subcommand lives with the part it drives."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Benchmark endpoints, predict layouts, and tune serving plans for Tandem.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
# Subcommands register below, one line each (bench, predict, optimize).
