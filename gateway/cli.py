"""`gateway serve --config FILE`: the gateway alone, in front of OpenAI-compatible upstreams (e.g. plain
`vllm serve` processes), with nothing but the gateway's own dependencies installed.

The console script `gateway` is deploy/cli.py's app, which offers this command beside the ones that
start stacks (`up`, `deploy`, `status`, `down`); this module stays in the gateway layer and never
imports deploy/ (docs/architecture.md). `python -m gateway.cli serve ...` runs it alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.config import ConfigError
from gateway.server import run_serve_command

app = typer.Typer(
    help="Tandem's gateway alone, in front of OpenAI-compatible upstreams.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Keeps `serve` a subcommand (`python -m gateway.cli serve ...`), as under the `gateway` command."""


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", help="Gateway config YAML.", exists=True, dir_okay=False)],
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
) -> None:
    """Run the gateway alone in front of OpenAI-compatible upstreams (e.g. `vllm serve`)."""
    try:
        run_serve_command(config, host, port)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


if __name__ == "__main__":
    sys.exit(app())
