"""GPU arbitration on real engines (issue 23): interactive chat alone and beside a batch flood, for
each arbitration mode, as ratios measured in ONE run against a running Tandem stack whose two
replicas share one GPU. At most about 6 minutes with the defaults.

    PYTHONPATH=$PWD python benchmarks/gpu/arbitration_gpu.py --out $OUT/arbitration-gpu.json \\
        [--url http://127.0.0.1:8000/v1] [--model llama-3.1-8b-dummy] \\
        [--batch-engine http://127.0.0.1:PORT] [--batch-budget 8192] [--cap 8]

Phases (the routing switched through the gateway's PUT /admin/routing, restored at the end):
  chat alone     --chats streamed chats (--chat-tokens each) one after another, the gaps between them
                 alternating --gaps (below and above the freeze's settle time, so that some chats find
                 the batch engine already frozen and some pay the pause: each chat is tagged by the
                 gateway's tandem_gateway_engine_frozen gauge read just before it is sent)
  batch alone    --streams streamed batch completions (--batch-in prompt words, --batch-out tokens,
                 ignore_eos) looping for --batch-alone-s
  one per mode   the flood, then the same chats beside it: off (admission, no yielding), admission
                 (batch yielding, fraction 0), freeze, freeze + cap (the bounded step: the freeze and a
                 batch cap of --cap requests while chat is around; the engine's step budget is fixed at
                 its start, so --batch-budget only records which one ran)
  pause/resume   with --batch-engine: the batch engine paused and resumed directly, idle but for one
                 stream, and under the flood: pause call to its answer (the step in flight ended), to the
                 last token seen, and resume call to the next token
Per phase it reads the gateway's pause/resume latencies and frozen time, and with --batch-engine the
batch engine's own step count, tokens per step and inter-token latency from its vLLM /metrics (vLLM
has no step-time histogram: the mean step is the window over the steps counted in it).
Ratios against chat alone: TTFT p50/p90/p99, TPOT p50 (after the first token); batch tok/s over batch
alone, and over its leftover share (alone x (1 - chat's busy share alone)).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: its scripts import by file name
from arbitration_live import Chat, busy_share, chat, pause_resume_latency, set_routing

from gateway.contract.percentiles import percentile
from gateway.engine_pause import PAUSE_PATH, RESUME_PATH

MODES: dict[str, dict[str, Any]] = {
    "off": {"gpu_arbitration": "admission", "batch_yield_fraction": 1.0},
    "admission": {"gpu_arbitration": "admission", "batch_yield_fraction": 0.0},
    "freeze": {"gpu_arbitration": "freeze", "batch_yield_fraction": 1.0},
    "freeze+cap": {"gpu_arbitration": "freeze"},  # + the cap's fraction, settle and hold (bounded_step)
}
CAP_SETTLE_S = 5.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN|\+Inf|-Inf)$")


# ---- metrics pages ------------------------------------------------------------------------------


def samples(text: str) -> list[tuple[str, str, float]]:
    """(name, labels, value) of every sample of a Prometheus text page."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            found.append((match.group(1), match.group(2) or "", float(match.group(3))))
    return found


def total(page: list[tuple[str, str, float]], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in page if n == name and all(f'{k}="{x}"' in lab for k, x in labels.items()))


def histogram_quantile(
    before: list[tuple[str, str, float]], after: list[tuple[str, str, float]], name: str, q: float
) -> float | None:
    """The q quantile of a histogram's observations between two pages (linear within a bucket)."""

    def buckets(page: list[tuple[str, str, float]]) -> dict[float, float]:
        out: dict[float, float] = {}
        for n, lab, v in page:
            if n == f"{name}_bucket":
                le = re.search(r'le="([^"]+)"', lab)
                if le:
                    bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
                    out[bound] = out.get(bound, 0.0) + v
        return out

    first, last = buckets(before), buckets(after)
    delta = sorted((b, last[b] - first.get(b, 0.0)) for b in last)
    if not delta or delta[-1][1] <= 0:
        return None
    target, lower, seen = q * delta[-1][1], 0.0, 0.0
    for bound, count in delta:
        if count >= target:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((target - seen) / (count - seen) if count > seen else 1.0)
        lower, seen = bound, count
    return lower


async def page(client: httpx.AsyncClient, url: str) -> list[tuple[str, str, float]]:
    return samples((await client.get(url)).text)


# ---- load ---------------------------------------------------------------------------------------------


@dataclass
class Flood:
    """Streamed batch requests looping until stopped; the time of every token event."""

    events: list[float] = field(default_factory=list)
    ok: int = 0
    failed: list[str] = field(default_factory=list)

    def tokens_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.events)


async def batch_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any], flood: Flood) -> None:
    async with client.stream("POST", f"{url}/completions", json=body, headers={"X-Tandem-Class": "batch"}) as answer:
        if answer.status_code != 200:
            flood.failed.append(f"{answer.status_code}: {(await answer.aread())[:200]!r}")
            return
        async for line in answer.aiter_lines():
            if line.startswith("data: {"):
                if '"error"' in line:
                    flood.failed.append(line[:200])
                    return
                flood.events.append(time.monotonic())
    flood.ok += 1


async def batch_worker(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], stop: asyncio.Event, flood: Flood, delay_s: float
) -> None:
    await asyncio.sleep(delay_s)  # staggered: the streams do not all prefill in the same steps
    while not stop.is_set():
        failures = len(flood.failed)
        try:
            await batch_stream(client, url, body, flood)
        except httpx.HTTPError as exc:
            flood.failed.append(f"{type(exc).__name__}: {exc}")
        if len(flood.failed) > failures:
            await asyncio.sleep(0.5)  # a failing stack is not hammered


@contextlib.asynccontextmanager
async def flooding(client: httpx.AsyncClient, args: argparse.Namespace, flood: Flood) -> AsyncIterator[None]:
    body = {
        "model": args.model,
        "prompt": " ".join(["hello"] * args.batch_in),
        "max_tokens": args.batch_out,
        "ignore_eos": True,
        "stream": True,
    }
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(batch_worker(client, args.url, body, stop, flood, 0.05 * i)) for i in range(args.streams)
    ]
    try:
        await asyncio.sleep(args.ramp_s)
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.cancel()  # the open streams are closed: the gateway aborts them on the engine
        await asyncio.gather(*workers, return_exceptions=True)


@dataclass
class TaggedChat:
    chat: Chat
    found_frozen: bool


async def chats(client: httpx.AsyncClient, args: argparse.Namespace) -> list[TaggedChat]:
    """--chats chats one after another, the gaps cycling through --gaps; each tagged with whether the
    gateway had the batch engine frozen when it was sent."""
    prompt = " ".join(["hello"] * args.chat_in)
    done = []
    for i in range(args.chats):
        gauge = await page(client, f"{args.root}/metrics")
        frozen = total(gauge, "tandem_gateway_engine_frozen") > 0
        try:
            record = await chat(client, args.url, args.model, args.chat_tokens, prompt)
        except httpx.HTTPError as exc:
            print(f"chat failed: {type(exc).__name__}: {exc}", flush=True)
            record = Chat(time.monotonic())
        done.append(TaggedChat(record, frozen))
        await asyncio.sleep(args.gaps[i % len(args.gaps)])
    return done


def tpot_s(c: Chat) -> float | None:
    """Seconds per token after the first (the GPU engine streams each token as it is made)."""
    if c.first is None or c.end is None or c.tokens < 2:
        return None
    return (c.end - c.first) / (c.tokens - 1)


def chat_summary(tagged: list[TaggedChat]) -> dict[str, Any]:
    def of(group: list[Chat]) -> dict[str, Any]:
        ttfts = [t for c in group if (t := c.ttft) is not None]
        tpots = [t for c in group if (t := tpot_s(c)) is not None]
        if not ttfts:
            return {"requests": len(group)}
        return {
            "requests": len(group),
            "ttft_p50_ms": 1e3 * percentile(ttfts, 50),
            "ttft_p90_ms": 1e3 * percentile(ttfts, 90),
            "ttft_p99_ms": 1e3 * percentile(ttfts, 99),
            "tpot_p50_ms": 1e3 * percentile(tpots, 50) if tpots else None,
        }

    every = [t.chat for t in tagged]
    return of(every) | {
        "failed": sum(c.end is None for c in every),
        "found_frozen": of([t.chat for t in tagged if t.found_frozen]),
        "found_running": of([t.chat for t in tagged if not t.found_frozen]),
    }


# ---- phases ---------------------------------------------------------------------------------------------


async def engine_figures(
    client: httpx.AsyncClient, args: argparse.Namespace, before: list | None, window_s: float
) -> dict[str, Any]:
    """The batch engine's own step figures over a window, from two reads of its /metrics."""
    if before is None:
        return {}
    after = await page(client, f"{args.batch_engine}/metrics")
    steps = total(after, "vllm:iteration_tokens_total_count") - total(before, "vllm:iteration_tokens_total_count")
    tokens = total(after, "vllm:iteration_tokens_total_sum") - total(before, "vllm:iteration_tokens_total_sum")
    itl = {
        f"itl_p{q}_ms": (
            None
            if (v := histogram_quantile(before, after, "vllm:inter_token_latency_seconds", q / 100)) is None
            else 1e3 * v
        )
        for q in (50, 90, 99)
    }
    return {
        "steps": steps,
        "mean_step_ms": 1e3 * window_s / steps if steps else None,
        "tokens_per_step": tokens / steps if steps else None,
        "generated_tok_s": (
            total(after, "vllm:generation_tokens_total") - total(before, "vllm:generation_tokens_total")
        )
        / window_s,
    } | itl


async def gateway_figures(client: httpx.AsyncClient, args: argparse.Namespace, before: list) -> dict[str, Any]:
    after = await page(client, f"{args.root}/metrics")

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    figures: dict[str, Any] = {
        "freezes": delta("tandem_gateway_engine_freezes_total"),
        "frozen_s": delta("tandem_gateway_engine_frozen_seconds_total"),
        "control_failures": delta("tandem_gateway_engine_control_failures_total"),
    }
    for command in ("pause", "resume"):
        count = delta("tandem_gateway_engine_control_seconds_count", command=command)
        summed = delta("tandem_gateway_engine_control_seconds_sum", command=command)
        figures[f"{command}_commands"] = count
        figures[f"{command}_mean_ms"] = 1e3 * summed / count if count else None
    return figures


async def measured(client: httpx.AsyncClient, args: argparse.Namespace, flood: Flood | None) -> dict[str, Any]:
    """Chats (beside the flood if one runs), with the batch tok/s and the engine's figures in their window."""
    gateway_before = await page(client, f"{args.root}/metrics")
    engine_before = await page(client, f"{args.batch_engine}/metrics") if args.batch_engine else None
    start = time.monotonic()
    tagged = await chats(client, args)
    end = time.monotonic()
    result: dict[str, Any] = {
        "interactive": chat_summary(tagged),
        "interactive_busy_share": busy_share([t.chat for t in tagged], start, end),
        "window_s": end - start,
        "gateway": await gateway_figures(client, args, gateway_before),
        "batch_engine": await engine_figures(client, args, engine_before, end - start),
    }
    if flood is not None:
        result |= {
            "batch_tok_s": flood.tokens_between(start, end) / (end - start),
            "batch_ok": flood.ok,
            "batch_failed": flood.failed,
        }
    return result


async def batch_alone(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, Any]:
    flood = Flood()
    async with flooding(client, args, flood):
        engine_before = await page(client, f"{args.batch_engine}/metrics") if args.batch_engine else None
        start = time.monotonic()
        await asyncio.sleep(args.batch_alone_s)
        end = time.monotonic()
        engine = await engine_figures(client, args, engine_before, end - start)
    return {"batch_tok_s": flood.tokens_between(start, end) / (end - start), "batch_engine": engine,
            "batch_ok": flood.ok, "batch_failed": flood.failed}  # fmt: skip


async def pause_under_flood(client: httpx.AsyncClient, args: argparse.Namespace, rounds: int) -> dict[str, Any]:
    """The batch engine paused and resumed directly while the flood runs: pause call to its answer, to
    the last token any batch stream saw after it, and resume call to the next token."""
    flood = Flood()
    answers, stopped, resumed = [], [], []
    async with flooding(client, args, flood):
        for _ in range(rounds):
            sent = time.monotonic()
            pause = await client.post(f"{args.batch_engine}{PAUSE_PATH}", params={"lease_s": 30, "seq": time.time_ns()})
            pause.raise_for_status()
            answers.append(time.monotonic() - sent)
            await asyncio.sleep(0.5)
            last = max((t for t in flood.events if t >= sent), default=sent)
            stopped.append(last - sent)
            seen, t1 = len(flood.events), time.monotonic()
            (await client.post(f"{args.batch_engine}{RESUME_PATH}", params={"seq": time.time_ns()})).raise_for_status()
            while len(flood.events) == seen and time.monotonic() - t1 < 10:
                await asyncio.sleep(0.001)
            if len(flood.events) > seen:
                resumed.append(min(flood.events[seen:]) - t1)
            await asyncio.sleep(0.5)
    return {
        "rounds": len(answers),
        "pause_answer_p50_ms": 1e3 * percentile(answers, 50),
        "pause_answer_max_ms": 1e3 * max(answers),
        "tokens_stopped_after_p50_ms": 1e3 * percentile(stopped, 50),
        "resume_to_token_p50_ms": 1e3 * percentile(resumed, 50) if resumed else None,
        "resume_to_token_max_ms": 1e3 * max(resumed) if resumed else None,
    }


def ratios(run: dict[str, Any], alone: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    chat_run, chat_alone = run["interactive"], alone["interactive"]
    leftover = batch["batch_tok_s"] * (1 - alone["interactive_busy_share"])
    out = {
        metric: chat_run[metric] / chat_alone[metric]
        for metric in ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms")
        if chat_run.get(metric) and chat_alone.get(metric)
    }
    out["batch_vs_alone"] = run["batch_tok_s"] / batch["batch_tok_s"] if batch["batch_tok_s"] else None
    out["batch_vs_leftover"] = run["batch_tok_s"] / leftover if leftover else None
    out["batch_failed"] = len(run["batch_failed"])
    return out


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    limits = httpx.Limits(max_connections=args.streams + 16, max_keepalive_connections=args.streams + 16)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:
        original = (await client.get(f"{args.root}/admin/routing")).json()
        batch_limit = original["limits"]["batch"]["max_concurrency"]
        bounded = {"batch_yield_fraction": min(1.0, args.cap / batch_limit), "batch_yield_settle_s": CAP_SETTLE_S,
                   "batch_yield_max_hold_s": 3600.0}  # fmt: skip
        report: dict[str, Any] = {"routing_before": original, "modes": {}, "ratios": {}, "phase_s": {}}
        try:
            await set_routing(client, args.root, **MODES["off"])
            for _ in range(3):  # warm-up
                await chat(client, args.url, args.model, args.chat_tokens)
            t = time.monotonic()
            report["alone"] = await measured(client, args, None)
            report["phase_s"]["alone"] = time.monotonic() - t
            t = time.monotonic()
            report["batch_alone"] = await batch_alone(client, args)
            report["phase_s"]["batch_alone"] = time.monotonic() - t
            for mode, update in MODES.items():
                t = time.monotonic()
                await set_routing(client, args.root, **(update | (bounded if mode == "freeze+cap" else {})))
                flood = Flood()
                async with flooding(client, args, flood):
                    report["modes"][mode] = run = await measured(client, args, flood)
                report["ratios"][mode] = ratios(run, report["alone"], report["batch_alone"])
                report["phase_s"][mode] = time.monotonic() - t
                print(mode, json.dumps(report["ratios"][mode]), flush=True)
            await set_routing(client, args.root, **MODES["off"])
            if args.batch_engine:
                t = time.monotonic()
                report["pause_resume_idle"] = await pause_resume_latency(
                    client, args.url, args.model, args.batch_engine, rounds=args.pause_rounds
                )
                report["pause_resume_flood"] = await pause_under_flood(client, args, args.pause_rounds)
                report["phase_s"]["pause_resume"] = time.monotonic() - t
        finally:
            restore = {k: original[k] for k in ("arbitration", "yielding")}  # the nested groups GET answers
            await set_routing(client, args.root, **restore)
    report["wall_s"] = time.monotonic() - began
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1", help="the gateway's OpenAI base URL")
    parser.add_argument("--model", default="llama-3.1-8b-dummy")
    parser.add_argument("--batch-engine", default=None, help="the batch engine's own root URL (its /metrics, pause)")
    parser.add_argument(
        "--batch-budget", default="unknown", help="the batch engine's max_num_batched_tokens (recorded)"
    )
    parser.add_argument("--cap", type=int, default=8, help="batch requests in flight while chat is around (freeze+cap)")
    parser.add_argument("--chats", type=int, default=32)
    parser.add_argument("--chat-in", type=int, default=128, help="chat prompt words")
    parser.add_argument("--chat-tokens", type=int, default=64)
    parser.add_argument("--gaps", type=lambda s: [float(x) for x in s.split(",")], default=[0.1, 1.0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--batch-in", type=int, default=512, help="batch prompt words")
    parser.add_argument("--batch-out", type=int, default=512)
    parser.add_argument("--ramp-s", type=float, default=5.0)
    parser.add_argument("--batch-alone-s", type=float, default=15.0)
    parser.add_argument("--pause-rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.root = args.url.removesuffix("/v1")
    args.batch_engine = args.batch_engine.rstrip("/").removesuffix("/v1") if args.batch_engine else None
    report = asyncio.run(measure(args))
    report["config"] = {k: v for k, v in vars(args).items() if k != "out"} | {"machine": platform.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["ratios"], indent=1), f"\nwall {report['wall_s']:.0f} s, results: {args.out}")


if __name__ == "__main__":
    main()
