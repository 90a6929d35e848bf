"""The usage ledger: requests, prompt and completion tokens and errors, per key name, model and
traffic class, kept by the hour in the gateway's store (gateway.state_store).

Requests are counted in memory (a dict update, no I/O on the request path) and written to SQLite
every `interval_s` from a worker thread, and once more at shutdown. A gateway killed outright
loses at most the last interval's counts; `report` writes what is pending before it reads, so
what it answers includes every request that has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from gateway.state_store import StateStore, UsageRow

log = logging.getLogger("tandem.gateway.usage")

FLUSH_INTERVAL_S = 5.0


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0


_Group = tuple[int, str, str, str]  # hour, key name, model, traffic class


class UsageLedger:
    def __init__(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.store: StateStore | None = None
        self._pending: dict[_Group, _Counts] = {}
        self._writer: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    def record(self, key: str, model: str, traffic_class: str, prompt: int, completion: int, error: bool) -> None:
        """Count one finished request (on the event loop)."""
        group = (int(time.time()) // 3600 * 3600, key, model, traffic_class)
        counts = self._pending.get(group)
        if counts is None:
            counts = self._pending[group] = _Counts()
        counts.requests += 1
        counts.prompt_tokens += prompt
        counts.completion_tokens += completion
        counts.errors += int(error)

    def start(self, store: StateStore) -> None:
        self.store = store
        self._writer = asyncio.create_task(self._write_forever())

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.flush()

    async def _write_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception:  # a full disk or a locked database: keep counting, try again next time
                log.exception("could not write the usage ledger; its counts are kept for the next try")

    async def flush(self) -> None:
        """Write the pending counts; on failure they are put back, to be written next time."""
        if self.store is None:
            return
        async with self._write_lock:
            pending, self._pending = self._pending, {}
            if not pending:
                return
            rows = [
                UsageRow(key, model, cls, c.requests, c.prompt_tokens, c.completion_tokens, c.errors, hour)
                for (hour, key, model, cls), c in pending.items()
            ]
            try:
                await asyncio.to_thread(self.store.add_usage, rows)
            except BaseException:
                for group, counts in pending.items():
                    merged = self._pending.setdefault(group, _Counts())
                    merged.requests += counts.requests
                    merged.prompt_tokens += counts.prompt_tokens
                    merged.completion_tokens += counts.completion_tokens
                    merged.errors += counts.errors
                raise

    async def report(self, since: float, until: float | None = None) -> list[UsageRow]:
        """Totals per key, model and class since `since` (unix time), every ended request included."""
        if self.store is None:
            return []
        await self.flush()
        return await asyncio.to_thread(self.store.usage, since, until)
