"""The gateway's spill-over thresholds and batch yielding, tuned on the traffic simulation over the
chosen replicas.

Spilling interactive requests onto the batch replica only matters when both replicas run at
once, so per-class trials cannot price it. Once both replicas are chosen, a small study (named
`<model>.<cluster>.routing`) searches spill.queue_threshold, spill.release_threshold (below the
queue threshold: conditional), spill.target_headroom, yielding.fraction and (while batch yields)
yielding.max_hold_s (the study's parameters keep the flat names, FLAT_ROUTING_KEYS in
gateway.contract.config, so a stored study resumes), each trial a seeded run of
`tuner.perfmodel.simulate` with the gateway's own policy code: interactive users bursting to
`users_per_slot` x the interactive concurrency, batch arrivals at `batch_load` of the batch
replica's predicted rate. Objective: interactive goodput (requests/s meeting the interactive SLO),
subject to batch output staying within `batch_tolerance` of what the template's thresholds give.
It needs a performance-model hardware profile; without one the template's thresholds are kept.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from deploy.plan import Replica
from gateway.contract.config import BatchYieldSettings, RoutingSettings, SpillRules
from tuner.optimize.compose import replica_layout
from tuner.optimize.objectives import ClassObjective
from tuner.optimize.study import make_sampler
from tuner.perfmodel import EngineSettings
from tuner.perfmodel.simulate import BatchLoad, ClassSLO, InteractiveLoad, Scenario, SimReplica, SimResult, simulate
from tuner.workloads import Workload

USERS_PER_SLOT = 4
THINK_TIME_S = 1.0
BATCH_LOAD = 0.7
BATCH_TOLERANCE = 0.1
SIM_DURATION_S = 120.0
DEFAULT_INTERACTIVE_SIM_SLO = ClassSLO(ttft_ms=1000, tpot_ms=100)


def _sim_replica(replica: Replica) -> SimReplica:
    engine = replica.engine
    return SimReplica(
        name=replica.name,
        traffic_class=replica.traffic_class,
        layout=replica_layout(replica),
        settings=EngineSettings(
            max_num_seqs=engine.max_num_seqs,
            max_num_batched_tokens=engine.max_num_batched_tokens,
            gpu_memory_utilization=engine.gpu_memory_utilization,
        ),
        accepts_priority=replica.accepts_request_priority,
    )


def routing_scenario(
    model: str,
    hardware: str,
    replicas: list[Replica],
    workload: Workload,
    interactive: ClassObjective,
    batch: ClassObjective,
    batch_request_rate: float,
) -> Scenario:
    slo = {
        "interactive": ClassSLO(
            ttft_ms=interactive.slo.get("ttft_p90_ms", DEFAULT_INTERACTIVE_SIM_SLO.ttft_ms),
            tpot_ms=interactive.slo.get("tpot_p50_ms", DEFAULT_INTERACTIVE_SIM_SLO.tpot_ms),
        ),
        "batch": ClassSLO(ttft_ms=batch.slo.get("ttft_p99_ms", 60_000), tpot_ms=batch.slo.get("tpot_p99_ms", 1_000)),
    }
    return Scenario(
        model=model,
        hardware=hardware,
        replicas=tuple(_sim_replica(r) for r in replicas),
        interactive=InteractiveLoad(
            users=USERS_PER_SLOT * interactive.concurrency, think_time_s=THINK_TIME_S, shape=workload
        ),
        batch=BatchLoad(rate_per_s=BATCH_LOAD * batch_request_rate, shape=workload),
        duration_s=SIM_DURATION_S,
        slo=slo,
    )


def _suggest(trial: optuna.Trial, base: RoutingSettings) -> RoutingSettings:
    """A trial's routing settings; replayed on optuna.trial.FixedTrial(params) for the one kept."""
    queue = trial.suggest_int("spill_queue_threshold", 1, 32, log=True)
    release = trial.suggest_int("spill_release_threshold", 0, queue - 1) if queue > 1 else 0
    headroom = trial.suggest_int("spill_target_headroom", 0, 64, step=4)
    fraction = trial.suggest_float("batch_yield_fraction", 0.0, 1.0, step=0.25)
    hold = (
        trial.suggest_float("batch_yield_max_hold_s", 5.0, 120.0, log=True)
        if fraction < 1
        else base.yielding.max_hold_s
    )
    return base.replacing(
        spill=SpillRules(
            queue_threshold=queue,
            release_threshold=release,
            target_headroom=headroom,
            batch_borrows_idle_interactive=base.spill.batch_borrows_idle_interactive,
        ),
        yielding=BatchYieldSettings(
            fraction=fraction, max_hold_s=hold, settle_s=base.yielding.settle_s, release_s=base.yielding.release_s
        ),
    )


def tune_routing(
    study_name: str,
    storage: str | optuna.storages.BaseStorage,
    scenario: Scenario,
    base: RoutingSettings,
    n_trials: int,
    seed: int,
    callbacks: list | None = None,
) -> tuple[RoutingSettings, FrozenTrial | None]:
    """The thresholds with the best interactive goodput that keep batch output near the base's,
    and the trial that found them (None: no trial kept batch output, the base is returned)."""
    floor = (1 - BATCH_TOLERANCE) * simulate(scenario, base, seed).classes["batch"].output_tok_s
    sampler = make_sampler(seed)
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction="maximize", sampler=sampler, load_if_exists=True
    )
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(
            {
                "spill_queue_threshold": base.spill.queue_threshold,
                "spill_release_threshold": base.spill.release_threshold,
                "spill_target_headroom": base.spill.target_headroom,
                "batch_yield_fraction": base.yielding.fraction,
                **({"batch_yield_max_hold_s": base.yielding.max_hold_s} if base.yielding.fraction < 1 else {}),
            }
        )

    def run(trial: optuna.Trial) -> float:
        settings = _suggest(trial, base)
        result: SimResult = simulate(scenario, settings, seed)
        trial.set_constraint("batch_output_floor_tok_s", floor - result.classes["batch"].output_tok_s)
        trial.set_user_attr("interactive_ttft_p99_ms", result.classes["interactive"].ttft_p99_ms)
        trial.set_user_attr("spilled", result.classes["interactive"].spilled)
        return result.classes["interactive"].goodput_req_s

    missing = max(0, n_trials - len(study.get_trials(deepcopy=False)))
    if missing:
        study.optimize(run, n_trials=missing, callbacks=callbacks or [])
    feasible: list[FrozenTrial] = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.value is not None and all(c <= 0 for c in t.constraints.values())
    ]
    if not feasible:
        return base, None
    best = max(feasible, key=lambda t: (t.value, -t.number))
    return _suggest(optuna.trial.FixedTrial(best.params), base), best
