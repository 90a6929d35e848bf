"""GPU arbitration for co-resident replicas, tuned on the traffic simulation (issue 23).

Why: a freeze of the batch engine takes effect when the batch step in flight ends, so a chat
request that lands on a step waits for the rest of it at the co-residence speed (docs/routing.md,
bounded step). Two settings bound that step: the batch engine's step budget
(`max_num_batched_tokens`: its prompt chunks) and how many batch sequences run while chat is
around (the batch yield's cap, `batch_yield_fraction` of the batch class's concurrency, lifted
`batch_yield_settle_s` after chat goes idle). Neither can be priced per class: they trade the
batch class's throughput against the interactive class's TTFT, so they are searched here, on the
chosen replicas together, with the gateway's own arbitration code in the simulator.

The study (`<model>.<cluster>.arbitration`) searches the mode and its settings:
  off        gpu_arbitration "admission", batch never yields
  admission  batch yielding at admission (fraction, hold)
  freeze     the batch engine frozen while chat runs (freeze_max_s)
  bounded    freeze + a batch cap (fraction, its settle) + the batch engine's step budget
under a named chat load (a team of twenty reading each answer for two minutes) beside a named
batch load ("saturating": more batch work than the replica completes alone; "half": half of it).
Objective: chat TTFT p99 over chat alone, the lower the better, subject to the issue's targets:
TPOT p50 <= 1.1x alone, and batch output >= 0.9 x batch alone x (1 - chat's busy share alone).
A `Judge` scores each point: `SimulatedJudge` (every trial and its two references seeded simulations
of the same length), or tuner.optimize.arbitration_live.LiveJudge on a running stack (the step budget
not searched: a running engine keeps its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import optuna
from optuna.trial import FrozenTrial

from deploy.plan import ServingPlan
from gateway.contract.config import BatchYieldSettings, GpuArbitrationSettings, RoutingSettings
from tuner.optimize.study import make_sampler
from tuner.perfmodel.simulate import InteractiveLoad, Scenario, SimResult, simulate
from tuner.policy_eval.scenarios import simulated_scenarios
from tuner.workloads import get_workload

Mode = Literal["off", "admission", "freeze", "bounded"]
MODES: tuple[Mode, ...] = ("off", "admission", "freeze", "bounded")
BATCH_LOADS: dict[str, float] = {"half": 0.5, "saturating": 1.25}
"""Batch arrival rate, as a share of what the batch replica completes alone (perf model)."""
CHAT_LOADS: dict[str, InteractiveLoad] = {
    "team": InteractiveLoad(users=20, think_time_s=120.0, shape=get_workload("chat")),
}
"""Named chat loads: "team" is issue 23's team of twenty reading each answer for two minutes."""
STEP_BUDGETS = (256, 512, 1024, 2048, 4096, 8192, 16384)
CAP_FRACTIONS = (0.03125, 0.0625, 0.125, 0.25, 0.5)
CAP_SETTLES_S = (0.5, 5.0, 30.0, 120.0)
FREEZE_MAX_S = (10.0, 20.0, 30.0, 60.0)
CAP_HOLD_S = 3600.0
"""The cap is never cut by the yield's starvation bound (batch_yield_max_hold_s): a cap above zero
starves nothing, and a cut let the batch engine fill up again within seconds (simulated: the cap
with the default 30 s bound held batch at its full 256 sequences most of the time)."""
TTFT_TARGET, TPOT_TARGET, BATCH_FLOOR = 1.5, 1.1, 0.9
SIM_DURATION_S = 900.0


def arbitration_scenarios(
    plan: ServingPlan,
    chat: str | InteractiveLoad | None,
    batch: str,
    duration_s: float,
    hardware: str = "dgx-spark-pair",
) -> dict[str, Scenario]:
    """The mixed scenario and its two references ("interactive-only", "batch-only") for a plan's
    replicas under a chat load (a name in CHAT_LOADS, a load, or None: the plan-sized one of the
    routing benchmark) and the named batch load."""
    if isinstance(chat, str) and chat not in CHAT_LOADS:
        raise ValueError(f"unknown chat load {chat!r}; choose one of {sorted(CHAT_LOADS)}")
    if batch not in BATCH_LOADS:
        raise ValueError(f"unknown batch load {batch!r}; choose one of {sorted(BATCH_LOADS)}")
    base = simulated_scenarios(plan, duration_s, hardware=hardware)  # batch at half the replica's capacity
    rate = base["steady"].batch.rate_per_s * BATCH_LOADS[batch] / 0.5
    stream = base["steady"].batch.model_copy(update={"rate_per_s": rate})
    users = CHAT_LOADS[chat] if isinstance(chat, str) else chat or base["steady"].interactive
    return {
        "mixed": base["steady"].model_copy(update={"interactive": users, "batch": stream}),
        "interactive-only": base["interactive-only"].model_copy(update={"interactive": users}),
        "batch-only": base["batch-only"].model_copy(update={"batch": stream}),
    }


def with_batch_budget(scenario: Scenario, tokens: int | None) -> Scenario:
    """`scenario` with its batch replica's step budget set (None: unchanged)."""
    if tokens is None:
        return scenario
    replicas = tuple(
        r.model_copy(update={"settings": r.settings.model_copy(update={"max_num_batched_tokens": tokens})})
        if r.traffic_class == "batch"
        else r
        for r in scenario.replicas
    )
    return scenario.model_copy(update={"replicas": replicas})


def with_held_running(scenario: Scenario, seqs: int | None) -> Scenario:
    """`scenario` with its batch replica stepping at most `seqs` running sequences while batch
    yielding holds (SimReplica.held_running; None: unchanged)."""
    if seqs is None:
        return scenario
    replicas = tuple(
        r.model_copy(update={"held_running": seqs}) if r.traffic_class == "batch" else r for r in scenario.replicas
    )
    return scenario.model_copy(update={"replicas": replicas})


@dataclass(frozen=True)
class ArbitrationPoint:
    """One mode with its settings: the gateway's routing, and the batch engine's step budget."""

    mode: Mode
    routing: RoutingSettings
    batch_tokens: int | None = None
    """The batch engine's max_num_batched_tokens (None: the plan's own)."""

    def label(self) -> str:
        r = self.routing
        if self.mode == "off":
            return "off"
        if self.mode == "admission":
            return f"admission (yield {r.yielding.fraction:g}, hold {r.yielding.max_hold_s:g} s)"
        freeze = f"freeze {r.arbitration.max_s:g}/{r.arbitration.release_s:g}"
        if self.mode == "freeze":
            return freeze
        budget = "the plan's step budget" if self.batch_tokens is None else f"step budget {self.batch_tokens}"
        return f"{freeze} + cap {r.yielding.fraction:g} (settle {r.yielding.settle_s:g} s) + {budget}"


def point(
    mode: Mode,
    base: RoutingSettings,
    *,
    fraction: float = 1.0,
    settle_s: float | None = None,
    hold_s: float | None = None,
    freeze_max_s: float | None = None,
    batch_tokens: int | None = None,
) -> ArbitrationPoint:
    """The routing of a mode on top of `base` (a plan's own)."""
    yielding, arbitration = base.yielding, base.arbitration
    routing = base.replacing(
        yielding=BatchYieldSettings(
            fraction=fraction if mode in ("admission", "bounded") else 1.0,
            settle_s=yielding.settle_s if settle_s is None else settle_s,
            max_hold_s=yielding.max_hold_s if hold_s is None else hold_s,
            release_s=yielding.release_s,
        ),
        arbitration=GpuArbitrationSettings(
            mode="freeze" if mode in ("freeze", "bounded") else "admission",
            settle_s=arbitration.settle_s,
            max_s=arbitration.max_s if freeze_max_s is None else freeze_max_s,
            release_s=arbitration.release_s,
            lease_s=arbitration.lease_s,
        ),
    )
    return ArbitrationPoint(mode, routing, batch_tokens if mode == "bounded" else None)


def _suggest(trial: optuna.Trial, base: RoutingSettings, min_tokens: int | None) -> ArbitrationPoint:
    """A trial's point; replayed on optuna.trial.FixedTrial(params) for the one kept. `min_tokens`
    None: the batch engine's step budget is not searched (a live stack keeps the one it started with)."""
    mode: Mode = trial.suggest_categorical("mode", list(MODES))
    if mode == "off":
        return point(mode, base)
    if mode == "admission":
        return point(mode, base, fraction=trial.suggest_categorical("admission_fraction", [0.0, 0.25, 0.5]))
    freeze_max_s = trial.suggest_categorical("freeze_max_s", list(FREEZE_MAX_S))
    if mode == "freeze":
        return point(mode, base, freeze_max_s=freeze_max_s)
    tokens = None
    if min_tokens is not None:
        budgets = [t for t in STEP_BUDGETS if t >= min_tokens] or [min_tokens]
        tokens = trial.suggest_categorical("batch_tokens", budgets)
    return point(
        mode,
        base,
        fraction=trial.suggest_categorical("cap_fraction", list(CAP_FRACTIONS)),
        settle_s=trial.suggest_categorical("cap_settle_s", list(CAP_SETTLES_S)),
        hold_s=CAP_HOLD_S,
        freeze_max_s=freeze_max_s,
        batch_tokens=tokens,
    )


@dataclass(frozen=True)
class References:
    """Each class alone on its replica, simulated like the trials."""

    ttft_p99_ms: float
    tpot_p50_ms: float
    interactive_busy: float
    batch_tok_s: float

    @classmethod
    def simulated(cls, scenarios: dict[str, Scenario], base: RoutingSettings, seed: int) -> References:
        alone = simulate(scenarios["interactive-only"], base.model_copy(update={"policy": "all-interactive"}), seed)
        batch = simulate(scenarios["batch-only"], base.model_copy(update={"policy": "all-batch"}), seed)
        chat = alone.classes["interactive"]
        assert chat.ttft_p99_ms is not None and chat.tpot_p50_ms is not None, "the chat load completed nothing"
        return cls(
            chat.ttft_p99_ms,
            chat.tpot_p50_ms,
            alone.class_busy_fraction["interactive"],
            batch.classes["batch"].output_tok_s,
        )

    @property
    def batch_floor_tok_s(self) -> float:
        return BATCH_FLOOR * self.batch_tok_s * (1 - self.interactive_busy)


@dataclass(frozen=True)
class Outcome:
    """One point simulated, as ratios against the references."""

    ttft_p99: float
    tpot_p50: float
    batch_vs_alone: float
    batch_vs_floor: float
    batch_step_p99_ms: float | None

    @classmethod
    def of(
        cls,
        refs: References,
        ttft_p99_ms: float | None,
        tpot_p50_ms: float | None,
        batch_tok_s: float,
        batch_step_p99_ms: float | None = None,
    ) -> Outcome:
        """The figures of a mixed run over the references (no chat answered: infinitely slow)."""
        floor = refs.batch_floor_tok_s
        return cls(
            ttft_p99=(ttft_p99_ms or float("inf")) / refs.ttft_p99_ms,
            tpot_p50=(tpot_p50_ms or float("inf")) / refs.tpot_p50_ms,
            batch_vs_alone=batch_tok_s / refs.batch_tok_s if refs.batch_tok_s else 0.0,
            batch_vs_floor=batch_tok_s / floor if floor > 0 else float("inf"),
            batch_step_p99_ms=batch_step_p99_ms,
        )

    @classmethod
    def simulated(cls, result: SimResult, refs: References) -> Outcome:
        chat = result.classes["interactive"]
        return cls.of(
            refs, chat.ttft_p99_ms, chat.tpot_p50_ms, result.classes["batch"].output_tok_s, result.batch_step_p99_ms
        )

    @property
    def meets_targets(self) -> bool:
        return self.ttft_p99 <= TTFT_TARGET and self.tpot_p50 <= TPOT_TARGET and self.batch_vs_floor >= 1


def missed_by(trial: FrozenTrial) -> float:
    """How far a trial misses the TPOT and batch-floor targets together (0: it meets both): TPOT p50
    above 1.1x alone, in multiples of alone, plus batch output short of its floor, as a share of it.
    Why not the floor first: a point that keeps the floor by letting batch slow every chat token
    (admission: TPOT 2.5x alone) is further from the targets than a freeze that misses the floor by
    a tenth, and it is chat's latency the arbitration exists for (docs/routing.md)."""
    return sum(max(0.0, c) for c in trial.constraints.values())


class Judge(Protocol):
    """What scores an arbitration point: the simulation, or a running stack (arbitration_live)."""

    kind: str
    """"simulated" or "live": named in the study, so the two never share trials."""

    def budget_floor(self) -> int | None:
        """The least step budget the batch engine may be given (its max_num_seqs), or None where the
        budget cannot be changed per trial (a running engine keeps the one it started with)."""
        ...

    def references(self) -> References: ...

    def outcome(self, p: ArbitrationPoint, refs: References) -> Outcome: ...


class SimulatedJudge:
    """The traffic simulation of arbitration_scenarios(), seeded."""

    kind = "simulated"

    def __init__(self, scenarios: dict[str, Scenario], base: RoutingSettings, seed: int) -> None:
        self.scenarios, self.base, self.seed = scenarios, base, seed

    def budget_floor(self) -> int | None:
        batch = next(r for r in self.scenarios["mixed"].replicas if r.traffic_class == "batch")
        return batch.settings.max_num_seqs or 1  # vLLM: the budget holds a decode token per sequence

    def references(self) -> References:
        return References.simulated(self.scenarios, self.base, self.seed)

    def outcome(self, p: ArbitrationPoint, refs: References) -> Outcome:
        scenario = with_batch_budget(self.scenarios["mixed"], p.batch_tokens)
        return Outcome.simulated(simulate(scenario, p.routing, self.seed), refs)


def tune_arbitration(
    study_name: str,
    storage: str | optuna.storages.BaseStorage,
    judge: Judge,
    base: RoutingSettings,
    n_trials: int,
    seed: int,
    callbacks: list | None = None,
) -> tuple[ArbitrationPoint, Outcome, FrozenTrial | None]:
    """The point with the lowest chat TTFT p99 that meets the TPOT and batch-floor targets (failing
    those, the one that misses them by least, `missed_by`, then the lowest TTFT; no trial done: the
    plan's own routing), its outcome (scored again by the judge), and the trial that found it (None:
    the plan's own routing was kept)."""
    refs = judge.references()
    min_tokens = judge.budget_floor()
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction="minimize", sampler=make_sampler(seed), load_if_exists=True
    )
    existing = len(study.get_trials(deepcopy=False))
    if not existing:
        study.enqueue_trial({"mode": "off"})  # counted among the n_trials it runs

    def run(trial: optuna.Trial) -> float:
        outcome = judge.outcome(_suggest(trial, base, min_tokens), refs)
        trial.set_constraint("tpot_p50_over_target", outcome.tpot_p50 - TPOT_TARGET)
        trial.set_constraint("batch_under_floor", 1 - outcome.batch_vs_floor)
        trial.set_user_attr("judge", judge.kind)
        trial.set_user_attr("tpot_p50_vs_alone", outcome.tpot_p50)
        trial.set_user_attr("batch_vs_alone", outcome.batch_vs_alone)
        trial.set_user_attr("batch_vs_floor", outcome.batch_vs_floor)
        trial.set_user_attr("batch_step_p99_ms", outcome.batch_step_p99_ms)
        return outcome.ttft_p99

    missing = max(0, n_trials - existing)
    if missing:
        study.optimize(run, n_trials=missing, callbacks=callbacks or [])
    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    chosen = min(done, key=lambda t: (missed_by(t), t.value, t.number), default=None)
    if chosen is None:
        off = ArbitrationPoint("off", base)
        return off, judge.outcome(off, refs), None
    kept = _suggest(optuna.trial.FixedTrial(chosen.params), base, min_tokens)
    return kept, judge.outcome(kept, refs), chosen
