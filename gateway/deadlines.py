"""The deadlines of one request once it has a class: why they exist and how they are measured.

Before these, nothing timed out once a replica had sent its headers: a stalled replica (a stopped
process, a wedged engine) held its class slot and the replica's in-flight count forever, and a
streamed request waited for its first token without bound. Each deadline ends the request with an
OpenAI error (an error event inside a started stream), after which the proxy closes the upstream
answer (the engine aborts the generation) and frees the slot and the in-flight count.

- `first_token`: from sending to a replica until a stream's first event (or, not streamed, the
  answer's headers, which vLLM sends with the whole answer: the total deadline bounds those too).
- `idle`: the longest silence between two events of a started stream.
- `total`: from the request's arrival to its last byte, queue and relay to the client included.
- The fourth, the wait for a slot in the class queue, is `gateway.admission.ClassGate`'s.

All are absolute times on the event loop's clock, for `asyncio.timeout_at`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from gateway.contract.config import ClassLimits

DeadlineKind = Literal["queue", "first_token", "idle", "total"]
DEADLINE_STATUS = 504  # the gateway gave up waiting on the replica: Gateway Timeout


class DeadlineExceeded(Exception):
    """A deadline fired; `kind` names which, the message says what the client waited for."""

    def __init__(self, kind: DeadlineKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Deadlines:
    """One request's deadlines, fixed when it is classified (a later routing change applies to
    the requests that arrive after it)."""

    total_at: float
    first_token_s: float
    idle_s: float
    total_s: float

    @classmethod
    def start(cls, limits: ClassLimits, idle_s: float, elapsed_s: float = 0.0) -> Deadlines:
        """Deadlines for a request that arrived `elapsed_s` ago (its body was being read)."""
        now = asyncio.get_running_loop().time()
        return cls(
            now + limits.total_timeout_s - elapsed_s, limits.first_token_timeout_s, idle_s, limits.total_timeout_s
        )

    def first_token(self) -> tuple[float, DeadlineKind]:
        """When to give up on the first event (or the headers) of a replica sent to just now."""
        first_at = asyncio.get_running_loop().time() + self.first_token_s
        return (first_at, "first_token") if first_at < self.total_at else (self.total_at, "total")

    def next_event(self) -> tuple[float, DeadlineKind]:
        """When to give up on the next event of a started stream."""
        idle_at = asyncio.get_running_loop().time() + self.idle_s
        return (idle_at, "idle") if idle_at < self.total_at else (self.total_at, "total")

    def exceeded(self, kind: DeadlineKind, replica: str) -> DeadlineExceeded:
        """The error for a deadline that fired while waiting on `replica` (built only then)."""
        messages = {
            "first_token": f"replica {replica} sent no first token within {self.first_token_s:g} s",
            "idle": f"replica {replica} sent nothing for {self.idle_s:g} s",
            "total": f"the request ran past its total deadline of {self.total_s:g} s",
        }
        return DeadlineExceeded(kind, messages.get(kind, f"the {kind} deadline passed"))
