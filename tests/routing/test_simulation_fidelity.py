"""The simulator fixes made for the routing evaluation: co-resident replicas share the GPUs like
time-sliced processes (a cycle speeds up the moment the other replica goes idle), waiting prompts
share the step's token budget as vLLM packs them, and a burst can land on running traffic."""

from __future__ import annotations

from gateway.contract.config import RoutingSettings
from tuner.perfmodel.coresidence import load_coresidence
from tuner.perfmodel.predict import Layout
from tuner.perfmodel.simulate import BatchLoad, InteractiveLoad, Scenario, SimReplica, simulate
from tuner.workloads import Workload

CHAT = Workload(input_len=256, output_len=64)
LONG = Workload(input_len=2048, output_len=128)
PAIR = (
    SimReplica(name="interactive", traffic_class="interactive", layout=Layout(tp=2)),
    SimReplica(name="batch", traffic_class="batch", layout=Layout(pp=2)),
)


def scenario(**update: object) -> Scenario:
    base = Scenario(
        model="llama-3.1-8b",
        replicas=PAIR,
        interactive=InteractiveLoad(users=2, think_time_s=0.5, shape=CHAT),
        batch=BatchLoad(),
        duration_s=60,
    )
    return base.model_copy(update=update)


def tpot(result, cls: str = "interactive") -> float:  # result: a SimResult
    value = result.classes[cls].tpot_p50_ms
    assert value is not None
    return value


def test_an_idle_co_resident_replica_costs_nothing() -> None:
    alone = scenario()
    shared = simulate(alone, RoutingSettings(policy="all-interactive"), seed=1)
    separate = simulate(
        alone.model_copy(update={"co_resident": False}), RoutingSettings(policy="all-interactive"), seed=1
    )
    assert tpot(shared) == tpot(separate)


def test_a_busy_co_resident_replica_slows_the_other_by_the_contention_factor() -> None:
    busy = scenario(batch=BatchLoad(rate_per_s=2.0, shape=LONG))
    shared = simulate(busy, RoutingSettings(policy="class-aware"), seed=1)
    separate = simulate(busy.model_copy(update={"co_resident": False}), RoutingSettings(policy="class-aware"), seed=1)
    assert shared.replica_busy_fraction["batch"] > 0.9
    # The measured slowdown of an interactive step (tuner/perfmodel/data/coresidence): 2.23x beside the
    # batch engine's decode, 2.59x beside its prefill chunks; the mix of the two, no more (the p50
    # request of each run steps in batches of a slightly different mix: 0.5%).
    figures = load_coresidence()
    ratio = tpot(shared) / tpot(separate)
    assert figures.interactive_next_to_decode.value * 0.98 < ratio <= figures.interactive_next_to_prefill.value * 1.005


def test_contention_follows_the_other_replica_going_idle() -> None:
    """A short batch burst: interactive cycles are slowed while it runs, and only then, so the
    median interactive TPOT stays at the alone figure instead of doubling."""
    burst = scenario(
        batch=BatchLoad(burst_size=2, burst_start_s=10, burst_every_s=1000, shape=Workload(input_len=64, output_len=8))
    )
    slowed = simulate(burst, RoutingSettings(policy="class-aware"), seed=1)
    alone = simulate(scenario(), RoutingSettings(policy="class-aware"), seed=1)
    assert slowed.replica_busy_fraction["batch"] < 0.05
    assert tpot(slowed) < 1.1 * tpot(alone)


def test_prompts_arriving_together_are_prefilled_together() -> None:
    """Eight users at once (no think time before the first request): vLLM packs their prompts into
    one step's token budget, so their first tokens come together (not one prompt per step, which
    would spread them from one to eight prefill times), and no later than one-by-one would."""
    short = Workload(input_len=256, output_len=4)
    together = scenario(interactive=InteractiveLoad(users=8, think_time_s=0.0, shape=short), duration_s=1.5)
    one = scenario(interactive=InteractiveLoad(users=1, think_time_s=0.0, shape=short), duration_s=1.5)
    eight = simulate(together, RoutingSettings(policy="all-interactive"), seed=1).classes["interactive"]
    single = simulate(one, RoutingSettings(policy="all-interactive"), seed=1).classes["interactive"]
    assert single.ttft_p50_ms is not None and eight.ttft_p50_ms is not None and eight.ttft_p99_ms is not None
    assert eight.completed >= 8
    assert eight.ttft_p50_ms > 0.9 * eight.ttft_p99_ms
    assert eight.ttft_p99_ms <= 8 * single.ttft_p50_ms


def test_a_burst_lands_when_it_is_told_to() -> None:
    late = scenario(interactive=InteractiveLoad(users=0), batch=BatchLoad(burst_size=4, burst_start_s=100, shape=LONG))
    early = late.model_copy(update={"batch": BatchLoad(burst_size=4, burst_start_s=1, shape=LONG)})
    assert simulate(late, seed=1).classes["batch"].completed == 0
    assert simulate(early, seed=1).classes["batch"].completed == 4


def yielding(fraction: float, max_hold_s: float = 30.0) -> RoutingSettings:
    return RoutingSettings(
        policy="class-aware",
        batch_yield_fraction=fraction,
        batch_yield_max_hold_s=max_hold_s,
        batch_yield_release_s=5.0,
    )


def busy_users_beside_batch() -> Scenario:
    """Users who never leave the interactive replica idle, beside short batch jobs (so a held
    batch replica drains within seconds)."""
    return scenario(
        interactive=InteractiveLoad(users=4, think_time_s=0.1, shape=CHAT),
        batch=BatchLoad(rate_per_s=1.0, shape=Workload(input_len=1024, output_len=32)),
        duration_s=120,
    )


def test_batch_held_to_zero_leaves_interactive_the_gpus_but_not_forever() -> None:
    """Users never idle beside a batch stream: held at 0 with a 30 s bound, the batch replica
    drains and idles between releases, so interactive TPOT falls toward its alone figure while
    batch still completes work; a fraction above 0 keeps the batch replica busy, and time-sliced,
    interactive is no faster than without yielding."""
    busy = busy_users_beside_batch()
    free = simulate(busy, yielding(1.0), seed=1)
    held = simulate(busy, yielding(0.0), seed=1)
    half = simulate(busy, yielding(0.5), seed=1)
    assert free.batch_held_fraction == 0.0 and held.batch_held_fraction > 0.5
    assert held.class_busy_fraction["batch"] < free.class_busy_fraction["batch"]
    assert tpot(held) < 0.8 * tpot(free)
    assert held.classes["batch"].completed > 0  # the starvation bound lets batch through
    assert held.classes["batch"].output_tok_s < free.classes["batch"].output_tok_s  # the price
    assert half.class_busy_fraction["batch"] > 0.9 and tpot(half) > 0.95 * tpot(free)


def test_a_longer_hold_bound_trades_more_batch_for_interactive() -> None:
    busy = busy_users_beside_batch()
    short, long = simulate(busy, yielding(0.0, 10.0), seed=1), simulate(busy, yielding(0.0, 60.0), seed=1)
    assert long.batch_held_fraction > short.batch_held_fraction
    assert long.classes["batch"].output_tok_s < short.classes["batch"].output_tok_s
    assert tpot(long) < tpot(short)


# ---- GPU arbitration: the freeze (gateway.contract.freezing, applied by the simulation) ----------------------

FREEZE = RoutingSettings(policy="class-aware", gpu_arbitration="freeze", freeze_settle_s=0.5)


def test_a_frozen_batch_replica_gives_interactive_its_alone_speed_and_loses_no_work() -> None:
    busy = scenario(
        interactive=InteractiveLoad(users=2, think_time_s=4.0, shape=CHAT),
        batch=BatchLoad(rate_per_s=0.2, shape=LONG),
        duration_s=120,
    )
    frozen = simulate(busy, FREEZE, seed=1)
    separate = simulate(busy.model_copy(update={"co_resident": False}), RoutingSettings(policy="class-aware"), seed=1)
    # Frozen while the users are active (most of the run), the batch engine's step in progress when
    # a freeze begins is all that still slows an interactive one.
    assert frozen.batch_frozen_fraction > 0.5
    assert tpot(frozen) < 1.15 * tpot(separate)
    assert frozen.classes["batch"].failed == 0 and frozen.classes["batch"].completed > 0
    off = simulate(busy, RoutingSettings(policy="class-aware"), seed=1)
    assert tpot(off) > 2 * tpot(frozen)


def test_the_starvation_bound_keeps_batch_running_under_a_steady_chat_load() -> None:
    """Users with no think time keep interactive work in flight all the time: without the bound the
    batch replica would be frozen for good; with it, batch runs at least release / (max + release)."""
    nonstop = scenario(
        interactive=InteractiveLoad(users=2, think_time_s=0.0, shape=CHAT),
        batch=BatchLoad(burst_size=2, burst_start_s=1, burst_every_s=1000, shape=LONG),
        duration_s=120,
    )
    bound = FREEZE.replacing(arbitration=FREEZE.arbitration.model_copy(update={"max_s": 8.0, "release_s": 2.0}))
    result = simulate(nonstop, bound, seed=1)
    assert result.forced_resumes >= 10
    assert result.batch_frozen_fraction <= 8.0 / (8.0 + 2.0) + 0.02
    assert result.classes["batch"].completed == 2  # both finish, in the runs the bound grants


def test_spill_over_onto_the_batch_replica_is_never_frozen() -> None:
    """All interactive traffic on the batch replica (all-batch): it serves the protected class itself."""
    spilled = simulate(
        scenario(batch=BatchLoad(rate_per_s=1.0, shape=LONG)), FREEZE.model_copy(update={"policy": "all-batch"}), seed=1
    )
    assert spilled.batch_frozen_fraction == 0.0 and spilled.classes["interactive"].completed > 0
