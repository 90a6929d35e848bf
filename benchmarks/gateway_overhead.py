"""What the gateway adds on top of a replica: latency, time to first chunk, CPU, peak req/s.

One run measures, against the same fast fake upstream (tests/fake_upstream.py):
  direct    the load generator talks to the upstream itself (the baseline)
  gateway   Tandem's gateway with every feature on: API keys, classification, class-aware
            routing with engine-load polling, metrics (the per-request log line, at INFO, off: --log-level warning)
  naive     a FastAPI + httpx pass-through proxy (what a first attempt looks like)
  litellm   LiteLLM's proxy, from its own virtualenv .venv-litellm (`make bench` makes it)

The proxy under test is pinned to core 0 (taskset); the upstream and the load generator share
core 1. The load generator is a raw asyncio HTTP/1.1 client (keep-alive, one connection per
concurrent worker), so that it costs little CPU beside the upstream. Added latency is the proxy's
percentile minus the direct percentile at the same concurrency; CPU per request is the proxy
process's user+system time over the requests it served.

    .venv/bin/python benchmarks/gateway_overhead.py [--seconds 3] [--json results/gateway_overhead.json]

Targets (issue #3), at c=1 unless said: added p50 <= 0.4 ms, added TTFC <= 0.6 ms,
>= 3,000 req/s on one core from c=8 to c=64, <= 350 us of gateway CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import yaml
from rich.console import Console
from rich.table import Table

from deploy.ports import free_port
from gateway.contract.percentiles import percentile

ROOT = Path(__file__).resolve().parents[1]
# LiteLLM pins its own versions of the libraries Tandem uses: it lives in a virtualenv of its own.
LITELLM_PYTHON = ROOT / ".venv-litellm" / "bin" / "python"
MODEL = "bench-model"
KEY = "sk-bench-0123456789"
CONCURRENCY = (1, 8, 32, 64)
PROXY_CORE, LOAD_CORE = "0", "1"
TARGETS = {"added_p50_ms": 0.4, "added_ttfc_ms": 0.6, "min_rps": 3000, "cpu_us_per_request": 350}
console = Console()


# ---- load generator ------------------------------------------------------------------------
def _request(path: str, body: dict, host: str) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


async def _read_response(reader: asyncio.StreamReader) -> float | None:
    """Read one response; return the time its first body chunk arrived (streams), else None."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:200]!r}")
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        return None
    first: float | None = None
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return first
        if first is None:
            first = time.perf_counter()


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    first_chunks: list[float] = field(default_factory=list)


async def _load(port: int, request: bytes, concurrency: int, seconds: float, warmup: float) -> tuple[Sample, float]:
    sample = Sample()
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while (now := time.perf_counter()) < stop_at:
                writer.write(request)
                first = await _read_response(reader)
                done = time.perf_counter()
                if now >= measure_from:
                    sample.latencies.append(done - now)
                    if first is not None:
                        sample.first_chunks.append(first - now)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sample, seconds


# ---- processes under test ------------------------------------------------------------------


def _wait_listening(port: int, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout_s} s")


@contextlib.contextmanager
def serving_process(args: list[str], port: int, core: str | None, log: Path) -> Iterator[subprocess.Popen]:
    """A server process (pinned to `core` unless None), stopped on exit; yielded once it listens."""
    pinned = ["taskset", "-c", core] if core is not None else []
    with log.open("wb") as out:
        process = subprocess.Popen([*pinned, *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_listening(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def gateway_config(upstream_port: int, port: int, workdir: Path) -> Path:
    """Every feature on: keys with a default class, class-aware routing over two replicas (both
    the same fake here), engine-load polling, metrics."""
    replica = {"model": MODEL, "base_url": f"http://127.0.0.1:{upstream_port}/v1", "max_num_seqs": 256}
    config = {
        "model": "tandem-bench",
        "replicas": [
            replica | {"name": "tp", "traffic_class": "interactive"},
            replica | {"name": "pp", "traffic_class": "batch", "scheduling_policy": "priority"},
        ],
        "settings": {
            "host": "127.0.0.1",
            "port": port,
            "auth": {"keys": [{"name": "bench", "key": KEY, "requests_per_minute": 10_000_000}]},
            "routing": {"limits": {"interactive": {"max_concurrency": 256}, "batch": {"max_concurrency": 256}}},
        },
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def gateway_command(config: Path) -> list[str]:
    """Tandem's gateway serving `config`, as its own process."""
    serve = f"from gateway.server import run_serve_command; run_serve_command({str(config)!r}, log_level='warning')"
    return [sys.executable, "-c", serve]


NAIVE_PROXY = """
import sys, httpx, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
upstream, port = sys.argv[1], int(sys.argv[2])
app = FastAPI()
client = httpx.AsyncClient(base_url=upstream, timeout=60)
@app.post("/v1/{path:path}")
async def proxy(path: str, request: Request):
    body = await request.body()
    req = client.build_request("POST", "/" + path, content=body, headers={"content-type": "application/json"})
    upstream_response = await client.send(req, stream=True)
    if upstream_response.headers.get("content-type", "").startswith("text/event-stream"):
        return StreamingResponse(upstream_response.aiter_raw(), media_type="text/event-stream",
                                 background=None)
    data = await upstream_response.aread()
    return Response(data, status_code=upstream_response.status_code, media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools")
"""


def _litellm_config(upstream_port: int, workdir: Path) -> Path:
    config = {
        "model_list": [
            {
                "model_name": "tandem-bench",
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "unused",
                },
            }
        ],
        # LiteLLM refuses to start open; the same key as the gateway's, so both check one.
        "general_settings": {"master_key": KEY},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- measurement ---------------------------------------------------------------------------
@dataclass
class Row:
    target: str
    concurrency: int
    p50_ms: float
    p99_ms: float
    rps: float
    ttfc_p50_ms: float | None = None
    cpu_us_per_request: float | None = None


def _measure(target: str, port: int, pid: int | None, model: str, seconds: float) -> list[Row]:
    host = f"127.0.0.1:{port}"
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    plain = _request("/v1/chat/completions", chat, host)
    stream = _request("/v1/chat/completions", chat | {"stream": True}, host)
    process = psutil.Process(pid) if pid else None
    rows = []
    for concurrency in CONCURRENCY:
        cpu_before = sum(process.cpu_times()[:2]) if process else 0.0
        sample, duration = asyncio.run(_load(port, plain, concurrency, seconds, warmup=0.3))
        cpu = (sum(process.cpu_times()[:2]) - cpu_before) if process else None
        served = len(sample.latencies) * (seconds + 0.3) / seconds  # the warm-up's requests used CPU too
        rows.append(
            Row(
                target,
                concurrency,
                percentile(sample.latencies, 50) * 1000,
                percentile(sample.latencies, 99) * 1000,
                len(sample.latencies) / duration,
                cpu_us_per_request=(cpu / served * 1e6) if cpu is not None else None,
            )
        )
    sample, _ = asyncio.run(_load(port, stream, 1, seconds, warmup=0.3))
    rows[0].ttfc_p50_ms = percentile(sample.first_chunks, 50) * 1000
    return rows


def run(seconds: float) -> list[Row]:
    python = sys.executable
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gateway-overhead-") as tmp:
        workdir = Path(tmp)
        upstream_port = free_port()
        upstream_args = [python, "tests/fake_upstream.py", "--port", str(upstream_port), "--model", MODEL]
        with serving_process(upstream_args, upstream_port, LOAD_CORE, workdir / "upstream.log"):
            console.print(f"[bold]direct[/bold] to the fake upstream (core {LOAD_CORE})")
            rows += _measure("direct", upstream_port, None, MODEL, seconds)

            port = free_port()
            config = gateway_config(upstream_port, port, workdir)
            with serving_process(gateway_command(config), port, PROXY_CORE, workdir / "gateway.log") as gateway:
                console.print(f"[bold]gateway[/bold] (core {PROXY_CORE}, every feature on)")
                rows += _measure("gateway", port, gateway.pid, "tandem-bench", seconds)

            port = free_port()
            naive = [python, "-c", NAIVE_PROXY, f"http://127.0.0.1:{upstream_port}/v1", str(port)]
            with serving_process(naive, port, PROXY_CORE, workdir / "naive.log") as proxy:
                console.print(f"[bold]naive[/bold] FastAPI + httpx pass-through (core {PROXY_CORE})")
                rows += _measure("naive", port, proxy.pid, MODEL, seconds)

            if not LITELLM_PYTHON.exists():
                console.print(f"[yellow]no {LITELLM_PYTHON}: LiteLLM's proxy skipped (`make bench` makes it)[/yellow]")
            else:
                port = free_port()
                config = _litellm_config(upstream_port, workdir)
                cli = "import sys; from litellm import run_server; sys.exit(run_server())"
                args = [
                    str(LITELLM_PYTHON),
                    "-c",
                    cli,
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--num_workers",
                    "1",
                ]
                with serving_process(args, port, PROXY_CORE, workdir / "litellm.log") as proxy:
                    console.print(f"[bold]litellm[/bold] proxy (core {PROXY_CORE})")
                    rows += _measure("litellm", port, proxy.pid, "tandem-bench", seconds)
    return rows


def summarize(rows: list[Row]) -> dict:
    direct = {r.concurrency: r for r in rows if r.target == "direct"}
    summary: dict[str, dict] = {}
    for target in dict.fromkeys(r.target for r in rows if r.target != "direct"):
        mine = {r.concurrency: r for r in rows if r.target == target}
        summary[target] = {
            "added_p50_ms": {c: mine[c].p50_ms - direct[c].p50_ms for c in mine},
            "added_p99_ms": {c: mine[c].p99_ms - direct[c].p99_ms for c in mine},
            "added_ttfc_ms": mine[1].ttfc_p50_ms - direct[1].ttfc_p50_ms,  # type: ignore[operator]  # _measure sets ttfc at c=1
            "peak_rps": max(r.rps for r in mine.values() if r.concurrency >= 8),
            "min_rps_c8_to_c64": min(r.rps for r in mine.values() if r.concurrency >= 8),
            "cpu_us_per_request": statistics.median(
                r.cpu_us_per_request for r in mine.values() if r.cpu_us_per_request
            ),
        }
    return summary


def report(rows: list[Row], summary: dict) -> None:
    table = Table(title="Requests (non-streaming chat, 16 tokens) and c=1 streaming time to first chunk")
    for column in ("target", "c", "p50 ms", "p99 ms", "req/s", "TTFC p50 ms", "CPU us/req"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r.target, str(r.concurrency), f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.rps:,.0f}",
            f"{r.ttfc_p50_ms:.2f}" if r.ttfc_p50_ms is not None else "",
            f"{r.cpu_us_per_request:.0f}" if r.cpu_us_per_request else "",
        )  # fmt: skip
    console.print(table)
    added = Table(title="Added by the proxy (minus direct at the same concurrency)")
    for column in ("target", "p50 c=1/8/32 ms", "p99 c=1/8/32 ms", "TTFC c=1 ms", "min req/s c>=8", "CPU us/req"):
        added.add_column(column, justify="right")
    for target, s in summary.items():
        added.add_row(
            target,
            " / ".join(f"{s['added_p50_ms'][c]:.2f}" for c in (1, 8, 32)),
            " / ".join(f"{s['added_p99_ms'][c]:.2f}" for c in (1, 8, 32)),
            f"{s['added_ttfc_ms']:.2f}",
            f"{s['min_rps_c8_to_c64']:,.0f}",
            f"{s['cpu_us_per_request']:.0f}",
        )
    console.print(added)
    if "gateway" in summary:
        g = summary["gateway"]
        checks = {
            "added p50 at c=1 (ms)": (g["added_p50_ms"][1], TARGETS["added_p50_ms"], "<="),
            "added TTFC at c=1 (ms)": (g["added_ttfc_ms"], TARGETS["added_ttfc_ms"], "<="),
            "req/s, lowest of c=8..64": (g["min_rps_c8_to_c64"], TARGETS["min_rps"], ">="),
            "CPU per request (us)": (g["cpu_us_per_request"], TARGETS["cpu_us_per_request"], "<="),
        }
        for name, (value, target, op) in checks.items():
            ok = value <= target if op == "<=" else value >= target
            ratio = value / target
            console.print(
                f"  {'[green]met' if ok else '[red]missed'}[/] {name}: {value:,.2f} (target {op} {target:,}; {ratio:.2f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Measured seconds per concurrency level.")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "gateway_overhead.json")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # the load generator shares core 1 with the upstream
    rows = run(args.seconds)
    summary = summarize(rows)
    report(rows, summary)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    payload = {"machine": machine, "targets": TARGETS, "rows": [asdict(r) for r in rows], "summary": summary}
    args.json.write_text(json.dumps(payload, indent=2))
    console.print(f"written {args.json}")


if __name__ == "__main__":
    main()
