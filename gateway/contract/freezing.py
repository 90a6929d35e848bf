"""GPU arbitration between co-resident replicas: freeze the batch engine while interactive work runs.

Pure: no I/O and no clock, like gateway.contract.router. The gateway (gateway.freezing) calls `arbitrate`
whenever the requests in flight on its replicas change and when a timer it was told of comes due;
the traffic simulation (tuner/perfmodel/simulate.py) calls the same function with simulated time.

Why: Tandem's plans put the interactive (TP) and batch (PP) replicas on the same GPUs. Two engines
on one GPU time-slice it, so while the batch engine steps, an interactive decode step takes 2.2x to
2.6x as long as alone (measured on an H200 by benchmarks/coresidence/, figures in docs/routing.md).
Holding batch *admissions* (gateway.contract.yielding.batch_yield) cannot help while admitted batch requests
keep decoding. vLLM can freeze an engine in place: `pause_generation(mode="keep")` stops its
scheduler after the current step, keeping every request and its KV cache, until
`resume_generation()`. Freezing the batch engine while interactive work runs gives the interactive
engine the GPU to itself; the price is batch throughput, bounded below by the starvation bound.

Inputs
  ReplicaWork     one per replica: name, its class, its device group (replicas with the same
                  group share devices; None: shares with nobody), the interactive requests this
                  gateway has in flight on it, and whether it answers.
  RoutingSettings gpu_arbitration ("freeze" turns this on) and the freeze_* timers.
  Arbitration     one Hold per batch replica; immutable, pass the returned one to the next call.

The rule, per batch replica B with a device group:
  freeze   as soon as interactive work is in flight on another replica of B's group;
  settle   resume once that work has been gone for freeze_settle_s (a user reading an answer does
           not get a batch step in the way of the next turn, and a burst does not flap the engine);
  bound    a freeze lasts at most freeze_max_s, then B runs for at least freeze_release_s whatever
           interactive does (a forced resume): B gets at least release / (max + release) of the
           wall time under any interactive load;
  spill    a B that has interactive work in flight itself (spill-over) is never frozen: it is
           serving the class the freeze protects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.contract.config import RoutingSettings, TrafficClass
from gateway.contract.timers import HoldTimers, hold_next_change, hold_step


@dataclass(frozen=True, slots=True)
class Hold:
    """One batch replica's freeze: whether it is frozen, since when, and why it is not."""

    holding: bool = False
    """Frozen (the engine is to be paused)."""
    since: float = 0.0
    """When the current phase (frozen, or running) began, on the caller's clock."""
    forced: bool = False
    """The current running phase was forced by the starvation bound: it lasts freeze_release_s."""
    interactive_idle_since: float | None = None
    """When interactive work beside this replica last went to none; None while there is some."""


@dataclass(frozen=True, slots=True)
class ReplicaWork:
    """What arbitration needs to know of one replica now."""

    name: str
    traffic_class: TrafficClass
    device_group: str | None = None
    interactive: int = 0
    """Interactive requests in flight on this replica (on a batch replica: spill-over)."""


@dataclass(frozen=True, slots=True)
class Arbitration:
    """Every batch replica's Hold, by name (replicas never seen are running)."""

    holds: tuple[tuple[str, Hold], ...] = ()

    def of(self, replica: str) -> Hold:
        return dict(self.holds).get(replica, Hold())

    @property
    def frozen(self) -> frozenset[str]:
        return frozenset(name for name, hold in self.holds if hold.holding)

    def next_change(self, settings: RoutingSettings) -> float | None:
        """The earliest time a hold changes by itself: call `arbitrate` again then."""
        timers = freeze_timers(settings)
        changes = [t for _, hold in self.holds if (t := hold_next_change(hold, timers)) is not None]
        return min(changes, default=None)


def freeze_timers(settings: RoutingSettings) -> HoldTimers:
    return HoldTimers(settings.arbitration.settle_s, settings.arbitration.max_s, settings.arbitration.release_s)


def arbitrate(
    replicas: Sequence[ReplicaWork], now: float, settings: RoutingSettings, state: Arbitration
) -> Arbitration:
    """The next arbitration state: which batch replicas are frozen now (see the module's rule).
    Off (gpu_arbitration other than "freeze") every replica runs."""
    if settings.arbitration.mode != "freeze":
        return Arbitration()
    timers = freeze_timers(settings)
    holds: list[tuple[str, Hold]] = []
    for replica in replicas:
        if replica.traffic_class != "batch" or replica.device_group is None:
            continue
        hold = state.of(replica.name)
        if replica.interactive > 0:  # spill-over: it serves interactive work itself, never frozen
            hold = Hold(since=now if hold.holding else hold.since)
        else:
            beside = sum(
                r.interactive for r in replicas if r.device_group == replica.device_group and r.name != replica.name
            )
            hold = hold_step(beside > 0, now, timers, hold)
        holds.append((replica.name, hold))
    return Arbitration(tuple(holds))


def frozen_share(timers: HoldTimers) -> float:
    """The largest share of wall time a batch replica can spend frozen under a steady interactive
    load: the starvation bound's max / (max + release)."""
    return timers.max_s / (timers.max_s + timers.release_s)
