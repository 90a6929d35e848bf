"""The wire contract of pausing an engine under a lease: what the gateway sends, what the replica answers.

The gateway freezes a batch engine (gateway.freezing) by asking the replica to pause it for a
lease, and renews the lease while the freeze lasts; the replica (deploy/engine_lease.py: a
middleware inside vLLM's own server) resumes the engine by itself once a lease runs out, so a gateway that dies or loses a resume never
leaves an engine frozen. Every command carries a sequence number that only grows (the gateway
starts it from the wall clock in nanoseconds, so a restarted gateway's commands are newer); the
replica ignores a command older than one it already applied, so a late pause can never undo a
later resume.

HTTP: POST {root}/tandem/pause?lease_s=L&seq=N, POST {root}/tandem/resume?seq=N, GET
{root}/tandem/pause; each answers a PauseStatus as JSON (400 with an error for bad parameters).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PAUSE_PATH = "/tandem/pause"
RESUME_PATH = "/tandem/resume"
MAX_LEASE_S = 600.0
"""A lease longer than this is refused: a typo must not freeze an engine for hours."""
ENGINE_CONTROL_TIMEOUT_S = 30.0
"""A pause answers once the engine's step in progress has ended: seconds for a long prefill."""


class PauseStatus(BaseModel):
    """The replica's pause state after a command (or when asked)."""

    model_config = ConfigDict(extra="forbid")

    paused: bool
    seq: int = Field(description="The newest command applied; older ones are ignored.")
    lease_left_s: float | None = Field(None, description="Seconds until the engine resumes by itself; None: running.")
    lease_expiries: int = Field(0, description="Times the engine resumed by itself because a lease ran out.")
    applied: bool = Field(True, description="False when this command was older than one already applied.")


class EngineControlFailed(Exception):
    """A pause or resume the replica refused or cannot do (see gateway.backends.base.Backend.pause)."""
