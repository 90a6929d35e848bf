"""GPU arbitration (gateway.contract.freezing), called directly: it is a pure function of replica work and time."""

from __future__ import annotations

import pytest

from deploy.builder import gateway_config
from deploy.plan import SHIPPED_PLANS_DIR, load_plan
from gateway.contract.config import RoutingSettings
from gateway.contract.freezing import Arbitration, ReplicaWork, arbitrate, frozen_share
from gateway.contract.timers import HoldTimers
from gateway.contract.yielding import YieldState, batch_limits, batch_yield

FREEZE = RoutingSettings(gpu_arbitration="freeze", freeze_settle_s=0.5, freeze_max_s=10.0, freeze_release_s=2.5)


def pair(interactive_on_tp: int, interactive_on_pp: int = 0, group: str | None = "gpus") -> list[ReplicaWork]:
    return [
        ReplicaWork("tp", "interactive", group, interactive=interactive_on_tp),
        ReplicaWork("pp", "batch", group, interactive=interactive_on_pp),
    ]


def trace(steps: list[tuple[float, int, int]], settings: RoutingSettings = FREEZE) -> list[bool]:
    """Whether "pp" is frozen after each (time, interactive on tp, interactive on pp) step."""
    state, seen = Arbitration(), []
    for now, on_tp, on_pp in steps:
        state = arbitrate(pair(on_tp, on_pp), now, settings, state)
        seen.append("pp" in state.frozen)
    return seen


@pytest.mark.parametrize(
    ("name", "steps", "expected"),
    [
        ("no interactive work: batch runs", [(0, 0, 0), (50, 0, 0)], [False, False]),
        ("frozen as soon as interactive runs beside it", [(0, 0, 0), (1, 1, 0), (2, 3, 0)], [False, True, True]),
        # settle: idle for 0.4 s (< 0.5 s) keeps the freeze, idle for 0.5 s ends it
        ("a short idle gap keeps the freeze", [(0, 1, 0), (1, 0, 0), (1.4, 0, 0), (1.45, 1, 0)], [True] * 4),
        ("a settled idle gap resumes", [(0, 1, 0), (1, 0, 0), (1.5, 0, 0), (2, 1, 0)], [True, True, False, True]),
        # the starvation bound: frozen at most 10 s, then running for 2.5 s whatever interactive does
        (
            "the bound forces a resume",
            [(0, 1, 0), (9.9, 1, 0), (10, 1, 0), (12.4, 1, 0), (12.5, 1, 0)],
            [True, True, False, False, True],
        ),
        ("a forced resume lasts although interactive idles", [(0, 1, 0), (10, 1, 0), (11, 0, 0), (12, 2, 0)],
         [True, False, False, False]),
        # spill-over: interactive work on the batch replica itself resumes it at once, and keeps it running
        ("spill-over resumes a frozen replica", [(0, 1, 0), (1, 5, 1), (2, 5, 1)], [True, False, False]),
        ("spill-over ended: frozen again while interactive runs beside", [(0, 5, 1), (1, 5, 0)], [False, True]),
    ],
)  # fmt: skip
def test_freeze_table(name: str, steps: list[tuple[float, int, int]], expected: list[bool]) -> None:
    assert trace(steps) == expected, name


@pytest.mark.parametrize(
    "settings",
    [RoutingSettings(), RoutingSettings(gpu_arbitration="admission", batch_yield_fraction=0.0)],
    ids=["default", "admission yielding"],
)
def test_only_the_freeze_mode_freezes(settings: RoutingSettings) -> None:
    assert trace([(0, 3, 0), (5, 3, 0)], settings) == [False, False]


def test_replicas_that_share_no_devices_are_never_frozen() -> None:
    state = arbitrate(pair(3, group=None), 0, FREEZE, Arbitration())
    assert state.frozen == frozenset()


def test_several_replicas_each_frozen_by_the_work_on_its_own_devices() -> None:
    """Two pairs on two device groups, and a batch replica alone on a third: interactive work on
    box A freezes only box A's batch replica, and a replica without an interactive neighbour runs."""
    replicas = [
        ReplicaWork("tp-a", "interactive", "a", interactive=2),
        ReplicaWork("pp-a", "batch", "a"),
        ReplicaWork("tp-b", "interactive", "b"),
        ReplicaWork("pp-b", "batch", "b"),
        ReplicaWork("pp-c", "batch", "c"),
    ]
    state = arbitrate(replicas, 0, FREEZE, Arbitration())
    assert state.frozen == {"pp-a"}
    replicas[2] = ReplicaWork("tp-b", "interactive", "b", interactive=1)
    state = arbitrate(replicas, 1, FREEZE, state)
    assert state.frozen == {"pp-a", "pp-b"}
    assert state.of("pp-a").since == 0  # its freeze goes on from where it began
    # two batch replicas beside one interactive one: both frozen, and spill into one frees only that one
    shared = [
        ReplicaWork("tp", "interactive", "g", interactive=4),
        ReplicaWork("pp-1", "batch", "g", interactive=1),
        ReplicaWork("pp-2", "batch", "g"),
    ]
    assert arbitrate(shared, 0, FREEZE, Arbitration()).frozen == {"pp-2"}


def test_batch_runs_at_least_the_bounds_share_under_any_interactive_load() -> None:
    """Interactive busy without a break for an hour, re-evaluated at each timer and at arrivals
    every 0.3 s: no freeze outlasts freeze_max_s, and batch runs at least release / (max + release)."""
    state, now, since, longest, running = Arbitration(), 0.0, None, 0.0, 0.0
    while now < 3600:
        state = arbitrate(pair(1), now, FREEZE, state)
        frozen = "pp" in state.frozen
        if frozen and since is None:
            since = now
        if not frozen and since is not None:
            longest, since = max(longest, now - since), None
        step = min(0.3, (state.next_change(FREEZE) or now + 0.3) - now)
        running += 0 if frozen else step
        now += max(step, 1e-9)
    assert longest <= FREEZE.arbitration.max_s + 1e-6
    timers = HoldTimers(FREEZE.arbitration.settle_s, FREEZE.arbitration.max_s, FREEZE.arbitration.release_s)
    assert running / 3600 >= 1 - frozen_share(timers) - 0.01


def test_next_change_names_the_timer_to_set() -> None:
    assert Arbitration().next_change(FREEZE) is None
    frozen = arbitrate(pair(1), 5, FREEZE, Arbitration())
    assert frozen.next_change(FREEZE) == 15  # the bound
    settling = arbitrate(pair(0), 7, FREEZE, frozen)
    assert settling.next_change(FREEZE) == 7.5  # the settle first
    forced = arbitrate(pair(1), 15, FREEZE, frozen)
    assert forced.of("pp").forced and forced.next_change(FREEZE) == 17.5  # the forced run ends


@pytest.mark.parametrize(
    "bad",
    [
        {"gpu_arbitration": "pause"},
        {"freeze_max_s": 0},
        {"freeze_release_s": 0},
        {"freeze_lease_s": 0},
        {"freeze_settle_s": -1},
    ],
)
def test_arbitration_settings_that_could_starve_or_conflict_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RoutingSettings(**bad)  # type: ignore[arg-type]


def test_bounded_step_caps_batch_admissions_while_the_freeze_runs() -> None:
    """Freeze and batch yielding combine (the bounded step): while interactive work is active the
    batch class is held to its cap as well as frozen, so the batch step in flight when the next
    chat lands is short; the cap lifts batch_yield_settle_s after interactive work ends."""
    bounded = RoutingSettings(gpu_arbitration="freeze", batch_yield_fraction=0.125, batch_yield_settle_s=5)
    limits = bounded.limits["batch"].model_copy(update={"max_concurrency": 256})
    held = batch_yield(1, 0.0, bounded, YieldState())
    assert held.holding and batch_limits(limits, bounded, held).max_concurrency == 32
    idle = batch_yield(0, 1.0, bounded, held)  # interactive gone at 1 s
    assert batch_yield(0, 5.9, bounded, idle).holding  # within the settle
    assert not batch_yield(0, 6.0, bounded, idle).holding
    assert arbitrate(pair(1), 0.0, bounded, Arbitration()).frozen == {"pp"}


def test_every_shipped_plan_shares_its_devices_and_the_gpu_plans_freeze() -> None:
    """The builder puts co-resident replicas in one device group (so the freeze can apply): every
    shipped plan's, but the CPU plan of two models, whose two one-worker engines each have a core. The GPU
    plans ship gpu_arbitration "freeze" (the arbitration study's choice on the Spark plans, the
    H100's measured TPOT on one-gpu: docs/routing.md, the shipped plans); the CPU plan keeps the
    settings' default "admission" (on two shared cores the freeze did worse, "Live on the CPU stack")."""
    plans = sorted(SHIPPED_PLANS_DIR.glob("*.yaml"))
    assert plans
    for path in plans:
        plan = load_plan(path)
        config = gateway_config(plan)
        co_resident = sum(r.world_size for r in plan.replicas) > plan.cluster.devices
        assert co_resident == (path.stem != "cpu-two-models"), path.name
        assert {r.device_group for r in config.replicas} == {"shared" if co_resident else None}, path.name
        expected = "admission" if plan.cluster.is_cpu else "freeze"
        assert config.settings.routing.arbitration.mode == expected, path.name
    assert RoutingSettings().arbitration.mode == "admission"
    frozen = RoutingSettings(gpu_arbitration="freeze")
    assert RoutingSettings.model_validate_json(frozen.model_dump_json()).arbitration.mode == "freeze"
