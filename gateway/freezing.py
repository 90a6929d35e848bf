"""GPU arbitration, live: gateway.contract.freezing's freezes applied to the batch engines.

The policy is pure (the simulation runs the same function); this module keeps its state, feeds it
the interactive requests in flight per replica whenever they change (LoadBoard listeners),
re-evaluates it when a timer it names comes due (settle, starvation bound), and drives each batch
engine to the wanted state through its backend's pause/resume.

One `_EngineSwitch` per batch replica sends the commands, one at a time and in order (each with a
newer sequence number, so the replica never applies a late one over a newer one), and renews the
pause's lease every third of the lease while the freeze lasts; if the gateway dies, the replica
resumes by itself when the lease runs out (deploy/engine_lease.py). A command that fails is tried
again; a resume that keeps failing stops mattering once the last lease has run out. Commands never
block a request: an interactive request is sent at once, and the pause follows it.

Off (gpu_arbitration "admission", the default) `update` costs one comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.backends.base import Backend
from gateway.contract.config import ReplicaEndpoint, RoutingSettings
from gateway.contract.freezing import Arbitration, ReplicaWork, arbitrate
from gateway.load import LoadBoard
from gateway.timers import ReevaluationTimer

log = logging.getLogger("tandem.gateway")

RETRY_S = 0.2
"""Wait before a failed command is tried again."""
_CONTROL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Sequence:
    """Command numbers that only grow, across gateway restarts too (wall clock in ns)."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        self._last = max(self._last + 1, time.time_ns())
        return self._last


@dataclass
class _EngineSwitch:
    """One batch engine: wanted state, acknowledged state, and the time it spent frozen."""

    name: str
    backend: Backend
    latency: Histogram
    want_frozen: bool = False
    paused: bool = False
    paused_at: float = 0.0
    renewed_at: float = 0.0
    frozen_s: float = 0.0
    freezes: int = 0
    failures: dict[str, int] = field(default_factory=lambda: {"pause": 0, "resume": 0})
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def frozen_seconds(self, now: float) -> float:
        return self.frozen_s + (now - self.paused_at if self.paused else 0.0)

    def want(self, frozen: bool) -> None:
        if frozen != self.want_frozen:
            self.want_frozen = frozen
            self.wake.set()

    async def run(self, lease_s: Callable[[], float], seq: _Sequence) -> None:
        """Drive the engine to the wanted state, forever (cancelled at shutdown)."""
        while True:
            self.wake.clear()
            if self.want_frozen:
                await self._command("pause", lambda: self.backend.pause(lease_s(), seq()))
                await self._sleep(lease_s() / 3 if self.paused else RETRY_S)
            elif self.paused:
                if not await self._command("resume", lambda: self.backend.resume(seq())):
                    if time.monotonic() > self.renewed_at + lease_s():  # the replica resumed by itself
                        self._mark_running()
                    await self._sleep(RETRY_S)
            else:
                await self.wake.wait()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

    async def _command(self, command: str, call: Callable[[], Awaitable[object]]) -> bool:
        started = time.monotonic()
        try:
            status = await call()
        except Exception as exc:  # a down replica, a refused command: tried again
            self.failures[command] += 1
            log.warning("replica %s: %s failed: %s: %s", self.name, command, type(exc).__name__, exc)
            return False
        now = time.monotonic()
        self.latency.labels(self.name, command).observe(now - started)
        paused = bool(getattr(status, "paused", command == "pause"))
        if paused and not self.paused:
            self.paused, self.paused_at = True, now
            self.freezes += 1
        elif not paused and self.paused:
            self._mark_running()
        if paused:
            self.renewed_at = started  # the lease counts from before the command reached the replica
        return True

    def _mark_running(self) -> None:
        self.frozen_s += time.monotonic() - self.paused_at
        self.paused = False


class EngineFreezer:
    """Freezes batch engines that share devices with interactive work (gateway.contract.freezing)."""

    def __init__(
        self,
        replicas: Iterable[ReplicaEndpoint],
        backends: Mapping[str, Backend],
        board: LoadBoard,
        settings: Callable[[], RoutingSettings],
        registry: CollectorRegistry,
    ) -> None:
        self._replicas = list(replicas)
        self._board = board
        self._settings = settings
        self.state = Arbitration()
        self.forced_resumes: dict[str, int] = {}
        latency = Histogram(
            "tandem_gateway_engine_control_seconds",
            "Pause (freeze) and resume commands to a batch engine: sent to acknowledged",
            ["replica", "command"],
            buckets=_CONTROL_BUCKETS,
            registry=registry,
        )
        self._switches = {
            r.name: _EngineSwitch(r.name, backends[r.name], latency)
            for r in self._replicas
            if r.traffic_class == "batch" and r.device_group is not None
        }
        self._seq = _Sequence()
        self._tasks: list[asyncio.Task[None]] = []
        self._timer = ReevaluationTimer(self.update)
        registry.register(_FreezeCollector(self))
        board.listen(self.update)

    @property
    def frozen(self) -> frozenset[str]:
        """Batch replicas whose engine is paused now (acknowledged)."""
        return frozenset(name for name, s in self._switches.items() if s.paused)

    async def start(self) -> None:
        lease = lambda: self._settings().arbitration.lease_s  # noqa: E731
        self._tasks = [
            asyncio.create_task(s.run(lease, self._seq), name=f"freeze-{s.name}") for s in self._switches.values()
        ]
        self.update()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop driving the engines and resume any still paused (best effort; the lease is the backstop)."""
        self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        paused = [s for s in self._switches.values() if s.paused]
        if paused:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.gather(*(s.backend.resume(self._seq()) for s in paused), return_exceptions=True),
                    timeout_s,
                )

    def update(self) -> None:
        """Re-evaluate after the requests in flight or the settings changed, or a timer came due."""
        settings = self._settings()
        if settings.arbitration.mode != "freeze" and not self.state.holds and not self._timer.pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a board used outside the app): nothing to drive
            return
        work = [
            ReplicaWork(r.name, r.traffic_class, r.device_group, self._board.interactive_in_flight(r.name))
            for r in self._replicas
        ]
        state = arbitrate(work, self._timer.now(loop), settings, self.state)
        if state == self.state:
            return
        for name, hold in state.holds:
            before = self.state.of(name)
            if before.holding and not hold.holding and hold.forced:
                self.forced_resumes[name] = self.forced_resumes.get(name, 0) + 1
        self.state = state
        self._timer.arm(loop, state.next_change(settings))
        frozen = state.frozen
        for name, switch in self._switches.items():
            switch.want(name in frozen)


@dataclass(frozen=True, eq=False)  # eq=False: the registry keys collectors by identity
class _FreezeCollector:
    """The freezer's counters, read at scrape time."""

    freezer: EngineFreezer

    def collect(self) -> Iterable[Metric]:
        now = time.monotonic()
        frozen_s = CounterMetricFamily(
            "tandem_gateway_engine_frozen_seconds", "Time the batch engine spent paused (frozen)", labels=["replica"]
        )
        freezes = CounterMetricFamily(
            "tandem_gateway_engine_freezes", "Times the batch engine was paused", labels=["replica"]
        )
        forced = CounterMetricFamily(
            "tandem_gateway_engine_forced_resumes",
            "Freezes ended by the starvation bound (routing.arbitration.max_s) while interactive work went on",
            labels=["replica"],
        )
        failures = CounterMetricFamily(
            "tandem_gateway_engine_control_failures",
            "Pause or resume commands that failed (tried again; the lease resumes a lost engine)",
            labels=["replica", "command"],
        )
        frozen = GaugeMetricFamily(
            "tandem_gateway_engine_frozen", "1 while the batch engine is paused", labels=["replica"]
        )
        for name, switch in self.freezer._switches.items():
            frozen_s.add_metric([name], switch.frozen_seconds(now))
            freezes.add_metric([name], switch.freezes)
            forced.add_metric([name], self.freezer.forced_resumes.get(name, 0))
            frozen.add_metric([name], 1.0 if switch.paused else 0.0)
            for command, count in switch.failures.items():
                failures.add_metric([name, command], count)
        yield from (frozen_s, freezes, forced, failures, frozen)
