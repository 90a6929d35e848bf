"""The harness against real loopback servers: load shapes, tagging, and every failure counted."""

from __future__ import annotations

import threading
import time

import pytest

from tuner.bench import (
    SLO,
    BenchConfig,
    Bounds,
    ClosedLoop,
    Endpoint,
    MixSpec,
    OpenLoop,
    TrafficStream,
    WorkloadSpec,
    run_benchmark,
    run_mix,
)

SHAPE = WorkloadSpec(input_len=16, output_len=8)


def config(url: str, load: ClosedLoop | OpenLoop, bounds: Bounds, model: str = "m", **kw: object) -> BenchConfig:
    return BenchConfig(
        endpoint=Endpoint(url=url, model=model, timeout_s=kw.pop("timeout_s", 30.0)),  # type: ignore[arg-type]
        streams=[TrafficStream(workload=SHAPE, load=load)],
        bounds=bounds,
        **kw,
    )


def test_closed_loop_sends_exactly_the_budget_after_excluded_warmup(upstream) -> None:
    result = run_benchmark(
        config(upstream.base_url, ClosedLoop(concurrency=4), Bounds(num_requests=30, warmup_requests=3))
    )
    assert len(upstream.requests) == 33  # warm-up reached the server but no metric
    assert result.warmup.requests == 3 and result.warmup.failed == 0
    m = result.overall
    assert (m.requests, m.completed, m.failed) == (30, 30, 0)
    assert m.total_output_tokens == 30 * 8  # the server's usage, not a guess
    body = upstream.requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 8 and body["ignore_eos"] is True
    assert set(upstream.classes) == {None}  # untagged runs send no class header
    assert result.by_class == {}


def test_closed_loop_keeps_concurrency_in_flight_and_no_more(upstream) -> None:
    upstream.token_delay_s = 0.005
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, upstream.active)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_benchmark(config(upstream.base_url, ClosedLoop(concurrency=5), Bounds(num_requests=40)))
    finally:
        stop.set()
        watcher.join()
    assert peak == 5


def test_timings_reflect_the_server_pace(upstream) -> None:
    upstream.first_token_delay_s = 0.05
    upstream.token_delay_s = 0.01
    m = run_benchmark(config(upstream.base_url, ClosedLoop(concurrency=1), Bounds(num_requests=4))).overall
    assert 50 <= m.ttft_ms.median < 90
    assert 10 <= m.tpot_ms.median < 18
    assert 10 <= m.itl_ms.median < 18
    assert m.e2el_ms.median == pytest.approx(m.ttft_ms.median + 7 * m.tpot_ms.median, rel=0.05)


def test_open_loop_rate_and_duration_bound(upstream) -> None:
    # burstiness 1000 makes gaps nearly regular: 40/s for 1 s is about 40 arrivals.
    load = OpenLoop(request_rate=40, burstiness=1000)
    result = run_benchmark(config(upstream.base_url, load, Bounds(duration_s=1.0)))
    assert 36 <= result.overall.requests <= 41
    assert result.overall.failed == 0
    assert 1.0 <= result.duration_s < 1.5


def test_open_loop_arrivals_are_deterministic_per_seed(upstream) -> None:
    def prompts(seed: int) -> list[str]:
        upstream.requests.clear()
        run_benchmark(config(upstream.base_url, OpenLoop(request_rate=200), Bounds(num_requests=10), seed=seed))
        return sorted(body["prompt"] for body in upstream.requests)

    assert prompts(3) == prompts(3) != prompts(4)


def test_mix_tags_each_class_and_reports_it_separately(upstream) -> None:
    result = run_mix(
        Endpoint(url=upstream.base_url, model="m"),
        MixSpec.parse("interactive=2,batch=6"),
        Bounds(num_requests=60),
        workload=SHAPE,
        slo=SLO(ttft_ms=10_000),
    )
    interactive, batch = result.by_class["interactive"], result.by_class["batch"]
    assert interactive.requests + batch.requests == result.overall.requests == 60
    assert batch.requests > interactive.requests > 0  # six batch slots against two users
    assert upstream.classes.count("interactive") == interactive.requests
    assert upstream.classes.count("batch") == batch.requests
    assert interactive.slo_attainment == 1.0


def test_unreachable_endpoint_is_counted_not_raised(dead_url) -> None:
    result = run_benchmark(config(dead_url, ClosedLoop(concurrency=2), Bounds(num_requests=6, warmup_requests=1)))
    assert result.warmup.failed == 1
    assert (result.overall.requests, result.overall.failed) == (6, 6)
    assert result.overall.errors == {"connection": 6}
    assert "Cannot connect" in result.overall.error_samples["connection"]


def test_http_errors_and_dropped_connections_are_counted(upstream) -> None:
    upstream.fail_next(503, count=3)
    upstream.fail_next(None, count=2)
    m = run_benchmark(config(upstream.base_url, ClosedLoop(concurrency=1), Bounds(num_requests=10))).overall
    assert m.errors == {"connection": 2, "http_503": 3}
    assert m.error_samples["http_503"] == "injected failure"  # the OpenAI envelope's message
    assert (m.requests, m.completed) == (10, 5)
    wrong_model = run_benchmark(config(upstream.base_url, ClosedLoop(concurrency=1), Bounds(num_requests=2), model="x"))
    assert wrong_model.overall.errors == {"http_404": 2}


@pytest.mark.parametrize(
    ("behaviour", "error_type"),
    [
        ("cut", "stream_cut"),
        ("no-done", "stream_cut"),
        ("no-usage", "missing_usage"),
        ("error-event", "stream_error"),
        ("not-json", "bad_stream"),
    ],
)
def test_broken_streams_are_counted_by_kind(broken_url, behaviour: str, error_type: str) -> None:
    result = run_benchmark(config(broken_url, ClosedLoop(concurrency=2), Bounds(num_requests=4), model=behaviour))
    assert result.overall.errors == {error_type: 4}
    assert result.overall.completed == 0


def test_slow_requests_time_out_and_the_run_still_ends(upstream) -> None:
    upstream.first_token_delay_s = 10.0
    started = time.monotonic()
    result = run_benchmark(config(upstream.base_url, ClosedLoop(concurrency=2), Bounds(num_requests=2), timeout_s=0.2))
    assert result.overall.errors == {"timeout": 2}
    assert time.monotonic() - started < 5.0  # waiting for the answers would take 10 s


def test_prompts_are_built_before_the_measured_window_starts(upstream, monkeypatch) -> None:
    # vLLM's client builds its prompts before timing; a window that held prompt building would
    # lower every throughput by the time it took.
    from tuner.bench import arrivals, prompts

    events: list[tuple[str, float]] = []
    prepare, budget_init = prompts.PromptFactory.prepare, arrivals.Budget.__init__

    def recorded_prepare(self: prompts.PromptFactory, count: int) -> None:
        prepare(self, count)
        events.append(("prompts built", time.perf_counter()))

    def recorded_budget(self: arrivals.Budget, bounds: Bounds) -> None:
        budget_init(self, bounds)
        events.append(("window starts", self.started))

    monkeypatch.setattr(prompts.PromptFactory, "prepare", recorded_prepare)
    monkeypatch.setattr(arrivals.Budget, "__init__", recorded_budget)
    run_benchmark(config(upstream.base_url, ClosedLoop(concurrency=2), Bounds(num_requests=6, warmup_requests=1)))
    assert [name for name, _ in events] == ["prompts built", "prompts built", "window starts"]
    assert events[1][1] <= events[2][1]
