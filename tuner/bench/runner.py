"""Run a benchmark: warm up, drive every traffic stream at once, and compute the metrics.

`run_benchmark(config) -> BenchResult` is the entry point for the tuner and the CLI alike;
`run_mix(...)` builds the interactive + batch configuration first. One aiohttp session per
run, its connection pool sized to the most requests the run can have in flight, so the
client neither queues requests in its pool nor opens connections it does not need.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import numpy as np

from tuner.bench.arrivals import Budget, SendFn, drive_closed, drive_open
from tuner.bench.client import RequestRecord, StreamingClient
from tuner.bench.config import SLO, BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec
from tuner.bench.lengths import price_words
from tuner.bench.metrics import compute_metrics
from tuner.bench.mix import MixSpec
from tuner.bench.prompts import PromptFactory, load_tokenizer
from tuner.bench.results import BenchResult, WarmupSummary

ProgressFn = Callable[[RequestRecord], None]
NoticeFn = Callable[[str], None]
log = logging.getLogger("tandem.bench")
_WARMUP_STREAM = 1000
"""Prompt-stream index of warm-up prompts: far from the measured streams', so none repeats."""


def connection_limit(config: BenchConfig) -> int:
    """Most requests the run can have in flight (aiohttp: 0 means no limit)."""
    limits = [stream.load.max_in_flight for stream in config.streams]
    return 0 if None in limits else sum(limit for limit in limits if limit is not None)


async def benchmark(
    config: BenchConfig, *, on_request: ProgressFn | None = None, on_notice: NoticeFn | None = None
) -> BenchResult:
    """Run one benchmark on the current event loop (see `run_benchmark`)."""
    tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else None
    limit = connection_limit(config)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, trust_env=True) as session:
        client = StreamingClient(config.endpoint, session)
        words = None if tokenizer is not None else await price_words(session, config.endpoint, client.headers)
        if words is not None and words.note:
            (on_notice or log.warning)(words.note)

        def sender(stream: TrafficStream, index: int, sink: list[RequestRecord]) -> SendFn:
            prompts = PromptFactory(
                stream.workload,
                seed=config.seed,
                stream=index,
                tokenizer=tokenizer,
                word_costs=words.per_word if words is not None else None,
                tokens_per_word=words.mean if words is not None else 1.0,
            )
            # A count-bounded run knows how many prompts a stream can need: build them before timing.
            prompts.prepare(
                config.bounds.warmup_requests if index == _WARMUP_STREAM else config.bounds.num_requests or 0
            )

            async def send() -> RequestRecord:
                record = await client.send(
                    prompts.next(),
                    stream=stream.name,
                    traffic_class=stream.traffic_class,
                    ignore_eos=stream.workload.ignore_eos,
                )
                sink.append(record)
                return record

            return send

        warmup = await _warm_up(config, sender(config.streams[0], _WARMUP_STREAM, []), limit)

        records: list[RequestRecord] = []
        # Prompts are built before the clock starts: the measured window (vLLM's too) holds requests only.
        senders = [sender(stream, index, records) for index, stream in enumerate(config.streams)]
        budget = Budget(config.bounds)
        started_at = datetime.now(UTC)
        report = on_request or (lambda record: None)
        drivers = []
        for index, (stream, send) in enumerate(zip(config.streams, senders, strict=True)):
            if isinstance(stream.load, ClosedLoop):
                drivers.append(drive_closed(stream.load, send, budget, report))
            else:
                rng = np.random.default_rng([config.seed, index, 1])
                drivers.append(drive_open(stream.load, send, budget, report, rng))
        await asyncio.gather(*drivers)
        duration = (max(r.end for r in records) if records else time.perf_counter()) - budget.started

    by_class = {
        stream.traffic_class: compute_metrics([r for r in records if r.stream == stream.name], duration, config.slo)
        for stream in config.streams
        if stream.traffic_class is not None
    }
    return BenchResult(
        config=config,
        started_at=started_at,
        duration_s=duration,
        warmup=warmup,
        overall=compute_metrics(records, duration, config.slo),
        by_class=by_class,
        prompt_lengths="tokenizer" if words is None else words.source,
    )


async def _warm_up(config: BenchConfig, send: SendFn, limit: int) -> WarmupSummary:
    """Send the warm-up requests (first stream's shape and class), excluded from all metrics."""
    count = config.bounds.warmup_requests
    if not count:
        return WarmupSummary(requests=0, failed=0)
    slots = asyncio.Semaphore(min(count, limit) if limit else count)

    async def one() -> RequestRecord:
        async with slots:
            return await send()

    outcomes = await asyncio.gather(*(one() for _ in range(count)))
    return WarmupSummary(requests=count, failed=sum(not r.success for r in outcomes))


def run_benchmark(
    config: BenchConfig, *, on_request: ProgressFn | None = None, on_notice: NoticeFn | None = None
) -> BenchResult:
    """Run one benchmark to completion; ``on_request`` sees each measured request as it ends,
    ``on_notice`` what the user should know before the run (e.g. lengths that are not exact)."""
    return asyncio.run(benchmark(config, on_request=on_request, on_notice=on_notice))


def run_mix(
    endpoint: Endpoint,
    mix: MixSpec,
    bounds: Bounds,
    *,
    workload: WorkloadSpec,
    slo: SLO | None = None,
    seed: int = 0,
    tokenizer: str | None = None,
    on_request: ProgressFn | None = None,
) -> BenchResult:
    """Interactive users and a batch stream at once; metrics per class in ``by_class``."""
    config = BenchConfig(
        endpoint=endpoint, streams=mix.streams(workload), bounds=bounds, slo=slo, seed=seed, tokenizer=tokenizer
    )
    return run_benchmark(config, on_request=on_request)
