"""A Serve deployment that runs vLLM's own OpenAI server for one replica of a plan.

Ray places the replica (its placement group reserves one bundle per worker, spread over the
nodes as the plan says), and inside that replica vLLM's OpenAI server runs as a child process.
The gateway then speaks HTTP straight to it: one hop, no Ray message per token, and every
endpoint vLLM serves (docs/architecture.md, the data path).

On GPUs a replica of several workers runs vLLM's Ray executor inside the replica's own placement
group, the way Ray Serve LLM hands its group to vLLM (`parallel_config.placement_group`): the
child process is told the group's id (deploy.engine_process attaches it to vLLM's config), and
each worker actor takes its bundle's GPU share (`VLLM_RAY_PER_WORKER_GPUS`), so a TP=2 or PP=2
replica spans the two boxes and two replicas share each GPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from deploy.engine_process import PLACEMENT_GROUP_ENV
from deploy.placement import executor as placement_executor
from deploy.plan import Replica
from deploy.ports import free_port
from gateway.engines import EngineAdapter, ServerLaunch
from gateway.engines.base import Executor

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("tandem.engine")

# How long Serve's health check waits for the engine's /health (under Serve's own bound of 30 s).
# A generating CPU engine serves its HTTP server seconds late, and a shorter wait made Serve restart
# working engines, losing what they held (docs/reliability.md, measured by benchmarks/engine_stall.py).
HEALTH_TIMEOUT_S = 20.0
# An unanswered /health fails the check only once the server has answered none for this long: a
# generating CPU engine can starve its own server for minutes, and no cheaper signal (CPU time, run
# queue time) tells a starved server from a stopped one (docs/reliability.md). A wedged or stopped
# server is restarted after this long plus Serve's three failed checks.
UNANSWERED_LIMIT_S = float(os.environ.get("TANDEM_ENGINE_UNANSWERED_LIMIT_S", "300"))


# The ASGI middleware an engine's server loads to serve the pause lease's endpoints.
PAUSE_MIDDLEWARE = "deploy.engine_lease.PauseLeaseMiddleware"

START_TIMEOUT_S = float(os.environ.get("TANDEM_ENGINE_START_TIMEOUT_S", "900"))
STOP_GRACE_S = 15.0


def engine_env(
    replica: Replica, engine: EngineAdapter, executor: Executor, placement_group_id: str | None, ray_address: str
) -> dict[str, str]:
    """What the engine's process needs besides the replica's own environment. Under the Ray
    executor: the placement group to put the workers in, the cluster to find it on, and what the
    engine itself needs there (vLLM: each worker's GPU share)."""
    env = dict(replica.env)
    if executor == "ray":
        if placement_group_id is None:
            raise RuntimeError(f"engine {replica.name!r}: the Ray executor needs the replica's placement group")
        env[PLACEMENT_GROUP_ENV] = placement_group_id
        env["RAY_ADDRESS"] = ray_address
    env.update(engine.executor_env(executor, replica.placement.gpus_per_worker))
    return env


def engine_launch(
    model_source: str, served_name: str, replica: Replica, accelerator: str | None, host: str, port: int
) -> tuple[list[str], dict[str, str]]:
    """The engine server's arguments and the environment (over the replica actor's own) for a
    replica's engine, from inside that replica: its placement group and the cluster's address are
    Ray's runtime context there. The replica's engine adapter spells both."""
    import ray

    engine = replica.adapter
    executor = placement_executor(replica, accelerator)
    group = ray.util.get_current_placement_group()
    launch = ServerLaunch(
        model_source=model_source,
        served_name=served_name,
        host=host,
        port=port,
        tensor_parallel_size=replica.tensor_parallel_size,
        pipeline_parallel_size=replica.pipeline_parallel_size,
        executor=executor,
        engine_kwargs=replica.engine.engine_kwargs(),
        # The pause lease (gateway.engine_pause): the gateway freezes a batch engine with it.
        pause_middleware=PAUSE_MIDDLEWARE if engine.supports_pause else None,
    )
    env = engine_env(
        replica, engine, executor, group.id.hex() if group else None, ray.get_runtime_context().gcs_address
    )
    return engine.server_args(launch), env


def _node_address(node_id: str) -> str:
    """The address this node registered with Ray (127.0.0.1 for a local head started by Tandem),
    rather than whatever interface the host would route out of."""
    import ray

    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)


class EngineServer:
    """One replica: starts vLLM's OpenAI server, reports its URL, and is healthy while it is.

    Serve calls `check_health` periodically; when it raises, Serve restarts the replica, and
    the child process goes with the old one (see deploy.engine_process).
    """

    _answered_at: float
    """When /health last answered 200 (time.monotonic); first set as wait_ready sees the engine up."""

    # Serve awaits an async constructor (a replica is ready once it returns); Python's type rules know no such thing.
    async def __init__(  # type: ignore[misc]
        self,
        model_source: str,
        served_name: str,
        replica: dict[str, Any],
        log_dir: str,
        accelerator: str | None,
        start_after: DeploymentHandle | None = None,
    ) -> None:
        import ray

        self.replica = Replica.model_validate(replica)
        if start_after is not None:
            # A co-resident engine that sizes its KV cache by profiling must not profile while
            # another engine on the same GPU loads: each would count the other's memory as its own.
            logger.info("engine %r: waiting for the engine before it on the same GPUs", self.replica.name)
            await start_after.url.remote()
        self.host = _node_address(ray.get_runtime_context().get_node_id())
        self.port = free_port(self.host)
        self.log_path = Path(log_dir) / f"engine-{self.replica.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        server_args, engine_vars = engine_launch(
            model_source, served_name, self.replica, accelerator, self.host, self.port
        )
        command = [
            sys.executable, "-m", "deploy.engine_process", "--parent-pid", str(os.getpid()),
            "--engine", self.engine.name, "--", *server_args
        ]  # fmt: skip
        env = {**os.environ, **engine_vars}
        with self.log_path.open("ab") as log:
            # Its own session, so a Ctrl-C meant for `gateway up` reaches it only through us.
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._session: aiohttp.ClientSession | None = None
        # Serve reports the replica as running once __init__ returns, so it returns when the
        # engine answers: `serve.run` then means "ready to serve".
        await self.wait_ready()

    @property
    def engine(self) -> EngineAdapter:
        return self.replica.adapter

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def wait_ready(self) -> str:
        """Wait until vLLM answers /health; return its OpenAI base URL. Raises with the log's tail."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"engine {self.replica.name!r} exited with code {self._process.returncode} while "
                    f"starting; last lines of {self.log_path}:\n{self._log_tail()}"
                )
            if await self._health_status() == 200:
                return self.base_url
            await asyncio.sleep(0.5)
        raise TimeoutError(f"engine {self.replica.name!r} not ready after {START_TIMEOUT_S:.0f} s; see {self.log_path}")

    async def url(self) -> str:
        """The replica's OpenAI base URL."""
        return self.base_url

    async def check_health(self) -> None:
        """Serve's liveness check: the server process is there and has answered /health within
        `UNANSWERED_LIMIT_S` (a generating CPU engine answers its own server minutes late)."""
        if self._process.poll() is not None:
            raise RuntimeError(f"engine {self.replica.name!r} exited with code {self._process.returncode}")
        status = await self._health_status()
        if status == 200:
            return
        if status is not None:  # vLLM's server answers 503 once its engine core is dead
            raise RuntimeError(f"engine {self.replica.name!r} answers /health with {status}")
        silent_s = time.monotonic() - self._answered_at
        if silent_s > UNANSWERED_LIMIT_S:
            raise RuntimeError(f"engine {self.replica.name!r} has not answered /health for {silent_s:.0f} s")
        logger.warning(
            "engine %r: /health unanswered for %.0f s (limit %g s); not reported unhealthy yet",
            self.replica.name,
            silent_s,
            UNANSWERED_LIMIT_S,
        )

    async def _health_status(self) -> int | None:
        """The status of the server's /health answer; None when it gives none in time. A 200 is
        recorded in `_answered_at`, which the liveness check measures silence from."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S))
        try:
            async with self._session.get(f"http://{self.host}:{self.port}{self.engine.health_path}") as response:
                if response.status == 200:
                    self._answered_at = time.monotonic()
                return response.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            with self.log_path.open(errors="replace") as log:
                return "".join(deque(log, maxlen=lines))
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """End the child process group: SIGTERM, then SIGKILL after a grace period."""
        if self._process.poll() is not None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __del__(self) -> None:
        # Serve calls __del__ on graceful replica shutdown.
        self.stop()
