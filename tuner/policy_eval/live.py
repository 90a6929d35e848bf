"""Every policy on the live CPU stack: one stack start, the policy switched between runs through the
gateway's PUT /admin/routing (the engines keep running), traffic from tuner.bench.

A scenario's traffic is one tuner.bench run (interactive users and a Poisson batch stream), plus,
for the burst, a second run of `burst_size` batch requests started `burst_at_s` later on the same
event loop. Every request is collected as it ends, and each class's metrics are computed with its
own SLO (tuner.bench's run-wide SLO is one for all streams). In the failure scenario the
interactive replica's vLLM server, found by the port in its URL, is killed with its children
part-way through; the stack cannot bring it back under the same URL, so that run comes last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil

from gateway.contract.config import RoutingSettings
from tuner.bench import SLO, BenchConfig, Bounds, ClosedLoop, Endpoint, OpenLoop, TrafficStream, benchmark
from tuner.bench.client import RequestRecord
from tuner.bench.metrics import compute_metrics
from tuner.policy_eval.report import PolicyResult, Sample, ScenarioResult
from tuner.policy_eval.scenarios import DESCRIPTIONS, LIVE_SLO, LiveScenario

log = logging.getLogger("tandem.routing")
ProgressFn = Callable[[str], None]
REQUEST_TIMEOUT_S = 60.0
"""A request not answered in this long counts as failed: it bounds the drain after each run."""


def switch_policy(base_url: str, routing: RoutingSettings, policy: str) -> RoutingSettings:
    """PUT the routing settings with `policy` to the gateway; returns what the gateway now runs."""
    admin = base_url.removesuffix("/v1") + "/admin/routing"
    response = httpx.put(admin, content=routing.model_copy(update={"policy": policy}).model_dump_json(), timeout=10)
    response.raise_for_status()
    applied = RoutingSettings.model_validate_json(response.text)
    if applied.policy != policy:
        raise RuntimeError(f"gateway runs {applied.policy!r} after switching to {policy!r}")
    return applied


def kill_engine(url: str) -> list[int]:
    """Kill the process listening on the port of `url` and all its children (SIGKILL); the pids.

    Raises when nothing listens there, or when a process survives: a kill that is not clean is
    not a measurement of failover."""
    port = urlparse(url).port
    listeners = {
        c.pid
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    }
    if not listeners:
        raise RuntimeError(f"no process listens on port {port} ({url})")
    processes = [psutil.Process(pid) for pid in listeners]
    processes += [child for p in list(processes) for child in p.children(recursive=True)]
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=10)
    running = [p for p in alive if _running(p)]
    if running:
        raise RuntimeError(f"processes {[p.pid for p in running]} survived SIGKILL")
    return sorted(p.pid for p in processes)


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie: a killed worker whose dead parent's reaper has not collected it yet
    is gone (on this machine one stayed a zombie past the 10 s wait and failed a whole live run)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _streams(scenario: LiveScenario) -> list[TrafficStream]:
    streams = []
    if scenario.interactive_users:
        streams.append(
            TrafficStream(
                traffic_class="interactive",
                workload=scenario.interactive,
                load=ClosedLoop(concurrency=scenario.interactive_users, think_time_s=scenario.think_time_s),
            )
        )
    if scenario.batch_rate:
        streams.append(
            TrafficStream(
                traffic_class="batch", workload=scenario.batch, load=OpenLoop(request_rate=scenario.batch_rate)
            )
        )
    return streams


async def _drive(
    scenario: LiveScenario, endpoint: Endpoint, tokenizer: str | None, seed: int, kill: Callable[[], object]
) -> tuple[list[RequestRecord], float]:
    records: list[RequestRecord] = []
    started = time.perf_counter()
    main = BenchConfig(
        endpoint=endpoint,
        streams=_streams(scenario),
        bounds=Bounds(duration_s=scenario.duration_s, warmup_requests=1),
        seed=seed,
        tokenizer=tokenizer,
    )
    tasks: list[Coroutine[Any, Any, object]] = [benchmark(main, on_request=records.append)]
    if scenario.burst_size:
        burst = BenchConfig(
            endpoint=endpoint,
            streams=[
                TrafficStream(
                    traffic_class="batch", workload=scenario.batch, load=ClosedLoop(concurrency=scenario.burst_size)
                )
            ],
            bounds=Bounds(num_requests=scenario.burst_size),
            seed=seed + 1,
            tokenizer=tokenizer,
        )

        async def later() -> None:
            await asyncio.sleep(scenario.burst_at_s)
            await benchmark(burst, on_request=records.append)

        tasks.append(later())
    if scenario.fail_replica:

        async def failing() -> None:
            await asyncio.sleep(scenario.fail_at_s)
            await asyncio.to_thread(kill)

        tasks.append(failing())
    await asyncio.gather(*tasks)
    return records, time.perf_counter() - started


def sample_of(records: Sequence[RequestRecord], duration_s: float, slo: dict[str, SLO]) -> Sample:
    interactive = compute_metrics([r for r in records if r.stream == "interactive"], duration_s, slo["interactive"])
    batch = compute_metrics([r for r in records if r.stream == "batch"], duration_s, slo["batch"])
    return {
        "interactive_ttft_p50_ms": interactive.ttft_ms.median if interactive.ttft_ms else None,
        "interactive_ttft_p99_ms": interactive.ttft_ms.p99 if interactive.ttft_ms else None,
        "interactive_tpot_p50_ms": interactive.tpot_ms.median if interactive.tpot_ms else None,
        "batch_output_tok_s": batch.output_throughput,
        "interactive_goodput_req_s": interactive.request_goodput or 0.0,
        "batch_goodput_req_s": batch.request_goodput or 0.0,
        "goodput_req_s": (interactive.request_goodput or 0.0) + (batch.request_goodput or 0.0),
        "failed": float(interactive.failed + batch.failed),
    }


def run_live_scenario(
    base_url: str,
    model: str,
    replica_urls: dict[str, str | None],
    scenario: LiveScenario,
    *,
    tokenizer: str | None = None,
    seed: int = 0,
) -> tuple[Sample, str | None]:
    """One run of the scenario under whatever policy the gateway runs now; (figures, note)."""
    endpoint = Endpoint(url=base_url, model=model, timeout_s=REQUEST_TIMEOUT_S)
    killed: list[int] = []

    def kill() -> None:
        url = replica_urls.get(scenario.fail_replica or "")
        if url is None:
            raise RuntimeError(f"no URL for replica {scenario.fail_replica!r}: {replica_urls}")
        killed.extend(kill_engine(url))

    records, duration = asyncio.run(_drive(scenario, endpoint, tokenizer, seed, kill))
    note = f"killed {scenario.fail_replica}'s engine (pids {killed}) at {scenario.fail_at_s:.0f} s" if killed else None
    return sample_of(records, duration, LIVE_SLO), note


def run_live(
    base_url: str,
    model: str,
    replica_urls: dict[str, str | None],
    routing: RoutingSettings,
    scenarios: Sequence[LiveScenario],
    policies: Sequence[str],
    *,
    setting: str,
    tokenizer: str | None = None,
    failure_policies: Sequence[str] = ("class-aware",),
    progress: ProgressFn | None = None,
) -> list[ScenarioResult]:
    """Each scenario under each policy on the running stack; the failure scenario last, and only
    under `failure_policies` (each kill leaves the stack one engine short)."""
    results = []
    ordered = sorted(scenarios, key=lambda s: s.fail_replica is not None)
    for scenario in ordered:
        outcomes = []
        for policy in failure_policies if scenario.fail_replica else policies:
            switch_policy(base_url, routing, policy)
            try:
                sample, note = run_live_scenario(base_url, model, replica_urls, scenario, tokenizer=tokenizer)
            except Exception as exc:  # one broken run (e.g. an engine kill that did not finish) is reported, not fatal
                log.warning("live run %s / %s failed: %s", scenario.name, policy, exc)
                outcomes.append(PolicyResult(policy=policy, samples=[], note=f"run failed: {exc}"))
            else:
                outcomes.append(PolicyResult(policy=policy, samples=[sample], note=note))
            if progress:
                progress(f"{setting} {scenario.name} {policy}")
        results.append(
            ScenarioResult(
                setting=setting, scenario=scenario.name, description=DESCRIPTIONS[scenario.name], policies=outcomes
            )
        )
    return results
