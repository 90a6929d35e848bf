"""The arbitration study's live objective: each point scored on a running stack (issue 23).

Why: the simulation prices arbitration with co-residence factors measured once on one GPU; a stack
whose replicas share real devices answers for itself. Where one runs, `tuner optimize
--arbitration-live-url URL` scores every candidate there: the gateway's routing is switched to the
point through PUT /admin/routing (the engines never restart, so the batch engine's step budget stays
the one it started with and is not searched), and `tuner bench` drives the named chat load beside
the named batch load through the gateway, as the two classes. The references are measured the same
way first: the chat load alone and the batch load alone, under the stack's routing with arbitration
off. The routing found at the start is put back at the end, whatever happened.

Loads, from the study's names (tuner.optimize.arbitration_search): the chat load's users, think
time and request shape as simulated; the batch load as closed-loop streams, `BATCH_LOADS[name]` of
the batch engine's max_num_seqs (saturating: 1.25x, always more work than it runs at once; half:
half of it), with the batch workload's shape. The chat class's busy share alone is the part of the
chat-alone window during which some chat request was in flight.

The admin key is read from TANDEM_ADMIN_KEY (never a flag); with no keys the gateway answers admin
calls from loopback only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.admin_client import ADMIN_KEY_ENV, AdminClient
from gateway.contract.config import RoutingSettings
from tuner.bench import BenchConfig, Bounds, ClosedLoop, Endpoint, Metrics, TrafficStream, WorkloadSpec, run_benchmark
from tuner.bench.client import RequestRecord
from tuner.optimize.arbitration_search import (
    BATCH_LOADS,
    CHAT_LOADS,
    ArbitrationPoint,
    Outcome,
    References,
)
from tuner.policy_eval.scenarios import without_arbitration
from tuner.workloads import Workload, get_workload


@dataclass(frozen=True)
class LiveLoads:
    """What the bench sends: chat users (closed loop with think time) and batch streams."""

    chat_users: int
    think_time_s: float
    chat_shape: Workload
    batch_streams: int
    batch_shape: Workload

    @classmethod
    def named(cls, chat: str, batch: str, batch_slots: int) -> LiveLoads:
        """The study's named loads for a batch engine of `batch_slots` (its max_num_seqs); the batch
        requests have the simulated batch stream's shape (prefill-heavy, tuner.policy_eval.scenarios)."""
        if chat not in CHAT_LOADS:
            raise ValueError(f"unknown chat load {chat!r}; choose one of {sorted(CHAT_LOADS)}")
        if batch not in BATCH_LOADS:
            raise ValueError(f"unknown batch load {batch!r}; choose one of {sorted(BATCH_LOADS)}")
        users = CHAT_LOADS[chat]
        streams = max(1, math.ceil(BATCH_LOADS[batch] * batch_slots))
        return cls(users.users, users.think_time_s, users.shape, streams, get_workload("prefill-heavy"))


def busy_share(records: Sequence[RequestRecord]) -> float:
    """The part of the records' window (first start to last end) during which one was in flight."""
    spans = sorted((r.start, r.end) for r in records if r.end > r.start)
    if not spans:
        return 0.0
    covered, reach = 0.0, spans[0][0]
    for start, end in spans:
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    window = reach - spans[0][0]
    return covered / window if window > 0 else 0.0


class LiveJudge:
    """Scores arbitration points on the stack behind `url` (the gateway's /v1 base). Use as a
    context manager: the routing in force on entry is restored on exit."""

    kind = "live"

    def __init__(
        self,
        url: str,
        model: str,
        loads: LiveLoads,
        *,
        duration_s: float,
        seed: int = 0,
        timeout_s: float = 600.0,
        admin_key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model, self.loads, self.duration_s, self.seed, self.timeout_s = model, loads, duration_s, seed, timeout_s
        self._admin = AdminClient(self.url, admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV))
        self._original: RoutingSettings | None = None

    def __enter__(self) -> LiveJudge:
        self._original = self.routing()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._original is not None:
            self.switch(self._original)

    def routing(self) -> RoutingSettings:
        """The gateway's routing in force now (the base the study's points are built on)."""
        return RoutingSettings.model_validate(self._admin.call("GET", "/admin/routing"))

    def switch(self, routing: RoutingSettings) -> None:
        self._admin.call("PUT", "/admin/routing", routing.model_dump(mode="json"))

    def budget_floor(self) -> int | None:
        return None  # the batch engine keeps the step budget it started with

    def references(self) -> References:
        assert self._original is not None, "enter the judge first"
        self.switch(without_arbitration(self._original))  # alone means alone: no pause sent to an idle engine
        chat_records: list[RequestRecord] = []
        chat = self._bench(chat=True, batch=False, records=chat_records)["interactive"]
        batch = self._bench(chat=False, batch=True)["batch"]
        assert chat.ttft_ms is not None and chat.tpot_ms is not None, "the chat load completed nothing alone"
        return References(
            chat.ttft_ms.p99,
            chat.tpot_ms.median,
            busy_share([r for r in chat_records if r.stream == "interactive"]),
            batch.output_throughput,
        )

    def outcome(self, p: ArbitrationPoint, refs: References) -> Outcome:
        if p.batch_tokens is not None:
            raise ValueError("a live stack cannot change the batch engine's step budget; restart it with the plan's")
        self.switch(p.routing)
        measured = self._bench(chat=True, batch=True)
        chat = measured["interactive"]
        return Outcome.of(
            refs,
            chat.ttft_ms.p99 if chat.ttft_ms else None,
            chat.tpot_ms.median if chat.tpot_ms else None,
            measured["batch"].output_throughput,
        )

    def _bench(self, *, chat: bool, batch: bool, records: list[RequestRecord] | None = None) -> dict[str, Metrics]:
        loads, streams = self.loads, []
        if chat:
            streams.append(
                TrafficStream(
                    traffic_class="interactive",
                    workload=_spec(loads.chat_shape),
                    load=ClosedLoop(concurrency=loads.chat_users, think_time_s=loads.think_time_s),
                )
            )
        if batch:
            streams.append(
                TrafficStream(
                    traffic_class="batch",
                    workload=_spec(loads.batch_shape),
                    load=ClosedLoop(concurrency=loads.batch_streams),
                )
            )
        config = BenchConfig(
            endpoint=Endpoint(url=self.url, model=self.model, api="chat", timeout_s=self.timeout_s),
            streams=streams,
            bounds=Bounds(duration_s=self.duration_s),
            seed=self.seed,
        )
        result = run_benchmark(config, on_request=records.append if records is not None else None)
        for name, metrics in result.by_class.items():
            if metrics.completed == 0:
                sample = next(iter(metrics.error_samples.values()), "no error text")
                raise RuntimeError(f"live arbitration: no {name} request completed ({sample[:200]})")
        return result.by_class


def _spec(shape: Workload) -> WorkloadSpec:
    return WorkloadSpec(input_len=shape.input_len, output_len=shape.output_len)
