"""`gateway serve --config FILE`: the gateway alone, in front of OpenAI-compatible upstreams (e.g. plain
`vllm serve` processes), with nothing but the gateway's own dependencies installed; and the
commands that manage a running gateway over its admin routes, `gateway keys add|list|models|rotate|revoke`
and `gateway usage` (gateway.admin_client), which work the same against `gateway serve` and a
deployed stack.

The console script `gateway` is deploy/cli.py's app, which offers this command beside the ones that
start stacks (`up`, `deploy`, `status`, `down`); this module stays in the gateway layer and never
imports deploy/ (docs/architecture.md). `python -m gateway.cli serve ...` runs it alone.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

import orjson
import typer
from rich.console import Console
from rich.table import Table

from gateway.admin_client import (
    ADMIN_KEY_ENV,
    CA_FILE_ENV,
    DEFAULT_URL,
    URL_ENV,
    AdminClient,
    AdminError,
    parse_duration,
    parse_time,
)
from gateway.contract.config import ConfigError, LogFormat, LogLevel, TrafficClass
from gateway.server import run_serve_command

app = typer.Typer(
    help="Tandem's gateway alone, in front of OpenAI-compatible upstreams.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)
T = TypeVar("T")


@app.callback()
def _group() -> None:
    """Keeps `serve` a subcommand (`python -m gateway.cli serve ...`), as under the `gateway` command."""


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", help="Gateway config YAML.", exists=True, dir_okay=False)],
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="text, or one JSON object per line (default: the config's settings.log)."),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option("--log-level", help="info logs one line per request; warning leaves them out."),
    ] = None,
) -> None:
    """Run the gateway alone in front of OpenAI-compatible upstreams (e.g. `vllm serve`)."""
    try:
        run_serve_command(config, host, port, log_format=log_format, log_level=log_level)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


UrlOption = Annotated[
    str, typer.Option("--url", envvar=URL_ENV, help="The gateway's address (its /v1 base URL also works).")
]
CaOption = Annotated[
    Path | None,
    typer.Option("--cacert", envvar=CA_FILE_ENV, help="CA certificate to trust for an https gateway.", dir_okay=False),
]
OutputFormat = Literal["table", "csv", "json"]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table, csv or json.")]
out = Console()
keys_app = typer.Typer(
    help=f"Add, list, limit to models, rotate and revoke the gateway's API keys, at once and without a redeploy. "
    f"The admin key is read from ${ADMIN_KEY_ENV} (not needed on loopback while the gateway has no keys).",
    no_args_is_help=True,
)


def _client(url: str, cacert: Path | None) -> AdminClient:
    return AdminClient(url, os.environ.get(ADMIN_KEY_ENV), cacert)


def _admin(call: Callable[[], T]) -> T:
    """Run an admin call; the gateway's refusal is printed, not raised."""
    try:
        return call()
    except AdminError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _moment(text: str | None, option: str, *, past: bool = False) -> float | None:
    if text is None:
        return None
    try:
        return time.time() - parse_duration(text) if past else parse_time(text)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {option}: {exc}")
        raise typer.Exit(2) from None


ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model", help="A model (name or alias) the key may use; repeat for several. None given: every model."
    ),
]


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _issued(key: dict[str, Any], what: str) -> None:
    """The new secret alone on stdout (for `KEY=$(gateway keys add ...)`), the rest on stderr."""
    console.print(
        f"{what} key [bold]{key['name']}[/bold] (expires {_when(key.get('expires_at'))}, shown once: "
        "hand it over now, the gateway keeps only its hash):",
        highlight=False,
    )
    typer.echo(key["key"])


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Shown in usage, metrics and logs, e.g. the teammate's name.")],
    url: UrlOption = DEFAULT_URL,
    cacert: CaOption = None,
    admin: Annotated[bool, typer.Option("--admin", help="May manage keys, usage and routing.")] = False,
    traffic_class: Annotated[
        TrafficClass | None,
        typer.Option("--class", help="interactive or batch: this key's class unless a request says."),
    ] = None,
    models: ModelOption = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute.", min=1)] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="Prompt + completion tokens per minute.", min=1)] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Requests in flight.", min=1)] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="In a while (30d, 12h) or on a date (2027-01-31, UTC).")
    ] = None,
) -> None:
    """Add a key; it works from the next request. Prints the key once, on stdout."""
    body = {
        "name": name,
        "admin": admin,
        "default_class": traffic_class,
        "models": models or None,
        "requests_per_minute": rpm,
        "tokens_per_minute": tpm,
        "max_concurrent": concurrency,
        "expires_at": _moment(expires, "--expires"),
    }
    client = _client(url, cacert)
    _issued(_admin(lambda: client.call("POST", "/admin/keys", body)), "new")


@keys_app.command("models")
def keys_models(
    name: str,
    url: UrlOption = DEFAULT_URL,
    cacert: CaOption = None,
    models: ModelOption = None,
    every: Annotated[bool, typer.Option("--all", help="Lift the limit: the key may use every model.")] = False,
) -> None:
    """Limit a stored key to the models given (--model, repeated), or lift its limit (--all); its secret stays."""
    if bool(models) == every:
        console.print("[red]error:[/red] give the models (--model NAME, repeated) or --all, not both")
        raise typer.Exit(2)
    client = _client(url, cacert)
    key = _admin(lambda: client.call("PATCH", f"/admin/keys/{quote(name, safe='')}", {"models": models or None}))
    allowed = "every model" if key["models"] is None else ", ".join(key["models"])
    console.print(f"key [bold]{name}[/bold] may use {allowed}", highlight=False)


@keys_app.command("rotate")
def keys_rotate(name: str, url: UrlOption = DEFAULT_URL, cacert: CaOption = None) -> None:
    """Give a key a new secret: the old one is refused from now on; limits stay."""
    client = _client(url, cacert)
    _issued(_admin(lambda: client.call("POST", f"/admin/keys/{quote(name, safe='')}/rotate")), "rotated")


@keys_app.command("revoke")
def keys_revoke(name: str, url: UrlOption = DEFAULT_URL, cacert: CaOption = None) -> None:
    """Revoke a key: refused from the next request on."""
    client = _client(url, cacert)
    _admin(lambda: client.call("DELETE", f"/admin/keys/{quote(name, safe='')}"))
    console.print(f"revoked key [bold]{name}[/bold]", highlight=False)


@keys_app.command("list")
def keys_list(url: UrlOption = DEFAULT_URL, cacert: CaOption = None, fmt: FormatOption = "table") -> None:
    """Every key by name, where it comes from, its models, limits and expiry (never a secret)."""
    client = _client(url, cacert)
    keys = _admin(lambda: client.call("GET", "/admin/keys"))["data"]
    columns = (
        "name",
        "source",
        "prefix",
        "admin",
        "default_class",
        "models",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent",
        "expires_at",
        "created_at",
    )
    rows = [[k.get(c) for c in columns] for k in keys]
    titles = (
        "name",
        "source",
        "starts with",
        "admin",
        "class",
        "models",
        "req/min",
        "tok/min",
        "concurrent",
        "expires",
        "created",
    )
    _print_rows(fmt, columns, rows, titles, times={"expires_at", "created_at"}, what="keys")


@app.command("usage")
def usage(
    since: Annotated[str, typer.Option("--since", help="How far back: 24h, 7d, 4w (counted by the hour).")] = "7d",
    url: UrlOption = DEFAULT_URL,
    cacert: CaOption = None,
    fmt: FormatOption = "table",
) -> None:
    """Requests, tokens and errors per key, model and traffic class over a period."""
    start = _moment(since, "--since", past=True)
    client = _client(url, cacert)
    rows = _admin(lambda: client.call("GET", "/admin/usage", since=start))["data"]
    columns = ("key", "model", "traffic_class", "requests", "prompt_tokens", "completion_tokens", "errors")
    titles = ("key", "model", "class", "requests", "prompt tokens", "completion tokens", "errors")
    _print_rows(fmt, columns, [[r[c] for c in columns] for r in rows], titles, what=f"usage since {_when(start)}")


def _print_rows(
    fmt: OutputFormat,
    columns: tuple[str, ...],
    rows: list[list[Any]],
    titles: tuple[str, ...],
    *,
    what: str,
    times: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Rows as a rich table, CSV or JSON (a list of objects named by `columns`) on stdout. A list
    (a key's models) is one JSON array, or one cell of its items joined by spaces; None in a
    table is '-' (no limit)."""
    if fmt == "json":
        typer.echo(orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows], option=orjson.OPT_INDENT_2))
        return
    rows = [[" ".join(v) if isinstance(v, list) else v for v in row] for row in rows]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    table = Table(title=what, title_justify="left")
    for title, column in zip(titles, columns, strict=True):
        numeric = column.endswith(("tokens", "minute", "requests", "errors", "concurrent"))
        table.add_column(title, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(
            *(_when(v) if c in times else "-" if v is None else str(v) for c, v in zip(columns, row, strict=True))
        )
    out.print(table)


def show_gateway_status(url: str, cacert: Path | None) -> bool:
    """Print what GET /admin/status tells (the facts of the /status page); False, saying why, when
    the gateway does not answer or refuses."""
    try:
        facts = _client(url, cacert).call("GET", "/admin/status")
    except AdminError as exc:
        console.print(f"gateway: {exc}", highlight=False)
        return False
    notes = [f"up {facts['up_s']} s"]
    notes += ["interactive spills to the batch replica"] if facts["spilling"] else []
    notes += ["batch yields to interactive"] if facts["batch_held"] else []
    served = ", ".join(m["name"] for m in facts["models"])
    out.print(f"[bold]{served}[/bold] at {url}: {'; '.join(notes)}", highlight=False)
    replicas = Table(title="replicas", title_justify="left")
    for title in ("replica", "model", "class", "health", "frozen", "in flight", "running", "waiting", "max seqs"):
        replicas.add_column(
            title, justify="left" if title in ("replica", "model", "class", "health", "frozen") else "right"
        )
    for r in facts["replicas"]:
        health = "[green]healthy[/green]" if r["healthy"] else "[red bold]down[/red bold]"
        replicas.add_row(
            r["name"],
            r["model"],
            r["traffic_class"],
            health,
            "frozen" if r["frozen"] else "-",
            *(str(r[k]) for k in ("in_flight", "running", "waiting", "max_num_seqs")),
        )
    out.print(replicas)
    minutes = round(facts["latency_window_s"] / 60)
    classes = Table(title=f"classes (TTFT/TPOT of the last {minutes} min of streams)", title_justify="left")
    columns = ("in_flight", "queued", "streams", "ttft_p50_ms", "ttft_p95_ms", "tpot_p50_ms", "tpot_p95_ms")
    classes.add_column("class")
    for column in columns:
        classes.add_column(column.replace("_", " "), justify="right")
    for name, c in facts["classes"].items():
        classes.add_row(name, *("-" if c.get(k) is None else str(c[k]) for k in columns))
    out.print(classes)
    usage_columns = ("key", "model", "traffic_class", "requests", "prompt_tokens", "completion_tokens", "errors")
    titles = ("key", "model", "class", "requests", "prompt tokens", "completion tokens", "errors")
    rows = [[u[c] for c in usage_columns] for u in facts["usage"]]
    _print_rows("table", usage_columns, rows, titles, what="usage, last 24 hours")
    return True


app.add_typer(keys_app, name="keys")


if __name__ == "__main__":
    sys.exit(app())
