"""A hold's timers, pure: the hysteresis and starvation bound shared by batch yielding
(gateway.contract.yielding) and freezing (gateway.contract.freezing). Each state names when it
changes by itself (`hold_next_change`); the gateway arms one timer for that (gateway.timers), the
simulation an event.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class HoldTimers:
    """The three timers of a hold (a batch yield or a freeze), in seconds."""

    settle_s: float
    max_s: float
    release_s: float


class _HoldLike(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]  # a dataclass: dataclasses.replace() makes the next state

    @property
    def holding(self) -> bool: ...
    @property
    def since(self) -> float: ...
    @property
    def forced(self) -> bool: ...
    @property
    def interactive_idle_since(self) -> float | None: ...


H = TypeVar("H", bound=_HoldLike)


def hold_step(active: bool, now: float, timers: HoldTimers, state: H) -> H:
    """The next state of a hold, given whether interactive work is active now: hold while it is,
    end the hold once it has been idle for settle_s, and cut a hold at max_s, after which the hold
    stays off for release_s (forced). Shared by batch yielding and freezing (the same hysteresis
    and starvation bound, applied to admissions or to the engine)."""
    idle_since = None if active else (now if state.interactive_idle_since is None else state.interactive_idle_since)
    if state.holding:
        if now >= state.since + timers.max_s:  # the sums hold_next_change() names, exactly
            return replace(state, holding=False, since=now, forced=True, interactive_idle_since=idle_since)
        if idle_since is not None and now >= idle_since + timers.settle_s:
            return replace(state, holding=False, since=now, forced=False, interactive_idle_since=idle_since)
        return replace(state, interactive_idle_since=idle_since)
    if state.forced and now < state.since + timers.release_s:
        return replace(state, interactive_idle_since=idle_since)
    if active:
        return replace(state, holding=True, since=now, forced=False, interactive_idle_since=None)
    return replace(state, forced=False, interactive_idle_since=idle_since)


def hold_next_change(state: _HoldLike, timers: HoldTimers) -> float | None:
    """When a hold changes by itself unless traffic changes it first (the caller's timer); None: never."""
    if state.holding:
        end = state.since + timers.max_s
        if state.interactive_idle_since is not None:
            end = min(end, state.interactive_idle_since + timers.settle_s)
        return end
    return state.since + timers.release_s if state.forced else None
