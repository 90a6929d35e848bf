"""An HTTP backend whose server can move: the replica behind it restarts at a new address.

Why: each engine is a Serve replica that starts vLLM's server on a free port. When Serve restarts
an engine (its process was killed, or it stopped answering health checks, e.g. after SIGSTOP for
longer than Serve's health-check budget), the new engine listens on another port; a URL looked up
once would keep the gateway probing the dead one, and the replica would never take traffic again.
This backend asks again where its replica is (a `resolve` callable: the Serve handle's `url()` in
deploy.gateway_server) whenever a probe fails, and moves there when the answer changed; the load
poller then finds it answering and routes to it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.backends.base import EngineLoad
from gateway.backends.http import HttpBackend

log = logging.getLogger("tandem.gateway")

# A restarting replica answers its handle once it is up again; a look-up waits that long at most
# (a 2-core machine restarts the demo engine in one to three minutes) and is then tried afresh.
RESOLVE_TIMEOUT_S = 60.0


class RelocatingHttpBackend(HttpBackend):
    """`HttpBackend` plus `resolve()`, asked for the current base URL after a failed probe."""

    def __init__(
        self,
        base_url: str,
        resolve: Callable[[], Awaitable[str]],
        *,
        resolve_timeout_s: float = RESOLVE_TIMEOUT_S,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self._resolve = resolve
        self._resolve_timeout_s = resolve_timeout_s
        self._lookup: asyncio.Task[None] | None = None

    async def engine_load(self) -> EngineLoad:
        try:
            return await super().engine_load()
        except BaseException:
            self._look_up()
            raise

    async def ready(self) -> bool:
        answered = await super().ready()
        if not answered:
            self._look_up()
        return answered

    def _look_up(self) -> None:
        """Start one look-up in the background (the probes must not wait on it)."""
        if self._lookup is None or self._lookup.done():
            self._lookup = asyncio.get_running_loop().create_task(self._relocate())

    async def _relocate(self) -> None:
        try:
            async with asyncio.timeout(self._resolve_timeout_s):
                url = await self._resolve()
        except Exception as exc:  # not up yet, or the handle failed: the next failed probe asks again
            log.info("replica at %s: where it is now is not known yet (%s)", self.base_url, type(exc).__name__)
            return
        if url.rstrip("/") != self.base_url:
            log.warning("replica moved from %s to %s (restarted); following it", self.base_url, url)
            await self.retarget(url)

    async def close(self) -> None:
        if self._lookup is not None:
            self._lookup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lookup
        await super().close()
