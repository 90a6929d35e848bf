"""Conversation affinity on real engines (issue 26): where a chat's follow-up turns land under each
routing policy, and what the replicas' prefix caches make of it, on one stack in one run.

    .venv/bin/python benchmarks/conversation_affinity.py [--plan benchmarks/plans/cpu-two-interactive.yaml]
        [--url http://127.0.0.1:PORT] [--policies class-aware conversation-affinity least-busy]
        [--conversations 12] [--turns 4] [--concurrency 4] [--out FILE.json]

Without --url it starts the plan's stack (Ray and the vLLM CPU engines, as `gateway up` does) on a
free loopback port and stops it at the end, whatever happens; with --url it measures the gateway
running there (loopback only; the routing admin is open to loopback callers without keys).

Per policy (switched with PATCH /admin/routing): --conversations chats of --turns turns, run by
--concurrency workers through the `openai` SDK, each turn streamed and resending the whole
conversation (a system prompt of about 500 tokens of text of its own, every earlier user and
assistant message, a new user message), 16 tokens out with ignore_eos. Every policy gets
conversations it has never seen (their text is seeded by the policy's place in the list), so
one policy's run never warms the cache for the next. Read per policy:

  prefix-cache hits / queries  the sum over replicas of vLLM's `vllm:prefix_cache_hits_total` and
                               `vllm:prefix_cache_queries_total` (tokens), read through the
                               gateway's /metrics/engines/{replica} before and after the policy's
                               run; first turns count too (their prompt is new, so they miss)
  same replica                 follow-up turns whose X-Tandem-Replica names the replica of the
                               conversation's previous turn
  TTFT p50 / p90               follow-up turns, request sent to first streamed chunk with a choice

Ratios are against the first policy in the list (class-aware by default), measured in the same
run. Numbers are printed as a table, and with --out written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from gateway.contract.percentiles import percentile

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PLAN = "benchmarks/plans/cpu-two-interactive.yaml"
HITS, QUERIES = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
MAX_TOKENS = 16
SYSTEM_WORDS = 110  # about 500 tokens with the demo model's tokenizer (about 4.5 tokens a word)
USER_WORDS = 10
WORDS = (
    "river stone lantern orchard copper meadow harbor violet signal thunder pepper canvas marble "
    "falcon garden anchor velvet glacier timber rocket saddle window cobalt ember fossil tunnel "
    "quartz willow beacon compass parcel summit basket cinder ladder nickel oyster pillow ribbon "
    "spiral tablet walnut zephyr bramble candle ferry goblet hollow ivory jasper kettle lemon"
).split()
REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Turn:
    """One answered turn: which conversation and turn, the replica the gateway named, its TTFT."""

    conversation: int
    turn: int
    replica: str
    ttft_s: float
    prompt_tokens: int


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def converse(client: AsyncOpenAI, model: str, rng: random.Random, index: int, turns: int) -> list[Turn]:
    """One conversation of `turns` streamed turns, each resending everything said so far (as a
    chat client does), so every turn after the first starts with the previous turn's prompt."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": f"Conversation {index}. {text(rng, SYSTEM_WORDS)}"}
    ]
    answered = []
    for turn in range(turns):
        messages.append({"role": "user", "content": text(rng, USER_WORDS)})
        started = time.monotonic()
        first: float | None = None
        reply, prompt_tokens = [], 0
        async with client.chat.completions.with_streaming_response.create(
            model=model,
            messages=messages,
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        ) as response:
            replica = response.headers.get("x-tandem-replica", "?")
            async for chunk in await response.parse():
                if chunk.choices:
                    first = first or time.monotonic()
                    reply.append(chunk.choices[0].delta.content or "")
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
        if first is None:
            raise RuntimeError(f"conversation {index} turn {turn}: the stream ended with no choice")
        answered.append(Turn(index, turn, replica, first - started, prompt_tokens))
        messages.append({"role": "assistant", "content": "".join(reply)})
    return answered


async def run_conversations(
    client: AsyncOpenAI, model: str, seed: int, conversations: int, turns: int, concurrency: int
) -> list[Turn]:
    """`conversations` chats, `concurrency` at a time, each worker taking the next from a queue."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(conversations):
        queue.put_nowait(index)
    done: list[Turn] = []

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            done.extend(await converse(client, model, random.Random(seed * 1_000_003 + index), index, turns))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def counter_sum(page: str, name: str) -> float:
    """The sum of one counter's samples on a Prometheus page (one per engine label set)."""
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def cache_counters(http: httpx.AsyncClient, root: str, replicas: list[str]) -> dict[str, dict[str, float]]:
    """Each replica's prefix-cache counters, read through the gateway."""
    counters = {}
    for name in replicas:
        page = await http.get(f"{root}/metrics/engines/{name}")
        page.raise_for_status()
        counters[name] = {"hits": counter_sum(page.text, HITS), "queries": counter_sum(page.text, QUERIES)}
    return counters


def summary(
    turns: list[Turn], before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """One policy's figures from its turns and the counters around its run."""
    by_conversation: dict[int, dict[int, Turn]] = {}
    for t in turns:
        by_conversation.setdefault(t.conversation, {})[t.turn] = t
    follow_ups = [t for t in turns if t.turn > 0]
    same = sum(t.replica == by_conversation[t.conversation][t.turn - 1].replica for t in follow_ups)
    ttfts = [t.ttft_s for t in follow_ups]
    hits = sum(after[r]["hits"] - before[r]["hits"] for r in after)
    queries = sum(after[r]["queries"] - before[r]["queries"] for r in after)
    return {
        "turns": len(turns),
        "follow_ups": len(follow_ups),
        "same_replica": same,
        "turns_per_replica": dict(sorted(Counter(t.replica for t in turns).items())),
        "prompt_tokens": sum(t.prompt_tokens for t in turns),
        "cache_queries": queries,
        "cache_hits": hits,
        "hit_ratio": hits / queries if queries else None,
        "per_replica": {r: {k: after[r][k] - before[r][k] for k in ("hits", "queries")} for r in after},
        "ttft_p50_ms": 1e3 * percentile(ttfts, 50),
        "ttft_p90_ms": 1e3 * percentile(ttfts, 90),
        "first_turn_ttft_p50_ms": 1e3 * percentile([t.ttft_s for t in turns if t.turn == 0], 50),
    }


async def measure(root: str, model: str, policies: list[str], conversations: int, turns: int, concurrency: int) -> dict[str, Any]:  # fmt: skip
    """Every policy in turn on the gateway at `root`, after a warm-up: two whole conversations per
    replica, sent round-robin, so every engine has run prompts of each turn's length before the
    first policy is timed (in the first run here, with one short turn per engine as warm-up, the
    first policy measured took twice the others' wall time)."""
    results: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(timeout=30.0) as http,
        AsyncOpenAI(base_url=f"{root}/v1", api_key="none", timeout=REQUEST_TIMEOUT_S, max_retries=0) as client,
    ):
        replicas = (await http.get(f"{root}/ready")).json()["replicas"]
        (await http.patch(f"{root}/admin/routing", json={"policy": "round-robin"})).raise_for_status()
        await run_conversations(client, model, 999, 2 * len(replicas), turns, len(replicas))
        for place, policy in enumerate(policies):
            (await http.patch(f"{root}/admin/routing", json={"policy": policy})).raise_for_status()
            before = await cache_counters(http, root, replicas)
            started = time.monotonic()
            done = await run_conversations(client, model, place, conversations, turns, concurrency)
            elapsed = time.monotonic() - started
            results[policy] = summary(done, before, await cache_counters(http, root, replicas)) | {"wall_s": elapsed}
            print(f"{policy}: {json.dumps(results[policy])}", flush=True)
    return results


def table(results: dict[str, Any]) -> str:
    """The figures per policy, with TTFT as ratios against the first policy measured."""
    base = next(iter(results.values()))
    lines = [
        f"{'policy':<24}{'hit ratio':>10}{'hits/queries (tokens)':>24}{'same replica':>14}"
        f"{'TTFT p50 ms':>13}{'p90 ms':>9}{'p50 x':>7}{'p90 x':>7}  turns per replica"
    ]
    for policy, r in results.items():
        ratio = "n/a" if r["hit_ratio"] is None else f"{r['hit_ratio']:.3f}"
        cached = f"{r['cache_hits']:.0f}/{r['cache_queries']:.0f}"
        same = f"{r['same_replica']}/{r['follow_ups']}"
        lines.append(
            f"{policy:<24}{ratio:>10}{cached:>24}{same:>14}{r['ttft_p50_ms']:>13.1f}{r['ttft_p90_ms']:>9.1f}"
            f"{r['ttft_p50_ms'] / base['ttft_p50_ms']:>7.2f}{r['ttft_p90_ms'] / base['ttft_p90_ms']:>7.2f}"
            f"  {r['turns_per_replica']}"
        )
    return "\n".join(lines)


@contextmanager
def gateway_root(url: str | None, plan_path: str) -> Iterator[tuple[str, str | None]]:
    """The gateway to measure and the model to ask for (None: the first /v1/models names), either
    the one at `url` or a stack started from `plan_path` and stopped when the block ends."""
    if url is not None:
        host = httpx.URL(url).host
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"--url must be a loopback address, got {host!r}")
        yield url.rstrip("/").removesuffix("/v1"), None
        return
    from deploy.plan import load_plan  # the stack's modules (Ray): only where this script starts one
    from deploy.ports import free_port
    from deploy.stack import running_stack

    plan = load_plan(ROOT / plan_path)
    plan = plan.model_copy(update={"gateway": plan.gateway.model_copy(update={"host": "127.0.0.1", "port": free_port()})})  # fmt: skip
    started = time.monotonic()
    with running_stack(plan) as deployed:  # stops the engines and Ray on the way out, failure or not
        print(f"stack up in {time.monotonic() - started:.0f} s: {deployed.replica_urls}", flush=True)
        yield deployed.base_url.removesuffix("/v1"), deployed.model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", default=DEFAULT_PLAN)
    parser.add_argument("--url", help="a running gateway on loopback (no stack is started)")
    parser.add_argument("--policies", nargs="+", default=["class-aware", "conversation-affinity", "least-busy"])
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # A SIGTERM (`timeout`, a supervisor) unwinds like Ctrl-C, so a started stack is still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with gateway_root(args.url, args.plan) as (root, model):
        if model is None:
            model = httpx.get(f"{root}/v1/models", timeout=30).json()["data"][0]["id"]
        results = asyncio.run(measure(root, model, args.policies, args.conversations, args.turns, args.concurrency))
    print(table(results))
    if args.out is not None:
        setup = {k: getattr(args, k) for k in ("plan", "url", "conversations", "turns", "concurrency")}
        machine = f"{platform.machine()}, {os.cpu_count()} cores"
        args.out.write_text(json.dumps({"machine": machine, "setup": setup, "policies": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
