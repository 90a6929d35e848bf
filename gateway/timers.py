"""A re-armable timer on the event loop: the one pending re-evaluation of a hold (batch yielding,
GPU arbitration), which their pure state names with `next_change`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ReevaluationTimer:
    """At most one pending call of `callback`; arming it again replaces the pending one."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def arm(self, loop: asyncio.AbstractEventLoop, when: float | None) -> None:
        """Call back at loop time `when` (None: never), instead of any call pending."""
        self.cancel()
        if when is not None:
            self._handle = loop.call_at(when, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._callback()
