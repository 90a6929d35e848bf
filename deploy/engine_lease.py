"""The replica's side of a freeze: pause the engine for a lease, resume it when the lease runs out.

vLLM 0.32 can freeze an engine in place: `AsyncLLM.pause_generation(mode="keep")` stops the
scheduler after the step in progress (the engine core handles the command between steps), keeps
every request and its KV cache, queues new requests, and still handles aborts; `resume_generation()`
goes on where it stopped. vLLM's own `/pause` endpoint exists only with VLLM_SERVER_DEV_MODE, which
also opens its RPC and cache-reset endpoints, and it has no lease: a gateway that died between a
pause and a resume would leave the engine frozen for good. So Tandem adds its own pair of
endpoints (gateway.engine_pause) with a lease held here, next to the engine:

`PauseLeaseMiddleware`, an ASGI middleware that vLLM's server loads with `--middleware
deploy.engine_lease.PauseLeaseMiddleware` (deploy/engine_server.py passes it), reaches the engine
through the server's `app.state.engine_client`. This module imports neither Ray nor vLLM: it is
loaded inside vLLM's server process.

`clear_cache=False`: the frozen requests' KV cache and the prefix cache are what make a resume
cheap; vLLM ignores clear_cache for mode "keep" anyway.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from gateway.engine_pause import MAX_LEASE_S, PAUSE_PATH, RESUME_PATH, PauseStatus
from gateway.engines.vllm import VLLM
from gateway.errors import error_body

log = logging.getLogger("tandem.engine")

EngineCall = Callable[[], Awaitable[None]]


class PauseLease:
    """One engine's pause, held for a lease. Commands are serialised (a lock) and ordered (seq)."""

    def __init__(self, pause: EngineCall, resume: EngineCall, clock: Callable[[], float] = time.monotonic) -> None:
        self._pause = pause
        self._resume = resume
        self._clock = clock
        self._lock = asyncio.Lock()
        self.paused = False
        self.seq = -1
        self.expires_at = 0.0
        self.expiries = 0
        self._watchdog: asyncio.Task[None] | None = None

    def status(self, applied: bool = True) -> PauseStatus:
        left = max(self.expires_at - self._clock(), 0.0) if self.paused else None
        return PauseStatus(
            paused=self.paused, seq=self.seq, lease_left_s=left, lease_expiries=self.expiries, applied=applied
        )

    async def pause(self, lease_s: float, seq: int) -> PauseStatus:
        """Pause (or, already paused, renew the lease) unless a newer command was applied."""
        if not (0 < lease_s <= MAX_LEASE_S) or not math.isfinite(lease_s):
            raise ValueError(f"lease_s must be in (0, {MAX_LEASE_S:g}], got {lease_s}")
        async with self._lock:
            if seq <= self.seq:
                return self.status(applied=False)
            self.seq = seq
            if not self.paused:
                await self._pause()
                self.paused = True
            self.expires_at = self._clock() + lease_s
            self._watch_lease()  # a new watch: the lease may be shorter than the one watched before
            return self.status()

    async def resume(self, seq: int) -> PauseStatus:
        """Resume unless a newer command was applied; resuming a running engine changes nothing."""
        async with self._lock:
            if seq <= self.seq:
                return self.status(applied=False)
            self.seq = seq
            await self._resume_locked()
            if self._watchdog is not None:
                self._watchdog.cancel()
            return self.status()

    async def _resume_locked(self) -> None:
        if self.paused:
            await self._resume()
            self.paused = False

    def _watch_lease(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.create_task(self._watch(), name="pause-lease")

    async def _watch(self) -> None:
        """Resume the engine once the lease runs out without a renewal."""
        while True:
            await asyncio.sleep(max(self.expires_at - self._clock(), 0.01))
            async with self._lock:
                if not self.paused:
                    return
                if self._clock() >= self.expires_at:
                    log.warning("pause lease ran out (seq %d): resuming the engine", self.seq)
                    try:
                        await self._resume_locked()
                    except Exception:  # keep watching: the next round tries again
                        log.exception("resuming after the lease failed")
                        continue
                    self.expiries += 1
                    return


def _json(status: int, body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class PauseLeaseMiddleware:
    """ASGI middleware for vLLM's OpenAI server: serves gateway.engine_pause's endpoints with a
    PauseLease over the server's engine client; every other request passes through untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lease: PauseLease | None = None

    def _lease_for(self, engine_client: Any) -> PauseLease:
        if self._lease is None:
            self._lease = PauseLease(*VLLM.pause_controls(engine_client))
        return self._lease

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in (PAUSE_PATH, RESUME_PATH):
            await self.app(scope, receive, send)
            return
        lease = self._lease_for(scope["app"].state.engine_client)
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        status, body = 200, b""
        try:
            if scope["method"] == "GET" and path == PAUSE_PATH:
                result = lease.status()
            elif scope["method"] != "POST":
                raise ValueError(f"method {scope['method']} not allowed on {path}")
            elif path == PAUSE_PATH:
                result = await lease.pause(float(query["lease_s"]), int(query["seq"]))
            else:
                result = await lease.resume(int(query["seq"]))
            body = result.model_dump_json().encode()
        except (KeyError, ValueError) as exc:
            missing = f"missing query parameter {exc}" if isinstance(exc, KeyError) else str(exc)
            status, body = 400, error_body(400, missing)
        start, message = _json(status, body)
        await send(start)
        await send(message)
