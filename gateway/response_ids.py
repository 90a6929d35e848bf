"""Which replica stored which Responses API response: a bounded, expiring map from response id to
replica name.

vLLM keeps a stored response (and the messages behind it) in the memory of the one engine that
made it, so a follow-up naming it (`previous_response_id`, GET /v1/responses/{id}, cancel) can
only be answered by that replica. The gateway remembers where each stored response went; an id it
does not know (never seen, evicted, expired) is answered with the OpenAI 404 rather than sent to
a replica that cannot know it either. Bounded by count (least recently used first out) and by age
since last use, because vLLM's own store is neither and the gateway must not grow without end.

The router keeps the replica that served each conversation's last turn in one too
(gateway.router, for the conversation-affinity policy): the same bounded, expiring key -> replica map.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class ResponseIdMap:
    """Response id -> replica name, at most `max_ids` entries, each forgotten `ttl_s` after its
    last use. `clock` is injectable for tests (monotonic seconds)."""

    def __init__(self, max_ids: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_ids < 1 or ttl_s <= 0:
            raise ValueError("max_ids must be at least 1 and ttl_s positive")
        self._max_ids = max_ids
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()  # id -> (replica, last use)

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, response_id: str, replica: str) -> None:
        now = self._clock()
        self._entries[response_id] = (replica, now)
        self._entries.move_to_end(response_id)
        self._expire(now)
        while len(self._entries) > self._max_ids:
            self._entries.popitem(last=False)

    def replica_of(self, response_id: str) -> str | None:
        """The replica holding `response_id`, or None when unknown or expired; a hit counts as a use."""
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(response_id)
        if entry is None:
            return None
        self._entries[response_id] = (entry[0], now)
        self._entries.move_to_end(response_id)
        return entry[0]

    def _expire(self, now: float) -> None:
        """Drop entries unused for ttl_s: they sit at the front, the order being last use."""
        horizon = now - self._ttl_s
        while self._entries:
            _, (_, used) = next(iter(self._entries.items()))
            if used > horizon:
                return
            self._entries.popitem(last=False)
