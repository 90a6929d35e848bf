"""The handle data path's engine deployment: ray.serve.llm's LLMServer with a pause lease.

LLMServer.pause/resume call vLLM's pause_generation/resume_generation with no lease: a gateway
that died between the two would leave the engine frozen. The same PauseLease as the http path's
middleware (deploy.engine_lease) holds the pause here, on the replica, and the gateway's
HandleBackend calls these methods through the deployment handle.
"""

from __future__ import annotations

from typing import Any

from ray.serve.llm.deployment import LLMServer

from deploy.engine_lease import PauseLease


class LeasedLLMServer(LLMServer):
    """LLMServer plus tandem_pause / tandem_resume / tandem_pause_status (gateway.engine_pause's commands)."""

    def _pause_lease(self) -> PauseLease:
        lease: PauseLease | None = getattr(self, "_tandem_lease", None)
        if lease is None:

            async def pause() -> None:
                await self.pause(mode="keep", clear_cache=False)

            lease = self._tandem_lease = PauseLease(pause, self.resume)
        return lease

    async def tandem_pause(self, lease_s: float, seq: int) -> dict[str, Any]:
        return (await self._pause_lease().pause(lease_s, seq)).model_dump()

    async def tandem_resume(self, seq: int) -> dict[str, Any]:
        return (await self._pause_lease().resume(seq)).model_dump()

    async def tandem_pause_status(self) -> dict[str, Any]:
        return self._pause_lease().status().model_dump()
