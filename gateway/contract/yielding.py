"""Batch yielding, pure: admission that gives shared GPUs to interactive work (off unless set).
The gateway (gateway.yielding) keeps the state and applies the limits to its class gates; the
traffic simulation calls the same functions with simulated time.

  batch_yield(interactive requests active, now, settings, YieldState) -> YieldState
  batch_limits(batch ClassLimits, settings, YieldState) -> the ClassLimits admit() applies now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.contract.config import ClassLimits, RoutingSettings
from gateway.contract.timers import HoldTimers, hold_next_change, hold_step


@dataclass(frozen=True, slots=True)
class YieldState:
    """Whether batch admissions are held back for interactive work, and since when.

    Times are the caller's clock in seconds (the gateway's monotonic clock, or simulated time)."""

    holding: bool = False
    since: float = 0.0
    """When the current phase (holding, or free) began."""
    forced: bool = False
    """The current free phase was forced by the starvation bound: it lasts batch_yield_release_s."""
    interactive_idle_since: float | None = None
    """When interactive work last dropped to none in flight or queued; None while there is some."""

    def next_change(self, settings: RoutingSettings) -> float | None:
        """When this state changes by itself unless traffic changes it first: the caller re-evaluates
        `batch_yield` then (a timer in the simulation, the load poll in the gateway). None: never."""
        return hold_next_change(self, _yield_timers(settings))


def _yield_timers(settings: RoutingSettings) -> HoldTimers:
    return HoldTimers(settings.yielding.settle_s, settings.yielding.max_hold_s, settings.yielding.release_s)


def batch_yield(interactive_active: int, now: float, settings: RoutingSettings, state: YieldState) -> YieldState:
    """The next yield state, given the interactive requests in flight or queued in the gateway now.

    Why: two replicas on the same GPUs without MPS time-slice them, so while the batch replica has
    any work the interactive one runs at about half speed, whatever the batch size (a decode step
    streams all the weights either way). Routing cannot help (each class has its own replica); only
    keeping the batch replica idle while interactive work runs can, and the price is batch
    throughput. Running requests are never stopped: holding only keeps new batch requests in the
    gateway's queue, so the batch replica drains and goes idle.

      hold      as soon as any interactive request is in flight or queued;
      settle    release once interactive has had none for batch_yield_settle_s (hysteresis: a
                user thinking between turns does not let in a batch request that would then slow
                the next turn for its whole run);
      bound     a hold lasts at most batch_yield_max_hold_s, then batch runs at its full limit for
                at least batch_yield_release_s, whatever interactive does: batch is never held to
                zero for longer than max_hold_s, and gets its full limit at least
                release / (max_hold + release) of the time.
    batch_yield_fraction 1 turns yielding off (the state stays free)."""
    if settings.yielding.fraction >= 1:
        return YieldState()
    return hold_step(interactive_active > 0, now, _yield_timers(settings), state)


def batch_limits(limits: ClassLimits, settings: RoutingSettings, state: YieldState) -> ClassLimits:
    """The batch class's admission limits under the yield state: while holding, at most
    batch_yield_fraction of its max_concurrency may be in flight (0: no new batch request starts
    until the hold ends); the queue's size is unchanged, so held requests wait, not fail."""
    if not state.holding:
        return limits
    held = math.floor(settings.yielding.fraction * limits.max_concurrency)
    return limits.model_copy(update={"max_concurrency": held})  # 0 is a valid *held* limit: admit() queues
