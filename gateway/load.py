"""What the gateway knows about each replica's load: its own in-flight counts (exact, updated on
every request) and the engine's running/waiting queue (polled from the engine's metrics page
in the background, read by its adapter). One fixed-size record per replica, so memory does not grow with traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.backends.base import Backend
from gateway.contract.config import ReplicaEndpoint, TrafficClass
from gateway.contract.policy import ReplicaLoad
from gateway.engines import engine_adapter

log = logging.getLogger("tandem.gateway")


@dataclass
class _ReplicaStats:
    endpoint: ReplicaEndpoint
    accepts_priority: bool  # asked of the engine's adapter once: the snapshot is taken per request
    in_flight: int = 0
    interactive_in_flight: int = 0
    running: int = 0
    waiting: int = 0
    healthy: bool = True
    probes_missed: int = 0
    polled_at: float = 0.0


class LoadBoard:
    """Per-replica load, read as an immutable snapshot by the routing policy."""

    def __init__(self, replicas: list[ReplicaEndpoint], probe_misses_to_mark_down: int) -> None:
        self._stats = {
            r.name: _ReplicaStats(r, engine_adapter(r.engine).accepts_request_priority(r.scheduling_policy))
            for r in replicas
        }
        self._misses_to_mark_down = probe_misses_to_mark_down
        self._listeners: list[Callable[[], None]] = []
        self._back: asyncio.Event | None = None  # set when a replica is found answering again

    def snapshot(self, exclude: frozenset[str] = frozenset()) -> list[ReplicaLoad]:
        return [
            ReplicaLoad(
                name=name,
                traffic_class=s.endpoint.traffic_class,
                in_flight=s.in_flight,
                running=s.running,
                waiting=s.waiting,
                max_num_seqs=s.endpoint.max_num_seqs,
                healthy=s.healthy and name not in exclude,
                accepts_priority=s.accepts_priority,
            )
            for name, s in self._stats.items()
        ]

    @contextmanager
    def tracking(self, replica: str, traffic_class: TrafficClass | None = None) -> Iterator[None]:
        """Count one request in flight on `replica` for the life of the block; an interactive one
        is also counted apart, and the listeners hear of both changes (GPU arbitration)."""
        stats = self._stats[replica]
        interactive = traffic_class == "interactive"
        stats.in_flight += 1
        stats.interactive_in_flight += interactive
        self._changed()
        try:
            yield
        finally:
            stats.in_flight -= 1
            stats.interactive_in_flight -= interactive
            self._changed()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a request starts or ends on a replica (it must not block)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def interactive_in_flight(self, replica: str) -> int:
        return self._stats[replica].interactive_in_flight

    def mark_down(self, replica: str) -> None:
        """A replica that refused a connection takes no traffic until a poll finds it well."""
        self._stats[replica].healthy = False

    def in_flight(self, replica: str) -> int:
        return self._stats[replica].in_flight

    async def wait_for_a_replica(self, deadline_at: float) -> bool:
        """While every replica is out of routing, wait until a poll finds one answering again or
        the loop's clock reaches `deadline_at`. True only if one came back while waiting (False if
        one was in routing already: nothing to wait for). Batch work waits here instead of failing:
        on a loaded machine a generating engine answers its load probe seconds late, and a few
        misses in a row can take every busy engine out of routing at once."""
        if any(s.healthy for s in self._stats.values()):
            return False
        while not any(s.healthy for s in self._stats.values()):
            if self._back is None or self._back.is_set():
                self._back = asyncio.Event()
            try:
                async with asyncio.timeout_at(deadline_at):
                    await self._back.wait()
            except TimeoutError:
                return False
        return True

    async def poll_once(self, backends: Mapping[str, Backend]) -> None:
        await asyncio.gather(*(self._poll(name, backends[name]) for name in self._stats))

    async def _poll(self, name: str, backend: Backend) -> None:
        """Read one replica's queue. A probe that is refused or answered badly takes the replica out
        of routing at once; one that times out only after `probe_misses_to_mark_down` in a row: a
        CPU engine that is generating answers its own server seconds late (docs/reliability.md), and
        taking a busy but working replica out of routing on one slow answer turned traffic away."""
        stats = self._stats[name]
        try:
            load = await backend.engine_load()
        except Exception as exc:  # a failure to answer means: do not send it work, now or soon
            stats.probes_missed += 1
            slow = isinstance(exc, TimeoutError) and stats.probes_missed < self._misses_to_mark_down
            if stats.healthy and not slow:
                log.warning(
                    "replica %s stopped answering its load probe (%d in a row): %s",
                    name,
                    stats.probes_missed,
                    type(exc).__name__,
                )
                stats.healthy = False
            return
        if not stats.healthy:
            log.info("replica %s is answering again", name)
            if self._back is not None:
                self._back.set()
        stats.healthy = True
        stats.probes_missed = 0
        stats.polled_at = time.monotonic()
        if load is not None:
            stats.running, stats.waiting = load.running, load.waiting

    async def poll_forever(self, backends: Mapping[str, Backend], interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.poll_once(backends)
