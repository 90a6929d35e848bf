"""The five scenarios of issue #7, for the simulated Spark pair and for the live CPU stack.

  steady            a few interactive users in closed loop with think time, beside a batch stream
                    at a fixed (Poisson) rate
  burst             the same users, and a burst of batch requests landing while they are busy
  interactive-only  the users alone: the "TP replica serving interactive alone" reference
  batch-only        the batch stream alone: the "PP replica serving batch alone" reference
  failure           the steady mix, and the interactive replica's engine dies part-way through

Simulated loads are sized from the plan, not picked per policy: half as many users as the
interactive replica has sequence slots, and a batch rate of half what the perf model predicts the
batch replica sustains alone at its full batch. Live loads are scaled to the CPU stack the same
way by hand (the demo model on 2 cores), and bounded in time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deploy.plan import ServingPlan
from gateway.contract.config import RoutingSettings
from gateway.contract.routing_rules import routing_for_replicas
from tuner.bench import SLO, WorkloadSpec
from tuner.perfmodel import EngineSettings, Layout, load_engine, load_hardware, resolve_model
from tuner.perfmodel.predict import build_replica, predict_replica
from tuner.perfmodel.simulate import BatchLoad, InteractiveLoad, ReplicaFailure, Scenario, SimReplica
from tuner.workloads import get_workload

ScenarioName = Literal["steady", "burst", "interactive-only", "batch-only", "failure"]
SCENARIOS: tuple[ScenarioName, ...] = ("steady", "burst", "interactive-only", "batch-only", "failure")
DESCRIPTIONS: dict[ScenarioName, str] = {
    "steady": "interactive users (closed loop, think time) beside a batch stream at a fixed rate",
    "burst": "the interactive users, and a burst of batch requests landing while they are busy",
    "interactive-only": "the interactive users alone (reference: TP replica serving interactive alone)",
    "batch-only": "the batch stream alone (reference: PP replica serving batch alone)",
    "failure": "the steady mix; the interactive replica's engine dies part-way through and stays down",
}
REFERENCES: dict[str, tuple[ScenarioName, str]] = {
    "interactive": ("interactive-only", "all-interactive"),
    "batch": ("batch-only", "all-batch"),
}
"""Each class's "alone" reference: (scenario, policy) that serves it on its own replica, undisturbed."""


def plan_routing(plan: ServingPlan) -> RoutingSettings:
    """The routing a plan ships with: its own if set, else the rule derived from its replicas."""
    if "routing" in plan.gateway.model_fields_set:
        return plan.gateway.routing
    return routing_for_replicas((r.traffic_class, r.engine.max_num_seqs) for r in plan.replicas)


def with_arbitration(routing: RoutingSettings, source: RoutingSettings) -> RoutingSettings:
    """`routing` with `source`'s GPU arbitration: its freeze and its batch yield, the two groups
    the arbitration study sets in a plan and the evaluations reset before setting their own."""
    return routing.replacing(yielding=source.yielding, arbitration=source.arbitration)


def without_arbitration(routing: RoutingSettings) -> RoutingSettings:
    """`routing` with GPU arbitration off: its freeze and batch yield at the settings' defaults."""
    return with_arbitration(routing, RoutingSettings())


def arbitration_off(plan: ServingPlan) -> RoutingSettings:
    """The plan's routing with GPU arbitration off: the base the evaluations and the arbitration
    study compare routing policies and arbitration modes on, whatever mode the plan ships (the
    shipped GPU plans freeze: docs/routing.md)."""
    return without_arbitration(plan_routing(plan))


# ---- simulated: the Spark pair ------------------------------------------------------------------------

SIM_THINK_TIME_S = 2.0
SIM_SLO = {"interactive": {"ttft_ms": 1000, "tpot_ms": 100}, "batch": {"ttft_ms": 60_000, "tpot_ms": 1000}}
"""The plans carry no SLOs; these are the simulator's defaults (a chat turn answered within a second,
reading speed of at least 10 tokens/s; batch work started within a minute)."""


def _sim_replicas(plan: ServingPlan) -> tuple[SimReplica, ...]:
    return tuple(
        SimReplica(
            name=r.name,
            traffic_class=r.traffic_class,
            layout=Layout(tp=r.tensor_parallel_size, pp=r.pipeline_parallel_size),
            settings=EngineSettings(
                max_num_seqs=r.engine.max_num_seqs,
                max_num_batched_tokens=r.engine.max_num_batched_tokens,
                gpu_memory_utilization=r.engine.gpu_memory_utilization,
            ),
            accepts_priority=r.accepts_request_priority,
        )
        for r in plan.replicas
    )


def batch_capacity_req_s(plan: ServingPlan, replicas: tuple[SimReplica, ...], hardware: str) -> float:
    """Requests/s the perf model predicts the batch replica sustains alone at its full batch."""
    batch = next(r for r in replicas if r.traffic_class == "batch")
    shape = get_workload("prefill-heavy")
    served = plan.only_model("the simulated scenarios")
    model = build_replica(
        resolve_model(served.source),
        load_hardware(hardware),
        batch.layout,
        shape,
        batch.settings,
        load_engine("vllm"),
    )
    prediction = predict_replica(model, shape, model.max_running)
    if prediction.request_s is None:
        raise ValueError(f"{served.name}: the batch replica does not fit on {hardware}")
    return prediction.request_s


def simulated_scenarios(
    plan: ServingPlan, duration_s: float, *, hardware: str = "dgx-spark-pair", co_resident: bool = True
) -> dict[ScenarioName, Scenario]:
    """The five scenarios for a Spark plan, sized from its replicas."""
    replicas = _sim_replicas(plan)
    interactive_slots = next(r.settings.max_num_seqs for r in replicas if r.traffic_class == "interactive")
    batch_slots = next(r.settings.max_num_seqs for r in replicas if r.traffic_class == "batch")
    users = InteractiveLoad(
        users=max(1, (interactive_slots or 2) // 2), think_time_s=SIM_THINK_TIME_S, shape=get_workload("chat")
    )
    stream = BatchLoad(
        rate_per_s=0.5 * batch_capacity_req_s(plan, replicas, hardware), shape=get_workload("prefill-heavy")
    )
    burst = BatchLoad(
        burst_size=batch_slots or 64, burst_start_s=duration_s / 3, burst_every_s=duration_s, shape=stream.shape
    )
    common = dict(
        model=resolve_model(plan.only_model("the simulated scenarios").source).name,
        hardware=hardware,
        replicas=replicas,
        co_resident=co_resident,
        duration_s=duration_s,
        slo=SIM_SLO,
    )
    interactive_name = next(r.name for r in replicas if r.traffic_class == "interactive")
    return {
        "steady": Scenario(interactive=users, batch=stream, **common),
        "burst": Scenario(interactive=users, batch=burst, **common),
        "interactive-only": Scenario(interactive=users, batch=BatchLoad(), **common),
        "batch-only": Scenario(interactive=InteractiveLoad(users=0), batch=stream, **common),
        "failure": Scenario(
            interactive=users,
            batch=stream,
            failures=(ReplicaFailure(replica=interactive_name, at_s=0.4 * duration_s),),
            **common,
        ),
    }


# ---- live: the CPU stack ------------------------------------------------------------------------------


class LiveScenario(BaseModel):
    """One live run's traffic, scaled to the CPU stack (demo model, 2 cores)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ScenarioName
    duration_s: float = Field(gt=0)
    interactive_users: int = Field(0, ge=0)
    think_time_s: float = Field(0.0, ge=0)
    interactive: WorkloadSpec = WorkloadSpec(input_len=128, output_len=64)
    batch_rate: float | None = Field(None, gt=0, description="Batch requests/s (Poisson), all run long.")
    burst_size: int = Field(0, ge=0, description="Batch requests sent at once at burst_at_s.")
    burst_at_s: float = Field(0.0, ge=0)
    batch: WorkloadSpec = WorkloadSpec(input_len=512, output_len=64)
    fail_replica: str | None = Field(None, description="Replica whose engine is killed at fail_at_s.")
    fail_at_s: float = Field(0.0, ge=0)


LIVE_USERS = 2
LIVE_THINK_TIME_S = 0.5
# Half of what the batch engine sustains alone here, as the simulation sizes the Spark plans (half the
# PP replica's full-batch rate): its batch-only run at 2/s completed 1.7-1.8 req/s (cpu-roles-swapped).
LIVE_BATCH_RATE = 1.0
LIVE_BURST = 24
LIVE_SLO = {"interactive": SLO(ttft_ms=250, tpot_ms=25), "batch": SLO(ttft_ms=10_000, tpot_ms=250)}
"""Scaled to the demo model on 2 cores, where vLLM's own server alone answers one stream of 128-token
prompts at a 79 ms TTFT p50 and a 2.6 ms TPOT p50 (docs/benchmarks.md, `benchmarks/bench_vs_vllm.py`
at c=1): the interactive SLO leaves room for a queue of a few prompts."""


def live_scenarios(duration_s: float, interactive_replica: str = "interactive") -> dict[ScenarioName, LiveScenario]:
    users = dict(interactive_users=LIVE_USERS, think_time_s=LIVE_THINK_TIME_S)
    return {
        "steady": LiveScenario(name="steady", duration_s=duration_s, batch_rate=LIVE_BATCH_RATE, **users),
        "burst": LiveScenario(
            name="burst", duration_s=duration_s, burst_size=LIVE_BURST, burst_at_s=duration_s / 3, **users
        ),
        "interactive-only": LiveScenario(name="interactive-only", duration_s=duration_s, **users),
        "batch-only": LiveScenario(name="batch-only", duration_s=duration_s, batch_rate=LIVE_BATCH_RATE),
        "failure": LiveScenario(
            name="failure",
            duration_s=duration_s,
            batch_rate=LIVE_BATCH_RATE,
            fail_replica=interactive_replica,
            fail_at_s=0.4 * duration_s,
            **users,
        ),
    }
