"""A re-armable timer on the event loop: the one pending re-evaluation of a hold (batch yielding,
GPU arbitration), which their pure state names with `next_change`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ReevaluationTimer:
    """At most one pending call of `callback`; arming it again replaces the pending one.

    The callback reads the clock with `now`, not `loop.time()`: uvloop rounds a timer to whole
    milliseconds, so it can fire at a loop time a rounding error *before* the time it was armed
    for (`51190.558` for `51190.558000000005`). A hold evaluated at that time sees its settle or
    release time not yet reached, changes nothing, arms nothing, and would stay on until traffic
    happened to change it; `now` is never earlier than the due time of the timer being fired."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._firing_due: float | None = None

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def now(self, loop: asyncio.AbstractEventLoop) -> float:
        """The loop's time, or the due time of the timer firing now if that is later."""
        if self._firing_due is None:
            return loop.time()
        return max(loop.time(), self._firing_due)

    def arm(self, loop: asyncio.AbstractEventLoop, when: float | None) -> None:
        """Call back at loop time `when` (None: never), instead of any call pending."""
        self.cancel()
        if when is not None:
            self._handle = loop.call_at(when, self._fire, when)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self, due: float) -> None:
        self._handle = None
        self._firing_due = due
        try:
            self._callback()
        finally:
            self._firing_due = None
