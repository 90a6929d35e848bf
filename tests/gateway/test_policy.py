"""The routing policy and classifier, called directly: they are pure functions."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

import gateway.contract.policies
import gateway.contract.router
from gateway.admission import ClassGate
from gateway.contract.admission import ClassLoad, admit
from gateway.contract.classify import classify
from gateway.contract.config import ClassLimits, GpuArbitrationSettings, RoutingSettings
from gateway.contract.policy import ReplicaLoad, RequestFeatures
from gateway.contract.router import POLICIES, PolicyState, Reject, Route, route
from gateway.contract.yielding import YieldState, batch_limits, batch_yield
from gateway.errors import GatewayError

SETTINGS = RoutingSettings(spill_queue_threshold=4, spill_release_threshold=1, spill_target_headroom=8)
CHAT = RequestFeatures("chat", stream=True, max_tokens=256)


def replicas(
    tp_waiting: int = 0, tp_in_flight: int = 0, pp_free: int = 64, pp_in_flight: int = 0, **kw: bool
) -> list[ReplicaLoad]:
    return [
        ReplicaLoad("tp", "interactive", in_flight=tp_in_flight, waiting=tp_waiting, max_num_seqs=8,
                    healthy=kw.get("tp_healthy", True)),
        ReplicaLoad("pp", "batch", in_flight=pp_in_flight, running=64 - pp_free, max_num_seqs=64,
                    healthy=kw.get("pp_healthy", True), accepts_priority=True),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (RequestFeatures("chat", stream=True, max_tokens=256), "interactive"),
        (RequestFeatures("chat", stream=True, max_tokens=None), "interactive"),
        (RequestFeatures("chat", stream=False, max_tokens=64), "interactive"),
        (RequestFeatures("chat", stream=True, max_tokens=1024), "interactive"),
        (RequestFeatures("chat", stream=True, max_tokens=1025), "batch"),
        (RequestFeatures("chat", stream=False, max_tokens=None), "batch"),
        (RequestFeatures("chat", stream=False, max_tokens=4096), "batch"),
        (RequestFeatures("chat", stream=True, n=2, max_tokens=16), "batch"),
        (RequestFeatures("completions", stream=True, prompts=2, max_tokens=16), "batch"),
        (RequestFeatures("completions", stream=False, prompts=1, max_tokens=16), "interactive"),
    ],
)
def test_classification_by_shape(features: RequestFeatures, expected: str) -> None:
    assert classify(features, RoutingSettings()) == expected


def test_header_beats_key_default_beats_shape() -> None:
    batchy = RequestFeatures("chat", stream=False, n=4)
    assert classify(batchy, SETTINGS, requested="interactive", key_default="batch") == "interactive"
    assert classify(batchy, SETTINGS, key_default="interactive") == "interactive"
    assert classify(CHAT, SETTINGS, key_default="batch") == "batch"


def test_thresholds_come_from_settings() -> None:
    features = RequestFeatures("chat", stream=True, max_tokens=300)
    assert classify(features, RoutingSettings(interactive_max_tokens=200)) == "batch"
    assert (
        classify(RequestFeatures("completions", stream=True, prompts=3), RoutingSettings(batch_min_prompts=4))
        == "interactive"
    )


def test_each_class_to_its_replica() -> None:
    decision, _ = route(CHAT, "interactive", replicas(), SETTINGS, PolicyState())
    assert decision == Route("tp", priority=None)
    decision, _ = route(CHAT, "batch", replicas(tp_in_flight=1), SETTINGS, PolicyState())
    assert decision == Route("pp", priority=10)


def test_interactive_spills_with_hysteresis() -> None:
    state = PolicyState()
    sequence = []
    for waiting in [0, 3, 4, 3, 2, 1, 0, 3]:
        decision, state = route(CHAT, "interactive", replicas(tp_waiting=waiting), SETTINGS, state)
        sequence.append(decision.replica)
    # starts at 4 waiting, keeps spilling down to the release threshold (1), not back up at 3
    assert sequence == ["tp", "tp", "pp", "pp", "pp", "tp", "tp", "tp"]


def test_spill_needs_room_on_the_batch_replica() -> None:
    decision, state = route(CHAT, "interactive", replicas(tp_waiting=9, pp_free=7), SETTINGS, PolicyState())
    assert decision.replica == "tp" and state.of("class-aware", POLICIES["class-aware"]).spilling
    decision, _ = route(CHAT, "interactive", replicas(tp_waiting=9, pp_free=8), SETTINGS, state)
    assert decision == Route("pp", priority=0, spilled=True)


def test_batch_borrows_only_an_idle_interactive_replica() -> None:
    full_pp = {"pp_free": 0}
    assert route(CHAT, "batch", replicas(**full_pp), SETTINGS, PolicyState())[0].replica == "tp"
    assert route(CHAT, "batch", replicas(tp_in_flight=1, **full_pp), SETTINGS, PolicyState())[0].replica == "pp"
    assert route(CHAT, "batch", replicas(tp_waiting=1, **full_pp), SETTINGS, PolicyState())[0].replica == "pp"
    assert route(CHAT, "batch", replicas(), SETTINGS, PolicyState())[0].replica == "pp"  # room at home
    no_borrow = SETTINGS.replacing(spill=SETTINGS.spill.model_copy(update={"batch_borrows_idle_interactive": False}))
    assert route(CHAT, "batch", replicas(**full_pp), no_borrow, PolicyState())[0].replica == "pp"


def test_batch_never_borrows_the_interactive_replica_under_the_freeze() -> None:
    """The freeze reserves the shared GPUs for chat: batch work on the chat engine would sit ahead of
    the next chat request, where no freeze reaches it."""
    freeze = SETTINGS.replacing(arbitration=GpuArbitrationSettings(mode="freeze"))
    assert route(CHAT, "batch", replicas(pp_free=0), freeze, PolicyState())[0].replica == "pp"


def test_batch_flood_never_reaches_a_busy_interactive_replica() -> None:
    """Starvation, one way: however long the batch queue, interactive keeps its replica."""
    state = PolicyState()
    for tp_in_flight in range(1, 50):
        decision, state = route(CHAT, "batch", replicas(tp_in_flight=tp_in_flight, pp_free=0), SETTINGS, state)
        assert decision.replica == "pp"


def test_class_gates_are_independent() -> None:
    """Starvation, the other way: a full batch class does not hold interactive requests back."""

    async def scenario() -> None:
        limits = {
            "interactive": ClassLimits(max_concurrency=1, max_queue=1),
            "batch": ClassLimits(max_concurrency=1, max_queue=0),
        }
        gates = {c: ClassGate(c, lambda c=c: limits[c]) for c in limits}
        async with gates["batch"].slot():
            with pytest.raises(GatewayError) as info:
                async with gates["batch"].slot():
                    pass
            assert info.value.status == 429 and info.value.headers["Retry-After"]
            async with gates["interactive"].slot():
                assert gates["interactive"].in_flight == 1

    asyncio.run(scenario())


def test_class_gate_queues_in_order_and_forgets_the_cancelled() -> None:
    async def scenario() -> None:
        limits = ClassLimits(max_concurrency=1, max_queue=3)
        gate = ClassGate("batch", lambda: limits)
        order: list[int] = []
        release = asyncio.Event()

        async def job(i: int) -> None:
            async with gate.slot():
                order.append(i)
                await release.wait()

        first = asyncio.create_task(job(0))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(job(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        assert gate.queued == 3
        waiters[0].cancel()
        await asyncio.sleep(0)
        assert gate.queued == 2
        release.set()
        await asyncio.gather(first, *waiters[1:])
        assert order == [0, 2, 3]
        assert gate.in_flight == 0 and gate.queued == 0

    asyncio.run(scenario())


def test_raising_a_limit_lets_the_queue_in() -> None:
    async def scenario() -> None:
        limits = {"v": ClassLimits(max_concurrency=1, max_queue=5)}
        gate = ClassGate("interactive", lambda: limits["v"])
        hold = asyncio.Event()

        async def job() -> None:
            async with gate.slot():
                await hold.wait()

        tasks = [asyncio.create_task(job()) for _ in range(3)]
        await asyncio.sleep(0)
        assert (gate.in_flight, gate.queued) == (1, 2)
        limits["v"] = ClassLimits(max_concurrency=3, max_queue=5)
        gate.grant()
        assert (gate.in_flight, gate.queued) == (3, 0)
        hold.set()
        await asyncio.gather(*tasks)
        assert gate.in_flight == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("load", "expected"),
    [(ClassLoad(1, 0), "run"), (ClassLoad(2, 0), "queue"), (ClassLoad(2, 1), "queue"), (ClassLoad(2, 2), "reject")],
)
def test_admit(load: ClassLoad, expected: str) -> None:
    assert admit(load, ClassLimits(max_concurrency=2, max_queue=2)) == expected


def test_priority_only_for_priority_engines_and_never_over_the_client() -> None:
    decision, _ = route(CHAT, "batch", replicas(tp_in_flight=1), SETTINGS, PolicyState())
    assert decision.priority == 10
    client_set = RequestFeatures("chat", stream=False, client_priority=-5)
    decision, _ = route(client_set, "batch", replicas(tp_in_flight=1), SETTINGS, PolicyState())
    assert decision.priority is None
    decision, _ = route(CHAT, "interactive", replicas(), SETTINGS, PolicyState())
    assert decision.priority is None  # tp runs fcfs


def test_unhealthy_replica_is_routed_around_and_none_left_is_503() -> None:
    decision, _ = route(CHAT, "interactive", replicas(tp_healthy=False), SETTINGS, PolicyState())
    assert decision.replica == "pp"
    decision, _ = route(CHAT, "batch", replicas(pp_healthy=False), SETTINGS, PolicyState())
    assert decision.replica == "tp"
    decision, _ = route(CHAT, "batch", replicas(tp_healthy=False, pp_healthy=False), SETTINGS, PolicyState())
    assert isinstance(decision, Reject) and decision.status == 503


def test_a_model_with_one_class_spreads_every_request_over_its_replicas() -> None:
    """A model group of interactive replicas only (a coder model beside a chat model): class-aware
    sends either class to the least loaded of them, not always to the first."""
    two = [
        ReplicaLoad("a", "interactive", in_flight=2, max_num_seqs=8),
        ReplicaLoad("b", "interactive", in_flight=1, max_num_seqs=8),
    ]
    for traffic_class in ("interactive", "batch"):
        decision, _ = route(CHAT, traffic_class, two, SETTINGS, PolicyState())
        assert isinstance(decision, Route) and decision.replica == "b"


def _policy(name: str) -> RoutingSettings:
    return SETTINGS.model_copy(update={"policy": name})


def test_fixed_baselines() -> None:
    for cls in ("interactive", "batch"):
        assert route(CHAT, cls, replicas(), _policy("all-interactive"), PolicyState())[0].replica == "tp"
        assert route(CHAT, cls, replicas(), _policy("all-batch"), PolicyState())[0].replica == "pp"


def test_round_robin_carries_its_cursor_in_the_state() -> None:
    state = PolicyState()
    seen = []
    for _ in range(4):
        decision, state = route(CHAT, "interactive", replicas(), _policy("round-robin"), state)
        seen.append(decision.replica)
    assert seen == ["pp", "tp", "pp", "tp"]


def test_least_busy() -> None:
    decision, _ = route(CHAT, "batch", replicas(tp_in_flight=2, pp_in_flight=5), _policy("least-busy"), PolicyState())
    assert decision.replica == "tp"


def test_power_of_two_is_deterministic_for_a_seed_and_prefers_the_less_busy() -> None:
    loads = replicas(tp_in_flight=1, pp_in_flight=7)
    picks = [route(CHAT, "batch", loads, _policy("power-of-two"), PolicyState(), random.Random(7))[0] for _ in range(3)]
    assert len(set(picks)) == 1
    assert picks[0].replica == "tp"  # with two replicas both are sampled: the less busy wins


def test_every_named_policy_is_routable() -> None:
    for name in POLICIES:
        decision, _ = route(CHAT, "interactive", replicas(), _policy(name), PolicyState(), random.Random(0))
        assert isinstance(decision, Route)
    with pytest.raises(ValueError, match="unknown routing policy"):
        RoutingSettings(policy="fastest")


def test_the_registry_is_the_modules_of_gateway_policies() -> None:
    """Config accepts exactly the names the registry holds, each a module's name; a module that
    declares no POLICY is refused when the registry loads."""
    modules = Path(gateway.contract.policies.__file__).parent.glob("*.py")
    assert set(POLICIES) == {m.stem.replace("_", "-") for m in modules if m.stem != "__init__"}
    for name in POLICIES:
        assert RoutingSettings(policy=name).policy == name
    assert POLICIES["conversation-affinity"].reads_conversation
    assert not POLICIES["class-aware"].reads_conversation


def test_a_policy_module_without_a_spec_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.contract.router, "policy_modules", lambda: {"plain": "gateway.contract.policy"})
    with pytest.raises(ImportError, match="declares no POLICY"):
        gateway.contract.router._load_policies()


def test_each_policy_keeps_its_own_state() -> None:
    """Round-robin's cursor survives decisions of another policy made with the same PolicyState."""
    state = PolicyState()
    decision, state = route(CHAT, "interactive", replicas(), _policy("round-robin"), state)
    assert decision.replica == "pp"
    _, state = route(CHAT, "interactive", replicas(tp_waiting=9), SETTINGS, state)  # class-aware starts spilling
    decision, state = route(CHAT, "interactive", replicas(), _policy("round-robin"), state)
    assert decision.replica == "tp"
    assert state.of("class-aware", POLICIES["class-aware"]).spilling


# ---- batch yielding ----------------------------------------------------------------------------------

YIELDING = RoutingSettings(
    batch_yield_fraction=0.0, batch_yield_settle_s=2.0, batch_yield_max_hold_s=30.0, batch_yield_release_s=10.0
)
BATCH_LIMITS = ClassLimits(max_concurrency=144, max_queue=1152)


def yield_trace(settings: RoutingSettings, steps: list[tuple[float, int]]) -> list[tuple[bool, int]]:
    """(holding, batch max_concurrency) after each (time, interactive requests active) step."""
    state, seen = YieldState(), []
    for now, active in steps:
        state = batch_yield(active, now, settings, state)
        seen.append((state.holding, batch_limits(BATCH_LIMITS, settings, state).max_concurrency))
    return seen


@pytest.mark.parametrize(
    ("name", "steps", "expected"),
    [
        ("no interactive work: batch runs free", [(0, 0), (50, 0)], [(False, 144), (False, 144)]),
        ("holds as soon as interactive is active", [(0, 0), (1, 1), (5, 3)], [(False, 144), (True, 0), (True, 0)]),
        # hysteresis: idle for 1.5 s (< settle 2 s) keeps the hold; idle for 2 s ends it
        ("a short idle gap keeps the hold", [(0, 1), (3, 0), (4.5, 0), (5, 1)], [(True, 0)] * 4),
        (
            "a settled idle gap ends it",
            [(0, 1), (3, 0), (5, 0), (6, 1)],
            [(True, 0), (True, 0), (False, 144), (True, 0)],
        ),
        # starvation bound: held at most 30 s, then free for 10 s although interactive stays active
        (
            "the bound forces a release",
            [(0, 1), (29.9, 1), (30, 1), (39.9, 1), (40, 1)],
            [(True, 0), (True, 0), (False, 144), (False, 144), (True, 0)],
        ),
        (
            "a forced release lasts even if interactive idles",
            [(0, 1), (30, 1), (31, 0), (35, 2)],
            [(True, 0), (False, 144), (False, 144), (False, 144)],
        ),
    ],
)
def test_batch_yield_table(name: str, steps: list[tuple[float, int]], expected: list[tuple[bool, int]]) -> None:
    assert yield_trace(YIELDING, steps) == expected, name


@pytest.mark.parametrize(("fraction", "held"), [(0.0, 0), (0.1, 14), (0.25, 36), (0.5, 72)])
def test_a_hold_keeps_that_fraction_of_the_batch_limit(fraction: float, held: int) -> None:
    settings = YIELDING.replacing(yielding=YIELDING.yielding.model_copy(update={"fraction": fraction}))
    assert yield_trace(settings, [(0, 1)]) == [(True, held)]
    # the queue is untouched, so held batch requests wait rather than fail
    limits = batch_limits(BATCH_LIMITS, settings, YieldState(holding=True))
    assert limits.max_queue == BATCH_LIMITS.max_queue
    assert admit(ClassLoad(in_flight=held, queued=5), limits) == "queue"


def test_yielding_off_never_holds() -> None:
    off = RoutingSettings()
    assert off.yielding.fraction == 1.0
    assert yield_trace(off, [(0, 5), (100, 5), (1000, 5)]) == [(False, 144)] * 3


def test_batch_is_never_held_to_zero_for_longer_than_the_bound() -> None:
    """Interactive busy without a break for an hour, evaluated when the state says it changes (as
    the simulation does) and on every interactive arrival between: no hold outlasts max_hold_s,
    and batch runs at its full limit at least release / (max_hold + release) of the time."""
    state, now, held_since, longest, free_time = YieldState(), 0.0, None, 0.0, 0.0
    while now < 3600:
        state = batch_yield(1, now, YIELDING, state)
        if state.holding and held_since is None:
            held_since = now
        if not state.holding and held_since is not None:
            longest, held_since = max(longest, now - held_since), None
        step = min(0.7, (state.next_change(YIELDING) or now + 0.7) - now)  # arrivals every 0.7 s, or the timer
        free_time += 0 if state.holding else step
        now += max(step, 1e-9)
    assert longest <= YIELDING.yielding.max_hold_s + 1e-6
    assert free_time / 3600 >= 10 / (30 + 10) - 0.01


def test_next_change_names_the_timer_the_caller_must_set() -> None:
    assert YieldState().next_change(YIELDING) is None
    assert YieldState(holding=True, since=5).next_change(YIELDING) == 35  # the bound
    assert YieldState(holding=True, since=5, interactive_idle_since=10).next_change(YIELDING) == 12  # settle first
    assert YieldState(since=40, forced=True).next_change(YIELDING) == 50  # the forced release ends


@pytest.mark.parametrize(
    "bad",
    [
        {"batch_yield_fraction": -0.1},
        {"batch_yield_fraction": 1.5},
        {"batch_yield_max_hold_s": 0},
        {"batch_yield_release_s": 0},
    ],
)
def test_yield_settings_that_could_starve_batch_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RoutingSettings(**bad)
