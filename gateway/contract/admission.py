"""Admission, pure: per-class concurrency with a bounded queue. The gateway's class gates
(gateway.admission) ask it at each arrival and departure; the traffic simulation asks it too.

  ClassLoad(in_flight, queued) + ClassLimits -> "run" | "queue" | "reject".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.contract.config import ClassLimits


@dataclass(frozen=True, slots=True)
class ClassLoad:
    """One traffic class's requests in the gateway: admitted and running, and waiting to be."""

    in_flight: int = 0
    queued: int = 0


Admission = Literal["run", "queue", "reject"]


def admit(load: ClassLoad, limits: ClassLimits) -> Admission:
    """Run now if the class is under its concurrency limit, else queue while the queue has room."""
    if load.in_flight < limits.max_concurrency:
        return "run"
    if load.queued < limits.max_queue:
        return "queue"
    return "reject"
