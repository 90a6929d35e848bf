"""Per-class admission: at most `max_concurrency` requests of a class in flight, then a bounded
FIFO queue (waited in for at most the class's `queue_timeout_s`), then 429. The decision itself
is gateway.contract.admission.admit (pure); this module only does the waiting. Limits are read at each
call, so a routing change at runtime applies at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from gateway.contract.admission import ClassLoad, admit
from gateway.contract.config import ClassLimits, TrafficClass
from gateway.errors import GatewayError


class ClassGate:
    """The slots of one traffic class."""

    def __init__(
        self,
        traffic_class: TrafficClass,
        limits: Callable[[], ClassLimits],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.traffic_class = traffic_class
        self._limits = limits
        self._on_change = on_change or (lambda: None)  # told when in_flight + queued changes
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        decision = admit(ClassLoad(self.in_flight, len(self._waiters)), self._limits())
        if decision == "run":
            self.in_flight += 1
            self._on_change()
            return
        if decision == "reject":
            raise GatewayError(
                429,
                f"the {self.traffic_class} queue is full ({self._limits().max_queue} waiting); retry shortly",
                headers={"Retry-After": "1"},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._on_change()
        timeout_s = self._limits().queue_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await waiter  # granted by grant(), which counts it in in_flight
        except (asyncio.CancelledError, TimeoutError) as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted and given up at once: pass the slot on
            elif waiter in self._waiters:  # grant() may have dropped it already, as cancelled
                self._waiters.remove(waiter)
                self._on_change()
            if isinstance(exc, TimeoutError):
                raise GatewayError(
                    429,
                    f"waited {timeout_s:g} s in the {self.traffic_class} queue without a slot; retry shortly",
                    headers={"Retry-After": "1"},
                ) from None
            raise

    def _release(self) -> None:
        self.in_flight -= 1
        self.grant()
        self._on_change()

    def grant(self) -> None:
        """Let queued requests in while there are free slots (also after the limits changed)."""
        limit = self._limits().max_concurrency
        while self._waiters and self.in_flight < limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
