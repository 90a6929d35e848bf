"""The shared endpoint under abuse (issue 14's long fault scenarios): overload, bad input at volume,
and a soak, against the real CPU stack; figures for docs/reliability.md.

    flock /tmp/tandem-heavy.lock .venv/bin/python benchmarks/reliability.py \\
        [--url http://127.0.0.1:8000/v1] [--overload-s 60] [--bad-inputs 10000] [--soak-min 30]

Without --url it starts the demo stack (deploy/plans/cpu-demo.yaml) itself. Steps, in order:

1. capacity: interactive streams (16 tokens) in a closed loop of 16 clients for 20 s: completed
   requests per second, the baseline the other steps are sized by.
2. overload: 10x that rate, open loop, for --overload-s: how many were admitted, how many got a 429
   and whether each 429 carried Retry-After, other errors, admitted TTFT against the class's
   first-token deadline, the gateway's RSS before and after.
3. bad input: --bad-inputs requests drawn from tuner.bench.hostile (hypothesis), 32 at a time, with
   a good request every 500: every answer must be a 2xx or an OpenAI envelope with a 4xx.
4. soak: mixed traffic (interactive streams, batch n=2 completions) at 70% of capacity for
   --soak-min: errors, requests lost (sent and never answered), the gateway's RSS growth from the
   end of the first minute to the end.

Prints one line per figure and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import psutil
from hypothesis import HealthCheck, Phase, given, settings

from gateway.contract.percentiles import percentile
from tuner.bench.hostile import HostileRequest, check_answer, hostile_requests

CHAT = "/chat/completions"


def auth_headers() -> dict[str, str]:
    """Bearer auth from OPENAI_API_KEY (a gateway with keys on), as the OpenAI SDK does; never printed."""
    key = os.environ.get("OPENAI_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def client(base_url: str, timeout: float, limits: httpx.Limits | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout, headers=auth_headers(), limits=limits or httpx.Limits()
    )


@dataclass
class Outcome:
    status: int  # 0: transport error; -1: no answer within the client's timeout
    ttft_s: float | None = None
    retry_after: bool = False
    error: str | None = None  # what a failure said: the exception, or the error event's message


def refused(reply: httpx.Response) -> Outcome:
    """An answer other than 200; a 5xx keeps what it said (the gateway's OpenAI error message)."""
    said = f"{reply.status_code}: {reply.text[:160]}" if reply.status_code >= 500 else None
    return Outcome(reply.status_code, retry_after="retry-after" in reply.headers, error=said)


def failure(exc: httpx.HTTPError) -> Outcome:
    """A request the client got no answer to: -1 for its own timeout, 0 for a transport error."""
    return Outcome(-1 if isinstance(exc, httpx.TimeoutException) else 0, error=f"{type(exc).__name__}: {exc}"[:160])


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    sending_s: float = 0.0  # how long the arrivals took to issue: above the planned time, the client lagged
    total_s: float = 0.0  # until the last answer

    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    def ttfts(self) -> list[float]:
        return sorted(o.ttft_s for o in self.outcomes if o.status == 200 and o.ttft_s is not None)


async def stream_chat(http: httpx.AsyncClient, model: str, traffic_class: str, max_tokens: int = 16) -> Outcome:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    start = time.perf_counter()
    try:
        async with http.stream("POST", CHAT, json=body, headers={"X-Tandem-Class": traffic_class}) as reply:
            if reply.status_code != 200:
                await reply.aread()
                return refused(reply)
            ttft = None
            error = None
            async for line in reply.aiter_lines():
                if line.startswith("data: {") and ttft is None:
                    ttft = time.perf_counter() - start
                if line.startswith('data: {"error"'):
                    error = orjson.loads(line[6:])["error"].get("message", "")[:160]
            return Outcome(200 if error is None else 599, ttft, error=error)
    except httpx.TransportError as exc:
        return failure(exc)


async def batch_completion(http: httpx.AsyncClient, model: str) -> Outcome:
    body = {"model": model, "prompt": ["one", "two"], "max_tokens": 16}
    try:
        reply = await http.post("/completions", json=body)
        return Outcome(200) if reply.status_code == 200 else refused(reply)
    except httpx.TransportError as exc:
        return failure(exc)


def failures_said(outcomes: list[Outcome]) -> dict[str, int]:
    """The 8 most common things failures said, with their counts."""
    return dict(Counter(o.error for o in outcomes if o.error).most_common(8))


def gateway_process(base_url: str) -> psutil.Process:
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    pids = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.status == "LISTEN"}
    if len(pids) != 1:
        raise SystemExit(f"cannot tell the gateway's process from its port {port}: {pids}")
    return psutil.Process(pids.pop())


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def mixed_request(http: httpx.AsyncClient, model: str, rng: random.Random, mix_batch: float) -> Awaitable[Outcome]:
    """One request of the soak's mix: a batch completion of two prompts with probability
    `mix_batch`, else an interactive stream."""
    if rng.random() < mix_batch:
        return batch_completion(http, model)
    return stream_chat(http, model, "interactive")


async def capacity(
    base_url: str, model: str, seconds: float = 20.0, clients: int = 16, mix_batch: float = 0.0
) -> float:
    """Requests answered 200 per second by `clients` closed-loop clients sending the mix."""
    done = 0
    stop_at = time.monotonic() + seconds
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with client(base_url, 120, limits) as http:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                if (await mixed_request(http, model, rng, mix_batch)).status == 200:
                    done += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return done / seconds


async def open_loop(base_url: str, model: str, rate: float, seconds: float, mix_batch: float = 0.0) -> Tally:
    """Requests at `rate` per second (Poisson arrivals) for `seconds`; each is a stream (interactive)
    or, with probability `mix_batch`, a batch completion of two prompts."""
    tally = Tally()
    rng = random.Random(14)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with client(base_url, 300, limits) as http:
        tasks: list[asyncio.Task[Outcome]] = []
        start = time.monotonic()
        next_at = start
        while next_at - start < seconds:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tasks.append(asyncio.ensure_future(mixed_request(http, model, rng, mix_batch)))
            next_at += rng.expovariate(rate)
        tally.sending_s = time.monotonic() - start
        tally.outcomes = list(await asyncio.gather(*tasks))
        tally.total_s = time.monotonic() - start
    return tally


async def bad_inputs(base_url: str, model: str, count: int) -> dict[str, object]:
    requests: list[HostileRequest] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_requests(model=model))
    def collect(request: HostileRequest) -> None:
        requests.append(request)

    collect()
    root = base_url.removesuffix("/v1")
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    good_failed = 0
    semaphore = asyncio.Semaphore(32)
    async with client(root, 300) as http:

        async def send(request: HostileRequest) -> None:
            async with semaphore:
                try:
                    reply = await http.request(
                        request.method, request.path, content=request.body, headers=request.headers
                    )
                except httpx.HTTPError as exc:
                    problems.append(f"{type(exc).__name__} for {request!r}")
                    statuses[0] += 1
                    return
            statuses[reply.status_code] += 1
            problem = check_answer(reply.status_code, reply.headers.get("content-type", ""), reply.content)
            if problem:
                problems.append(f"{problem} for {request!r}")

        async def good() -> None:
            nonlocal good_failed
            if (await stream_chat(http_v1, model, "interactive", max_tokens=4)).status != 200:
                good_failed += 1

        async with client(base_url, 300) as http_v1:
            tasks = []
            for i, request in enumerate(requests):
                tasks.append(asyncio.create_task(send(request)))
                if i % 500 == 0:
                    tasks.append(asyncio.create_task(good()))
            await asyncio.gather(*tasks)
    return {
        "sent": len(requests),
        "statuses": dict(sorted(statuses.items())),
        "problems": len(problems),
        "first_problems": problems[:5],
        "good_requests_failed": good_failed,
        "good_requests": (len(requests) + 499) // 500,
    }


def soak(
    base_url: str, model: str, gateway: psutil.Process, rate: float, minutes: float, mix_batch: float = 0.3
) -> dict[str, object]:
    """Mixed traffic at `rate` for `minutes`: what every request got, and the gateway's RSS growth
    from the end of the first minute (its caches and pools warm) to the end."""
    gateway.cpu_percent()
    warm = asyncio.run(open_loop(base_url, model, rate, min(60.0, minutes * 60), mix_batch=mix_batch))
    rss_start = rss_mb(gateway)
    tally = asyncio.run(open_loop(base_url, model, rate, max(0.0, minutes * 60 - 60), mix_batch=mix_batch))
    rss_end = rss_mb(gateway)
    outcomes = warm.outcomes + tally.outcomes
    statuses = Counter(o.status for o in outcomes)
    ttfts = sorted(o.ttft_s for o in outcomes if o.status == 200 and o.ttft_s is not None)
    return {
        "minutes": minutes,
        "rate_rps": round(rate, 2),
        "sent": len(outcomes),
        "issued_in_s": round(warm.sending_s + tally.sending_s, 1),
        "statuses": dict(sorted(statuses.items())),
        "errors": sum(n for s, n in statuses.items() if s != 200),
        "lost": statuses.get(-1, 0) + statuses.get(0, 0),
        "failures_said": failures_said(outcomes),
        "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_p99_s": round(percentile(ttfts, 99), 3) if ttfts else None,
        "gateway_cpu_pct": round(gateway.cpu_percent(), 1),
        "gateway_rss_mb": [round(rss_start, 1), round(rss_end, 1)],
        "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
    }


@contextlib.contextmanager
def stack(url: str | None) -> Iterator[tuple[str, str]]:
    if url is not None:
        model = httpx.get(f"{url}/models", timeout=10, headers=auth_headers()).json()["data"][0]["id"]
        yield url, model
        return
    from deploy.plan import load_plan, shipped_plan
    from deploy.stack import running_stack

    with running_stack(load_plan(shipped_plan("cpu-demo"))) as deployed:
        yield deployed.base_url, deployed.model


def first_token_deadline(base_url: str) -> float:
    routing = httpx.get(f"{base_url.removesuffix('/v1')}/admin/routing", timeout=10, headers=auth_headers()).json()
    return float(routing["limits"]["interactive"]["first_token_timeout_s"])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A running stack's base URL (default: start the demo stack).")
    parser.add_argument("--overload-s", type=float, default=60.0)
    parser.add_argument("--overload-factor", type=float, default=10.0)
    parser.add_argument("--bad-inputs", type=int, default=10_000)
    parser.add_argument("--soak-min", type=float, default=30.0)
    parser.add_argument("--soak-load", type=float, default=0.7, help="Fraction of the measured capacity.")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` and kill: stop the stack we started
    summary: dict[str, object] = {}
    with stack(args.url) as (base_url, model):
        gateway = gateway_process(base_url)
        rate = asyncio.run(capacity(base_url, model))
        summary["capacity_rps"] = round(rate, 2)
        print(f"capacity: {rate:.2f} interactive streams/s (16 clients, 16 tokens each)", flush=True)

        if args.overload_s > 0:
            rss_before = rss_mb(gateway)
            offered = args.overload_factor * rate
            tally = asyncio.run(open_loop(base_url, model, offered, args.overload_s))
            statuses = tally.statuses()
            refused = [o for o in tally.outcomes if o.status == 429]
            ttfts = tally.ttfts()
            deadline = first_token_deadline(base_url)
            summary["overload"] = {
                "offered_rps": round(offered, 1),
                "seconds": args.overload_s,
                "sent": len(tally.outcomes),
                "issued_in_s": round(tally.sending_s, 1),
                "all_answered_in_s": round(tally.total_s, 1),
                "statuses": dict(sorted(statuses.items())),
                "429_with_retry_after": sum(o.retry_after for o in refused),
                "admitted_ttft_p50_s": round(percentile(ttfts, 50), 2) if ttfts else None,
                "admitted_ttft_p99_s": round(percentile(ttfts, 99), 2) if ttfts else None,
                "admitted_ttft_max_s": round(max(ttfts, default=float("nan")), 2),
                "first_token_deadline_s": deadline,
                "gateway_rss_mb": [round(rss_before, 1), round(rss_mb(gateway), 1)],
                "failures_said": failures_said(tally.outcomes),
            }
            print(f"overload: {json.dumps(summary['overload'])}", flush=True)

        if args.bad_inputs > 0:
            rss_before = rss_mb(gateway)
            started = time.monotonic()
            result = asyncio.run(bad_inputs(base_url, model, args.bad_inputs))
            result["seconds"] = round(time.monotonic() - started, 1)
            result["gateway_rss_mb"] = [round(rss_before, 1), round(rss_mb(gateway), 1)]
            summary["bad_inputs"] = result
            print(f"bad inputs: {json.dumps(result)}", flush=True)

        if args.soak_min > 0:
            summary["soak"] = soak(base_url, model, gateway, args.soak_load * rate, args.soak_min)
            print(f"soak: {json.dumps(summary['soak'])}", flush=True)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
