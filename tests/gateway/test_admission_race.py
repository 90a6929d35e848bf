"""A queued request given up (its queue deadline passed, or its client left) at the moment a slot
frees: grant() drops the cancelled waiter from the queue first, and the request must still end
with its own answer (a 429, or the cancel), not a 500 from the queue's bookkeeping. Found by the
soak in benchmarks/reliability.py (60 answers of 500 before the fix)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.admission import ClassGate
from gateway.contract.config import ClassLimits


def test_a_waiter_cancelled_as_a_slot_frees_leaves_the_gate_consistent() -> None:
    async def scenario() -> None:
        gate = ClassGate("interactive", lambda: ClassLimits(max_concurrency=1, max_queue=4, queue_timeout_s=60))
        holder = gate.slot()
        await holder.__aenter__()

        async def queued() -> None:
            async with gate.slot():
                pass

        waiting = asyncio.create_task(queued())
        while gate.queued == 0:
            await asyncio.sleep(0)
        waiting.cancel()  # cancels its waiter future at once...
        await holder.__aexit__(None, None, None)  # ...and grant() drops that waiter before the task runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (gate.in_flight, gate.queued) == (0, 0)
        async with gate.slot():  # the gate still admits
            assert gate.in_flight == 1

    asyncio.run(scenario())
