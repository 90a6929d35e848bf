"""Batch yielding, live: gateway.contract.yielding.batch_yield applied to the gateway's own class gates.

The policy is pure (the simulation runs the same functions); this module keeps its state, feeds
it the interactive class's activity whenever that changes, re-evaluates it when the state would
change by itself (the settle and starvation timers), and lets held batch requests in the moment a
hold ends. Off (batch_yield_fraction = 1, the default) it costs one comparison per change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from gateway.admission import ClassGate
from gateway.contract.config import ClassLimits, RoutingSettings
from gateway.contract.yielding import YieldState, batch_limits, batch_yield
from gateway.timers import ReevaluationTimer


class BatchYielding:
    """The yield state of one gateway; `watch` it over the interactive and batch gates."""

    def __init__(self, settings: Callable[[], RoutingSettings]) -> None:
        self._settings = settings
        self.state = YieldState()
        self._interactive: tuple[ClassGate, ...] = ()
        self._batch: ClassGate | None = None
        self._timer = ReevaluationTimer(self.update)

    def watch(self, interactive: Sequence[ClassGate], batch: ClassGate) -> None:
        """Yield `batch` to the interactive work of `interactive`: the interactive gates of every
        model whose replicas share devices with this batch class's replicas (its own included)."""
        self._interactive, self._batch = tuple(interactive), batch

    @property
    def holding(self) -> bool:
        return self.state.holding

    def batch_limits(self) -> ClassLimits:
        """The batch class's limits now (its gate reads them at every decision)."""
        settings = self._settings()
        return batch_limits(settings.limits["batch"], settings, self.state)

    def update(self) -> None:
        """Re-evaluate after the interactive class's activity or the settings changed."""
        settings = self._settings()
        if settings.yielding.fraction >= 1 and not self.state.holding and not self._timer.pending:
            return
        assert self._batch is not None, "watch() the gates first"
        loop = asyncio.get_running_loop()
        active = sum(gate.in_flight + gate.queued for gate in self._interactive)
        state = batch_yield(active, self._timer.now(loop), settings, self.state)
        if state == self.state:
            return
        self.state = state
        self._timer.arm(loop, state.next_change(settings))
        self._batch.grant()  # a hold that ended (or eased) lets queued batch requests in
