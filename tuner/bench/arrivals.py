"""Load patterns: closed-loop users and open-loop (Poisson / gamma) arrivals under shared bounds.

Both drivers take requests from one ``Budget``, so every stream of a run stops together at
the request count or the deadline. Requests in flight at that moment are awaited and kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from tuner.bench.client import RequestRecord
from tuner.bench.config import Bounds, ClosedLoop, OpenLoop

SendFn = Callable[[], Awaitable[RequestRecord]]
RecordFn = Callable[[RequestRecord], None]


class Budget:
    """How many more requests may start, and until when."""

    def __init__(self, bounds: Bounds) -> None:
        self._remaining = bounds.num_requests
        self.started = time.perf_counter()
        self.deadline = self.started + bounds.duration_s if bounds.duration_s is not None else float("inf")

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def take(self) -> bool:
        if self._remaining == 0 or self.time_left() <= 0:
            return False
        if self._remaining is not None:
            self._remaining -= 1
        return True


async def drive_closed(load: ClosedLoop, send: SendFn, budget: Budget, record: RecordFn) -> None:
    """``concurrency`` users: send, wait for the answer, think, repeat."""

    async def user() -> None:
        while budget.take():
            record(await send())
            if load.think_time_s:
                await asyncio.sleep(max(0.0, min(load.think_time_s, budget.time_left())))

    await asyncio.gather(*(user() for _ in range(load.concurrency)))


async def drive_open(load: OpenLoop, send: SendFn, budget: Budget, record: RecordFn, rng: np.random.Generator) -> None:
    """Arrivals with gamma-distributed gaps of mean 1/rate, sent at absolute times (no drift).

    A request waiting for a ``max_concurrency`` slot is timed from when it is sent, as in vLLM.
    """
    slots = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None
    scale = 1.0 / (load.request_rate * load.burstiness)

    async def one() -> None:
        if slots is None:
            record(await send())
            return
        async with slots:
            record(await send())

    in_flight: set[asyncio.Task[None]] = set()
    next_at = budget.started
    while True:
        next_at += float(rng.gamma(shape=load.burstiness, scale=scale))
        if next_at >= budget.deadline:
            break
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if not budget.take():
            break
        task = asyncio.create_task(one())
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
