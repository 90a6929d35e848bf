"""A hold (batch yielding, a freeze) ends on its settle timer even when the event loop fires that
timer a rounding error early. uvloop, the gateway's loop, rounds timers to whole milliseconds and
fired about one in eight at a loop time just below the time asked for; the hold then saw its
settle time not yet reached, armed nothing, and held batch work until the next interactive
request came (CI: a batch request held for 30 s after interactive work ended)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import uvloop

from gateway.admission import ClassGate
from gateway.contract.config import RoutingSettings
from gateway.timers import ReevaluationTimer
from gateway.yielding import BatchYielding


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EarlyLoop:
    """The two loop methods the timer uses; `fire` runs the armed call at a clock reading one float
    step below its due time, as uvloop did."""

    def __init__(self) -> None:
        self.clock = 51190.508
        self.armed: list[tuple[float, Callable[..., None], tuple[object, ...], _Handle]] = []

    def time(self) -> float:
        return self.clock

    def call_at(self, when: float, callback: Callable[..., None], *args: object) -> _Handle:
        handle = _Handle()
        self.armed.append((when, callback, args, handle))
        return handle

    def fire(self) -> float:
        when, callback, args, handle = self.armed.pop()
        assert not handle.cancelled
        self.clock = math.nextafter(when, 0.0)
        callback(*args)
        return when


def test_the_clock_read_in_a_timer_is_never_before_its_due_time() -> None:
    loop = EarlyLoop()
    seen: list[float] = []
    timer = ReevaluationTimer(lambda: seen.append(timer.now(loop)))
    timer.arm(loop, loop.time() + 0.3)
    assert timer.pending
    due = loop.fire()
    assert loop.time() < due and seen == [due] and not timer.pending
    assert timer.now(loop) == loop.time()  # outside a firing: the loop's own clock


def test_every_hold_ends_on_its_settle_timer_under_uvloop() -> None:
    settings = RoutingSettings(batch_yield_fraction=0, batch_yield_settle_s=0.004)

    async def holds(count: int) -> None:
        yielding = BatchYielding(lambda: settings)
        interactive = ClassGate("interactive", lambda: settings.limits["interactive"], on_change=yielding.update)
        batch = ClassGate("batch", yielding.batch_limits)
        yielding.watch([interactive], batch)
        yielding.update()

        async def batch_request() -> None:
            async with batch.slot():
                pass

        for attempt in range(count):
            async with interactive.slot():
                assert yielding.holding
                held = asyncio.create_task(batch_request())
                for _ in range(100):
                    await asyncio.sleep(0)
                assert batch.queued == 1 and not held.done()
                # Read before the slot is left (the hold's settle time counts from then): a read after
                # it would come late by however long a loaded machine kept this thread off a core.
                ended = time.monotonic()
            try:
                await asyncio.wait_for(held, timeout=10)
            except TimeoutError:
                raise AssertionError(f"hold {attempt} did not end: {yielding.state}") from None
            assert time.monotonic() - ended >= 0.003 and not yielding.holding
            assert (batch.in_flight, batch.queued) == (0, 0)

    uvloop.run(holds(300))
