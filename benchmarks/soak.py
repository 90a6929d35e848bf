"""A soak at a fraction of the capacity measured in the same run: the gateway alone in front of a
paced fake engine, or a running stack (issue 22, item 3).

    # The gateway alone (this machine): fake upstream with tokens 10 ms apart, 30 minutes at 70%
    nice -n 10 .venv/bin/python benchmarks/soak.py --minutes 30 --out benchmarks/results/soak-gateway.json

    # A running stack (the GPU box): capacity first, then the soak, in one command
    .venv/bin/python benchmarks/soak.py --url http://127.0.0.1:8000/v1 --model llama-3.1-8b-dummy \\
        --minutes 7 --out $OUT/soak-stack.json

Without --url it starts `tests/fake_upstream.py` (--token-delay-ms apart, a GPU's decode pace)
and Tandem's gateway in front of it (benchmarks/gateway_overhead.py's configuration: keys,
class-aware routing over two replicas, load polling, metrics), each its own process.

Capacity: closed-loop clients sending the soak's own mix (benchmarks/reliability.py: interactive
streams of 16 tokens, and with probability --mix-batch batch completions of two prompts), at each
client count of --capacity-clients for --capacity-s; the sweep stops once doubling the clients
gains under 10%, and capacity is the best rate seen. The soak (reliability.soak) then sends the
same mix as Poisson arrivals at --load x capacity: errors, requests never answered, and the
gateway's RSS growth from the end of the first minute to the end. Passes with 0 errors and RSS
growth under 5%. The gateway's CPU share at capacity says whether the gateway or the load
generator set the capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from gateway_overhead import KEY, MODEL, gateway_command, gateway_config, serving_process
from reliability import auth_headers, capacity, gateway_process, soak

from deploy.ports import free_port

GAIN_TO_GO_ON = 1.10
MAX_RSS_GROWTH_PCT = 5.0


@contextlib.contextmanager
def gateway_alone(token_delay_ms: float, workdir: Path) -> Iterator[tuple[str, str]]:
    """The fake upstream and the gateway in front of it; (base URL, model) while they run."""
    upstream_port, port = free_port(), free_port()
    upstream = [
        sys.executable, "tests/fake_upstream.py", "--port", str(upstream_port), "--model", MODEL,
        "--token-delay-ms", str(token_delay_ms),
    ]  # fmt: skip
    with serving_process(upstream, upstream_port, None, workdir / "upstream.log"):
        config = gateway_config(upstream_port, port, workdir)
        with serving_process(gateway_command(config), port, None, workdir / "gateway.log"):
            os.environ["OPENAI_API_KEY"] = KEY  # the gateway's configuration turns keys on
            yield f"http://127.0.0.1:{port}/v1", "tandem-bench"


class CpuShares:
    """CPU used by each process (percent of one core) and by the whole machine since creation:
    which of them, if any, set the rate."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self._processes = processes
        for process in processes.values():
            process.cpu_percent()
        psutil.cpu_percent()

    def read(self) -> dict[str, float]:
        shares = {f"{name}_cpu_pct": round(p.cpu_percent(), 1) for name, p in self._processes.items()}
        return shares | {"machine_cpu_pct": round(psutil.cpu_percent(), 1), "load_avg_1min": os.getloadavg()[0]}


def measure_capacity(base_url: str, model: str, clients: list[int], seconds: float, mix_batch: float) -> dict:
    """The best rate of a closed-loop sweep over client counts, stopped once it stops gaining."""
    processes = {"gateway": gateway_process(base_url), "load_generator": psutil.Process()}
    steps = []
    for count in clients:
        shares = CpuShares(processes)
        rate = asyncio.run(capacity(base_url, model, seconds, count, mix_batch))
        steps.append({"clients": count, "rps": round(rate, 2), **shares.read()})
        print(f"capacity: {steps[-1]}", flush=True)
        if len(steps) > 1 and rate < steps[-2]["rps"] * GAIN_TO_GO_ON:
            break
    best = max(steps, key=lambda step: step["rps"])
    return {"rps": best["rps"], "clients": best["clients"], "seconds_per_step": seconds, "sweep": steps}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A running gateway's base URL (default: the gateway alone, started here).")
    parser.add_argument("--model", help="Model name at --url (default: the first of GET /models).")
    parser.add_argument("--token-delay-ms", type=float, default=10.0, help="The fake upstream's pace.")
    parser.add_argument("--minutes", type=float, default=30.0, help="Soak length, the first minute included.")
    parser.add_argument("--load", type=float, default=0.7, help="Fraction of the measured capacity.")
    parser.add_argument("--mix-batch", type=float, default=0.3, help="Share of batch completions in the mix.")
    parser.add_argument("--capacity-clients", default="16,32,64,128,256")
    parser.add_argument("--capacity-s", type=float, default=20.0, help="Seconds per step of the capacity sweep.")
    parser.add_argument("--out", type=Path, help="JSON summary.")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` and kill: stop what was started here
    started = time.monotonic()
    summary: dict[str, object] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version()},
        "target": args.url or f"gateway alone, fake upstream {args.token_delay_ms:g} ms/token",
        "mix_batch": args.mix_batch,
    }
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))  # kept: the gateway's and upstream's logs
    print(f"work dir {workdir}", flush=True)
    with contextlib.ExitStack() as stack:
        if args.url is None:
            base_url, model = stack.enter_context(gateway_alone(args.token_delay_ms, workdir))
        else:
            base_url, model = args.url, args.model or _first_model(args.url)
        clients = [int(c) for c in args.capacity_clients.split(",")]
        found = measure_capacity(base_url, model, clients, args.capacity_s, args.mix_batch)
        summary["capacity"] = found
        gateway = gateway_process(base_url)
        print(f"soak: {args.minutes:g} min at {args.load:.0%} of {found['rps']} requests/s", flush=True)
        shares = CpuShares({"load_generator": psutil.Process()})
        result = soak(base_url, model, gateway, args.load * found["rps"], args.minutes, args.mix_batch)
        result |= shares.read()
        summary["soak"] = result
    passed = result["errors"] == 0 and float(result["rss_growth_pct"]) < MAX_RSS_GROWTH_PCT  # type: ignore[arg-type]
    summary["passed"] = passed
    summary["wall_s"] = round(time.monotonic() - started, 1)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(f"{'PASSED' if passed else 'FAILED'}: {result['errors']} errors, RSS growth {result['rss_growth_pct']}%")
    return 0 if passed else 1


def _first_model(url: str) -> str:
    return str(httpx.get(f"{url}/models", timeout=10, headers=auth_headers()).json()["data"][0]["id"])


if __name__ == "__main__":
    raise SystemExit(main())
