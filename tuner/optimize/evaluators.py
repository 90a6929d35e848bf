"""Evaluators turn one candidate replica into a Measurement, or say why it cannot run.

- `ModelEvaluator`: the performance model (tuner.perfmodel). Sub-millisecond per trial, so a
  whole study takes seconds; it also prices points for the live warm start and checks, before
  any trial, that a point's weights fit its memory share.
- `LiveEvaluator`: deploys the trial's replica alone on Ray (deploy.stack), measures it with
  `tuner bench` (closed loop at the class's concurrency, through the gateway), and tears it down.
  A replica that fails to start, runs out of memory, times out, or fails its requests raises
  `Infeasible` with the reason, and the study records it and goes on.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from deploy.plan import Replica, ServingPlan
from deploy.ports import free_port
from tuner.bench import BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec, run_benchmark
from tuner.optimize.compose import single_replica_plan
from tuner.optimize.objectives import ClassObjective, Measurement
from tuner.optimize.space import Candidate
from tuner.perfmodel import EngineSettings, HardwareProfile, ModelArchitecture, Prediction
from tuner.perfmodel.predict import build_replica, predict_replica
from tuner.workloads import Workload

MAX_FAILED_FRACTION = 0.05
"""A live trial that loses more than this share of its requests is infeasible, not slow."""


class Infeasible(Exception):
    """A point that cannot serve: the weights do not fit, the engine did not start, it ran out of memory..."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Evaluator(Protocol):
    kind: str

    def evaluate(self, candidate: Candidate, replica: Replica, objective: ClassObjective) -> Measurement: ...


class ModelEvaluator:
    """The performance model as an evaluator (and as the live studies' predictor)."""

    kind = "model"

    def __init__(
        self, architecture: ModelArchitecture, hardware: HardwareProfile, workload: Workload, build: str | None = None
    ) -> None:
        self.architecture, self.hardware, self.workload, self.build = architecture, hardware, workload, build

    def predict(self, candidate: Candidate, concurrency: int) -> Prediction:
        settings = EngineSettings(
            max_num_seqs=candidate.max_num_seqs,
            max_num_batched_tokens=candidate.max_num_batched_tokens,
            gpu_memory_utilization=candidate.memory_share or EngineSettings().gpu_memory_utilization,
            build=self.build,
        )
        replica = build_replica(self.architecture, self.hardware, candidate.layout, self.workload, settings)
        return predict_replica(replica, self.workload, concurrency)

    def memory_check(self, candidate: Candidate) -> str | None:
        """Why the point cannot hold its weights and one sequence, or None when it can."""
        prediction = self.predict(candidate, 1)
        if prediction.fits:
            return None
        share = f" at memory share {candidate.memory_share:.2f}" if candidate.memory_share is not None else ""
        return (
            f"weights do not fit: {candidate.layout.name} puts {prediction.weights_per_device_gb:.1f} GB of weights "
            f"on a device{share} ({self.hardware.device.memory_gb.value:g} GB), leaving no room for one sequence's KV cache"
        )

    def evaluate(self, candidate: Candidate, replica: Replica, objective: ClassObjective) -> Measurement:
        prediction = self.predict(candidate, objective.concurrency)
        if not prediction.fits:
            raise Infeasible(self.memory_check(candidate) or "weights do not fit")
        return measurement_from_prediction(prediction)


def measurement_from_prediction(prediction: Prediction) -> Measurement:
    """The model's steady state stands for every percentile (each request sees the same cycle)."""
    assert prediction.ttft_ms is not None and prediction.tpot_ms is not None and prediction.output_tok_s is not None
    ttft, tpot = prediction.ttft_ms, prediction.tpot_ms
    return Measurement(
        source="model",
        ttft_p50_ms=ttft,
        ttft_p90_ms=ttft,
        ttft_p99_ms=ttft,
        tpot_p50_ms=tpot,
        tpot_p90_ms=tpot,
        tpot_p99_ms=tpot,
        output_tok_s=prediction.output_tok_s,
    )


def _failure_reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    lowered = text.lower()
    if "out of memory" in lowered or "outofmemory" in lowered or "cannot allocate memory" in lowered:
        kind = "out of memory"
    elif isinstance(error, TimeoutError) or "not ready after" in lowered:
        kind = "timed out"
    else:
        kind = "failed to start"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # A failed start carries the engine log's tail: its last exception line says why, and the
    # line after it holds the detail where the exception is a summary (pydantic's "1 validation error").
    errors = [i for i, line in enumerate(lines) if re.match(r"^[\w.]*(Error|Exception): ", line)]
    detail = " ".join(lines[errors[-1] : errors[-1] + 2]) if errors else lines[0] if lines else ""
    return f"{kind}: {detail[:400]}"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class LiveEvaluator:
    """Deploy, bench, tear down: one replica per trial on a Ray cluster held for the whole run.

    Use as a context manager. Without `ray_address` it starts a local Ray head it owns, whose
    engines give up after `timeout_s` and are not restarted by Serve (a failed start is an
    infeasible trial, not something to retry); a joined cluster keeps its own settings.
    """

    kind = "live"

    def __init__(
        self,
        template: ServingPlan,
        workload: WorkloadSpec,
        *,
        requests_per_trial: int,
        max_duration_s: float,
        timeout_s: float,
        ray_address: str | None = None,
        seed: int = 0,
    ) -> None:
        self.template, self.workload = template, workload
        self.requests_per_trial, self.max_duration_s, self.timeout_s = requests_per_trial, max_duration_s, timeout_s
        self.ray_address, self.seed = ray_address, seed
        self._stack: list = []

    def __enter__(self) -> LiveEvaluator:
        from deploy.stack import RayConnection, logical_cpus_needed

        environment = _environment(
            {"TANDEM_ENGINE_START_TIMEOUT_S": f"{self.timeout_s:g}", "RAY_SERVE_MAX_PER_REPLICA_RETRY_COUNT": "1"}
        )
        environment.__enter__()
        self._stack.append(environment)
        connection = RayConnection(self.ray_address, None if self.ray_address else logical_cpus_needed(self.template))
        connection.__enter__()
        self._stack.append(connection)
        return self

    def __exit__(self, *exc: object) -> None:
        while self._stack:
            self._stack.pop().__exit__(None, None, None)

    def evaluate(self, candidate: Candidate, replica: Replica, objective: ClassObjective) -> Measurement:
        from deploy.stack import deploy, undeploy

        plan = single_replica_plan(self.template, replica, free_port())
        started = time.monotonic()
        try:
            try:
                deployed = deploy(plan)  # returns once the engine answers, or raises
            except Exception as exc:  # every start failure is the trial's result
                raise Infeasible(_failure_reason(exc)) from None
            remaining = max(1.0, self.timeout_s - (time.monotonic() - started))
            config = BenchConfig(
                endpoint=Endpoint(url=deployed.base_url, model=deployed.model, timeout_s=remaining),
                streams=[
                    TrafficStream(
                        traffic_class=objective.traffic_class,
                        workload=self.workload,
                        load=ClosedLoop(concurrency=objective.concurrency),
                    )
                ],
                bounds=Bounds(
                    num_requests=self.requests_per_trial,
                    duration_s=min(self.max_duration_s, remaining),
                    warmup_requests=min(objective.concurrency, 4),
                ),
                seed=self.seed,
            )
            metrics = run_benchmark(config).overall
        finally:
            undeploy()
        if metrics.completed == 0 or metrics.failed > MAX_FAILED_FRACTION * metrics.requests:
            sample = next(iter(metrics.error_samples.values()), "no error text")
            raise Infeasible(f"requests failed: {metrics.failed} of {metrics.requests} ({sample[:200]})")
        assert metrics.ttft_ms is not None and metrics.tpot_ms is not None
        return Measurement(
            source="live",
            ttft_p50_ms=metrics.ttft_ms.median,
            ttft_p90_ms=metrics.ttft_ms.p90,
            ttft_p99_ms=metrics.ttft_ms.p99,
            tpot_p50_ms=metrics.tpot_ms.median,
            tpot_p90_ms=metrics.tpot_ms.p90,
            tpot_p99_ms=metrics.tpot_ms.p99,
            output_tok_s=metrics.output_throughput,
            completed=metrics.completed,
        )
