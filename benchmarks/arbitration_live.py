"""GPU arbitration on the live CPU stack: interactive chat beside a saturating batch load, with the
freeze off and on, as ratios against each class alone, measured in the same run on the same stack.

    .venv/bin/python benchmarks/arbitration_live.py [--plans deploy/plans/cpu-demo.yaml
        benchmarks/plans/cpu-roles-swapped.yaml] [--interactive 48] [--batch-concurrency 16]

Per plan (one stack start each; the routing switched through PUT /admin/routing between phases):
  interactive alone   --interactive streamed chats (64 tokens) one after another, 0.5 s apart
  batch alone         --batch-concurrency workers looping non-streamed 256-token completions, for
                      as long as the interactive phase took
  mixed, off          the batch load, and the same interactive stream beside it (class-aware,
                      gpu_arbitration "admission" with batch yielding off: the plan's default)
  mixed, freeze       the same with gpu_arbitration "freeze"
  pause / resume      the batch engine's own latencies: 20 streamed batch requests, each frozen
                      after 5 tokens and resumed (POST /tandem/pause returns once the step in flight
                      has ended; resume to the next token the client reads)
Batch tok/s is the batch engine's own generated-token counter over the interactive stream's window.
TPOT is the whole answer's time per token (the client sees the CPU engine's tokens in bursts).
Targets (issue 13): TPOT p50 <= 1.15x and TTFT p90 <= 1.3x alone; batch: no request lost or
failed, tok/s >= 0.9 x alone x (1 - interactive busy share alone). Results go to
benchmarks/results/arbitration-live.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.contract.percentiles import percentile
from gateway.engine_pause import PAUSE_PATH, RESUME_PATH

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "arbitration-live.json"
PROMPT = "The history of the two boxes, told slowly and in detail:"
TIMEOUT = httpx.Timeout(600.0)


@dataclass
class Chat:
    start: float
    first: float | None = None
    end: float | None = None
    tokens: int = 0

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    @property
    def tpot(self) -> float | None:
        """Seconds per output token over the whole answer. Not (end - first) / (tokens - 1): on the
        CPU stack the engine's own server is starved while its workers compute, and an answer's 64
        tokens mostly reach the client in one burst (that gap measured 0.007 ms alone)."""
        if self.end is None or self.tokens < 1:
            return None
        return (self.end - self.start) / self.tokens


@dataclass
class Flood:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    tokens: int = 0


async def chat(client: httpx.AsyncClient, url: str, model: str, max_tokens: int = 64, prompt: str = PROMPT) -> Chat:
    """One streamed chat of `max_tokens` tokens. Its first token is the first event with a choice (vLLM sends
    it once the prompt is processed; the demo model's first tokens often decode to no text), and its
    token count is the usage the server reports (events can arrive several at a time)."""
    record = Chat(time.monotonic())
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = orjson.loads(line[6:])
            if event.get("choices"):
                record.first = record.first or time.monotonic()
            if event.get("usage"):
                record.tokens = event["usage"]["completion_tokens"]
    record.end = time.monotonic()
    return record


async def interactive_stream(client: httpx.AsyncClient, url: str, model: str, count: int) -> list[Chat]:
    """`count` chats one after another; one that breaks is kept, without an end (counted as failed):
    the first live run here lost one to a dropped connection and lost the whole run with it."""
    chats = []
    for _ in range(count):
        try:
            chats.append(await chat(client, url, model))
        except httpx.HTTPError as exc:
            print(f"interactive request failed: {type(exc).__name__}: {exc}", flush=True)
            chats.append(Chat(time.monotonic()))
        await asyncio.sleep(0.5)
    return chats


async def batch_worker(client: httpx.AsyncClient, url: str, model: str, stop: asyncio.Event, flood: Flood) -> None:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 256, "ignore_eos": True}
    while not stop.is_set():
        try:
            answer = await client.post(f"{url}/completions", json=body, headers={"X-Tandem-Class": "batch"})
            if answer.status_code != 200:
                flood.failed.append(f"{answer.status_code}: {answer.text[:200]}")
                continue
            tokens = answer.json()["usage"]["completion_tokens"]
            flood.ok += 1
            flood.tokens += tokens
            if tokens != 256:
                flood.failed.append(f"cut short: {tokens} tokens")
        except httpx.HTTPError as exc:
            flood.failed.append(f"{type(exc).__name__}: {exc}")


async def generated(client: httpx.AsyncClient, engine_root: str) -> float:
    text = (await client.get(f"{engine_root}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:generation_tokens_total")
    )


def busy_share(chats: list[Chat], start: float, end: float) -> float:
    """Share of [start, end] with an interactive request in flight (they run one at a time here)."""
    return sum((c.end or c.start) - c.start for c in chats) / (end - start)


def chat_summary(chats: list[Chat]) -> dict[str, float]:
    ttfts = [t for c in chats if (t := c.ttft) is not None]
    tpots = [t for c in chats if (t := c.tpot) is not None]
    return {
        "requests": len(chats),
        "failed": sum(c.end is None for c in chats),
        "ttft_p50_ms": 1e3 * percentile(ttfts, 50),
        "ttft_p90_ms": 1e3 * percentile(ttfts, 90),
        "ttft_p99_ms": 1e3 * percentile(ttfts, 99),
        "tpot_p50_ms": 1e3 * percentile(tpots, 50),
    }


async def set_routing(client: httpx.AsyncClient, root: str, **update: Any) -> None:
    current = (await client.get(f"{root}/admin/routing")).json()
    answer = await client.put(f"{root}/admin/routing", json=current | update)
    answer.raise_for_status()


async def mixed(
    client: httpx.AsyncClient, url: str, model: str, batch_root: str, count: int, concurrency: int
) -> dict[str, Any]:
    stop, flood = asyncio.Event(), Flood()
    workers = [asyncio.create_task(batch_worker(client, url, model, stop, flood)) for _ in range(concurrency)]
    await asyncio.sleep(5)  # the flood reaches its batch size before the chats start
    before, start = await generated(client, batch_root), time.monotonic()
    chats = await interactive_stream(client, url, model, count)
    after, end = await generated(client, batch_root), time.monotonic()
    stop.set()
    await asyncio.gather(*workers)
    return {
        "interactive": chat_summary(chats),
        "interactive_busy_share": busy_share(chats, start, end),
        "batch_tok_s": (after - before) / (end - start),
        "batch_ok": flood.ok,
        "batch_failed": flood.failed,
        "window_s": end - start,
    }


async def batch_alone(
    client: httpx.AsyncClient, url: str, model: str, batch_root: str, seconds: float, concurrency: int
) -> dict[str, Any]:
    stop, flood = asyncio.Event(), Flood()
    workers = [asyncio.create_task(batch_worker(client, url, model, stop, flood)) for _ in range(concurrency)]
    await asyncio.sleep(5)
    before, start = await generated(client, batch_root), time.monotonic()
    await asyncio.sleep(seconds)
    after, end = await generated(client, batch_root), time.monotonic()
    stop.set()
    await asyncio.gather(*workers)
    return {"batch_tok_s": (after - before) / (end - start), "batch_ok": flood.ok, "batch_failed": flood.failed}


async def token_times(client: httpx.AsyncClient, url: str, body: dict[str, Any], into: list[float]) -> None:
    """Stream a batch-class request, appending the time each event arrives to `into`."""
    async with client.stream("POST", url, json=body, headers={"X-Tandem-Class": "batch"}) as answer:
        async for line in answer.aiter_lines():
            if line.startswith("data: {"):
                into.append(time.monotonic())


async def pause_resume_latency(
    client: httpx.AsyncClient, url: str, model: str, batch_root: str, rounds: int = 20
) -> dict[str, float]:
    """`rounds` times: a streamed batch request, frozen once it has sent 5 tokens and resumed 0.5 s
    later; pause call to its answer (the step in flight ended), and resume call to the next token the
    client reads. A fresh request each round: the demo model would finish one long answer within a
    few rounds."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": 1800, "ignore_eos": True, "stream": True}
    pauses, resumes = [], []
    for _ in range(rounds):
        tokens: list[float] = []
        reader = asyncio.create_task(token_times(client, f"{url}/completions", body, tokens))
        try:
            while len(tokens) < 5 and not reader.done():
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            pause = await client.post(f"{batch_root}{PAUSE_PATH}", params={"lease_s": 30, "seq": time.time_ns()})
            pause.raise_for_status()
            pauses.append(time.monotonic() - t0)
            await asyncio.sleep(0.5)
            seen, t1 = len(tokens), time.monotonic()
            (await client.post(f"{batch_root}{RESUME_PATH}", params={"seq": time.time_ns()})).raise_for_status()
            while len(tokens) == seen and not reader.done():
                await asyncio.sleep(0.001)
            if len(tokens) > seen:  # else the answer ended while frozen or before: no resume to time
                resumes.append(tokens[seen] - t1)
        finally:
            await client.post(f"{batch_root}{RESUME_PATH}", params={"seq": time.time_ns()})
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await reader
    return {
        "rounds": len(pauses),
        "pause_p50_ms": 1e3 * percentile(pauses, 50),
        "pause_p99_ms": 1e3 * percentile(pauses, 99),
        "resumes_timed": len(resumes),
        "resume_to_token_p50_ms": 1e3 * percentile(resumes, 50) if resumes else float("nan"),
        "resume_to_token_p99_ms": 1e3 * percentile(resumes, 99) if resumes else float("nan"),
    }


async def measure(
    base_url: str, model: str, replica_urls: dict[str, str], count: int, concurrency: int
) -> dict[str, Any]:
    root = base_url.removesuffix("/v1")
    batch_root = replica_urls["batch"].removesuffix("/v1")
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=64)) as client:
        await set_routing(client, root, policy="class-aware", gpu_arbitration="admission", batch_yield_fraction=1.0)
        await interactive_stream(client, base_url, model, 2)  # warm-up
        start = time.monotonic()
        alone_chats = await interactive_stream(client, base_url, model, count)
        end = time.monotonic()
        alone_i: dict[str, Any] = {
            "interactive": chat_summary(alone_chats),
            "interactive_busy_share": busy_share(alone_chats, start, end),
        }
        alone_b = await batch_alone(client, base_url, model, batch_root, end - start, concurrency)
        off = await mixed(client, base_url, model, batch_root, count, concurrency)
        await set_routing(client, root, gpu_arbitration="freeze")
        freeze = await mixed(client, base_url, model, batch_root, count, concurrency)
        await set_routing(client, root, gpu_arbitration="admission")
        latency = await pause_resume_latency(client, base_url, model, batch_root)
    floor = 0.9 * alone_b["batch_tok_s"] * (1 - alone_i["interactive_busy_share"])
    ratios = {}
    for name, run in (("off", off), ("freeze", freeze)):
        ratios[name] = {
            "tpot_p50": run["interactive"]["tpot_p50_ms"] / alone_i["interactive"]["tpot_p50_ms"],
            "ttft_p50": run["interactive"]["ttft_p50_ms"] / alone_i["interactive"]["ttft_p50_ms"],
            "ttft_p90": run["interactive"]["ttft_p90_ms"] / alone_i["interactive"]["ttft_p90_ms"],
            "batch_vs_alone": run["batch_tok_s"] / alone_b["batch_tok_s"],
            "batch_vs_floor": run["batch_tok_s"] / floor,
            "batch_failed": len(run["batch_failed"]),
        }
    return {"alone": {"interactive": alone_i, "batch": alone_b}, "off": off, "freeze": freeze,
            "ratios": ratios, "pause_resume": latency}  # fmt: skip


def main() -> None:
    from deploy.plan import load_plan  # the stack's modules (Ray): only where this script starts stacks
    from deploy.ports import free_port
    from deploy.stack import running_stack

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--plans", nargs="+", default=["deploy/plans/cpu-demo.yaml", "benchmarks/plans/cpu-roles-swapped.yaml"]
    )
    parser.add_argument("--interactive", type=int, default=48)
    parser.add_argument("--batch-concurrency", type=int, default=16)
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": {}}
    for path in args.plans:
        plan = load_plan(ROOT / path)
        plan = plan.model_copy(update={"gateway": plan.gateway.model_copy(update={"port": free_port()})})
        with running_stack(plan) as deployed:
            run = asyncio.run(
                measure(
                    deployed.base_url,
                    deployed.model,
                    {k: v for k, v in deployed.replica_urls.items() if v},
                    args.interactive,
                    args.batch_concurrency,
                )
            )
        results["runs"][path] = run
        print(path, json.dumps(run["ratios"], indent=1), json.dumps(run["pause_resume"]), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
