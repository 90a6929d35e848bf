"""`--version` of the `gateway` and `tuner` commands: the installed package's version (its
metadata, as pip sees it) and the format versions this install reads and writes, which is what
decides whether plans and data directories carry over an upgrade (docs/operations.md)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import typer

from gateway.batches.store import SCHEMA_VERSION as BATCH_SCHEMA_VERSION
from gateway.state_store import SCHEMA_VERSION


def installed_version() -> str:
    try:
        return version("tandem")
    except PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "unknown (not installed)"


def version_callback(*formats: str) -> Callable[[bool], None]:
    """A typer callback for an eager `--version` flag: prints one line and exits. `formats` are
    extra `name N` facts of the command's layer (the plan format, for instance)."""

    def show(value: bool) -> None:
        if value:
            stores = [f"gateway store schema {SCHEMA_VERSION}", f"batch store schema {BATCH_SCHEMA_VERSION}"]
            facts = ", ".join([*formats, *stores])
            typer.echo(f"tandem {installed_version()} ({facts})")
            raise typer.Exit()

    return show


def version_option(*formats: str) -> Any:
    """The eager `--version` option of a command-line app (typer.Option), showing `formats`."""
    return typer.Option(
        "--version",
        callback=version_callback(*formats),
        is_eager=True,
        help="Print the installed version and the formats it reads.",
    )
