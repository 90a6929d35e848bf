"""GPU arbitration applied live (gateway.freezing) over a recording backend: what the batch engine
is told and when, what /metrics says. The real engines' behaviour is tested on the CPU stack
(tests/stack/test_freeze.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from gateway_support import IdleBackend
from prometheus_client import CollectorRegistry, generate_latest

from gateway.backends.base import Backend
from gateway.contract.config import ReplicaEndpoint, RequestLimits, RoutingSettings
from gateway.engine_pause import EngineControlFailed, PauseStatus
from gateway.freezing import EngineFreezer
from gateway.load import LoadBoard

FREEZE = RoutingSettings(gpu_arbitration="freeze", freeze_settle_s=0.2, freeze_max_s=30, freeze_lease_s=3)
REPLICAS = [
    ReplicaEndpoint(name="tp", traffic_class="interactive", model="m", device_group="shared"),
    ReplicaEndpoint(name="pp", traffic_class="batch", model="m", device_group="shared"),
]


class RecordingEngine(IdleBackend):
    """A batch replica that records pause/resume commands (and can refuse them)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, int]] = []
        self.paused = False
        self.refuse = 0

    async def pause(self, lease_s: float, seq: int) -> PauseStatus:
        return self._apply("pause", seq, True)

    async def resume(self, seq: int) -> PauseStatus:
        return self._apply("resume", seq, False)

    def _apply(self, command: str, seq: int, paused: bool) -> PauseStatus:
        if self.refuse:
            self.refuse -= 1
            raise EngineControlFailed("refused")
        self.commands.append((command, seq))
        self.paused = paused
        return PauseStatus(paused=paused, seq=seq)


async def eventually(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Rig:
    def __init__(self, settings: RoutingSettings, replicas: list[ReplicaEndpoint] = REPLICAS) -> None:
        self.settings = settings
        self.board = LoadBoard(replicas, RequestLimits().load_probe_misses)
        self.engine = RecordingEngine()
        self.registry = CollectorRegistry()
        backends: dict[str, Backend] = {r.name: RecordingEngine() for r in replicas}
        backends["pp"] = self.engine
        self.freezer = EngineFreezer(replicas, backends, self.board, lambda: self.settings, self.registry)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig(FREEZE)
    await rig.freezer.start()
    yield rig
    await rig.freezer.stop()


async def test_interactive_work_freezes_the_batch_engine_and_its_end_resumes_it(rig: Rig) -> None:
    with rig.board.tracking("pp", "batch"):  # batch work alone freezes nothing
        await asyncio.sleep(0.05)
    assert rig.engine.commands == []
    with rig.board.tracking("tp", "interactive"):
        await eventually(lambda: rig.engine.paused)
        assert rig.freezer.frozen == {"pp"}
    await eventually(lambda: not rig.engine.paused)  # after the settle time
    kinds = [c for c, _ in rig.engine.commands]
    assert kinds[0] == "pause" and kinds[-1] == "resume" and set(kinds[1:-1]) <= {"pause"}
    seqs = [s for _, s in rig.engine.commands]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # ordered, each command newer
    assert metric(rig.registry, "tandem_gateway_engine_freezes_total", replica="pp") == 1
    assert metric(rig.registry, "tandem_gateway_engine_frozen_seconds_total", replica="pp") > 0
    assert metric(rig.registry, "tandem_gateway_engine_frozen", replica="pp") == 0
    for command in ("pause", "resume"):
        assert metric(rig.registry, "tandem_gateway_engine_control_seconds_count", replica="pp", command=command) >= 1


async def test_the_lease_is_renewed_while_the_freeze_lasts(rig: Rig) -> None:
    with rig.board.tracking("tp", "interactive"):
        await eventually(lambda: len(rig.engine.commands) >= 3)  # a pause, then renewals every lease / 3
        assert all(c == "pause" for c, _ in rig.engine.commands)
        assert metric(rig.registry, "tandem_gateway_engine_freezes_total", replica="pp") == 1
    await eventually(lambda: not rig.engine.paused)


async def test_spill_over_onto_the_batch_replica_resumes_it(rig: Rig) -> None:
    with rig.board.tracking("tp", "interactive"):
        await eventually(lambda: rig.engine.paused)
        with rig.board.tracking("pp", "interactive"):
            await eventually(lambda: not rig.engine.paused)
        await eventually(lambda: rig.engine.paused)


async def test_a_refused_command_is_tried_again() -> None:
    rig = Rig(FREEZE)
    rig.engine.refuse = 2
    await rig.freezer.start()
    try:
        with rig.board.tracking("tp", "interactive"):
            await eventually(lambda: rig.engine.paused)
        failures = metric(rig.registry, "tandem_gateway_engine_control_failures_total", replica="pp", command="pause")
        assert failures == 2
        await eventually(lambda: not rig.engine.paused)
    finally:
        await rig.freezer.stop()


async def test_the_starvation_bound_resumes_and_is_counted() -> None:
    rig = Rig(FREEZE.replacing(arbitration=FREEZE.arbitration.model_copy(update={"max_s": 0.3, "release_s": 0.3})))
    await rig.freezer.start()
    try:
        with rig.board.tracking("tp", "interactive"):
            await eventually(lambda: rig.engine.paused)
            await eventually(
                lambda: metric(rig.registry, "tandem_gateway_engine_forced_resumes_total", replica="pp") >= 1
            )
            await eventually(lambda: not rig.engine.paused)
            await eventually(lambda: rig.engine.paused)  # frozen again once the forced run is over
    finally:
        await rig.freezer.stop()


async def test_stopping_the_gateway_resumes_a_frozen_engine() -> None:
    rig = Rig(FREEZE)
    await rig.freezer.start()
    with rig.board.tracking("tp", "interactive"):
        await eventually(lambda: rig.engine.paused)
        await rig.freezer.stop()
    assert not rig.engine.paused and rig.engine.commands[-1][0] == "resume"


@pytest.mark.parametrize(
    "settings",
    [RoutingSettings(), FREEZE],
    ids=["mode off", "no shared devices"],
)
async def test_nothing_is_frozen_without_the_mode_or_shared_devices(settings: RoutingSettings) -> None:
    apart = [r.model_copy(update={"device_group": None}) for r in REPLICAS]
    rig = Rig(settings, apart if settings is FREEZE else REPLICAS)
    await rig.freezer.start()
    try:
        with rig.board.tracking("tp", "interactive"):
            await asyncio.sleep(0.2)
        assert rig.engine.commands == []
        assert b"tandem_gateway_engine_frozen" in generate_latest(rig.registry)
    finally:
        await rig.freezer.stop()


async def test_switching_the_mode_on_at_runtime_freezes_work_already_running() -> None:
    rig = Rig(RoutingSettings())
    await rig.freezer.start()
    try:
        with rig.board.tracking("tp", "interactive"):
            await asyncio.sleep(0.05)
            rig.settings = FREEZE
            rig.freezer.update()  # as PUT /admin/routing does
            await eventually(lambda: rig.engine.paused)
            rig.settings = RoutingSettings()
            rig.freezer.update()
            await eventually(lambda: not rig.engine.paused)
    finally:
        await rig.freezer.stop()


async def test_another_models_chat_freezes_only_the_batch_engines_on_its_devices() -> None:
    """Replicas of two models (gateway.model_groups): chat's tp and pp share the box with the
    coder's replica; a coder request freezes the chat model's batch engine beside it, and a
    request on a model on other devices freezes nothing."""
    replicas = [
        ReplicaEndpoint(name="tp", traffic_class="interactive", model="chat", device_group="box"),
        ReplicaEndpoint(name="pp", traffic_class="batch", model="chat", device_group="box"),
        ReplicaEndpoint(name="coder", traffic_class="interactive", model="coder", device_group="box"),
        ReplicaEndpoint(name="small", traffic_class="interactive", model="small", device_group="other-box"),
    ]
    rig = Rig(FREEZE, replicas)
    await rig.freezer.start()
    try:
        with rig.board.tracking("small", "interactive"):
            await asyncio.sleep(0.1)
            assert rig.engine.commands == [] and rig.freezer.frozen == frozenset()
        with rig.board.tracking("coder", "interactive"):
            await eventually(lambda: rig.engine.paused)
            assert rig.freezer.frozen == {"pp"}
        await eventually(lambda: not rig.engine.paused)
    finally:
        await rig.freezer.stop()
