"""Run a plan: connect to (or start) Ray, deploy the Serve app, wait until it serves, tear down.

`RayConnection` owns the one rule that matters for a shared cluster: stop only what we
started. A local head started here is stopped on exit; a cluster we joined is left running.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from deploy.builder import APP_NAME, GATEWAY_CPUS, GATEWAY_DEPLOYMENT, build_app
from deploy.demo_model import cache_dir, ensure_demo_model
from deploy.placement import bundles
from deploy.plan import ModelSpec, ServingPlan

logger = logging.getLogger("tandem.deploy")

SERVE_SHUTDOWN_TIMEOUT_S = 20.0
READY_TIMEOUT_S = float(os.environ.get("TANDEM_READY_TIMEOUT_S", "900"))


@dataclass(frozen=True)
class Deployed:
    """A running stack: where the gateway listens, the models it serves and where each replica's
    engine answers."""

    base_url: str
    models: tuple[str, ...]
    replica_urls: dict[str, str | None]

    @property
    def model(self) -> str:
        """The first model: the one a request naming no model gets."""
        return self.models[0]


def resolve_model_source(model: ModelSpec) -> str:
    """The path or hub id vLLM loads for a model: a demo model is made here if it is missing."""
    if model.is_demo:
        return str(ensure_demo_model(model.source))
    return str(Path(model.source).expanduser()) if model.is_local_path else model.source


def model_sources(plan: ServingPlan) -> dict[str, str]:
    """What each model group's engines load, by the group's name (resolve_model_source)."""
    return {group.name: resolve_model_source(group) for group in plan.models}


def logical_cpus_needed(plan: ServingPlan) -> int:
    """Ray CPUs for a local head running the plan. Bundles are logical (the engines share the
    real cores), so this is accounting: every bundle, the gateway, and one more per replica of
    slack for Ray's own tasks beside them."""
    reserved = sum(b["CPU"] for r in plan.replicas for b in bundles(r, plan.cluster.accelerator))
    return max(os.cpu_count() or 1, math.ceil(reserved + GATEWAY_CPUS) + len(plan.replicas))


def ray_on_loopback_only() -> None:
    """Make every Ray process started from here on register and listen on 127.0.0.1.

    `_node_ip_address` alone is not enough: Ray's processes still pick the address the host
    would route out of unless its single-machine switch is off. The switch is read from the
    environment by each new process, and once, at import, by this one (already done), so both
    are set."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


LOCAL_HEAD_ATTEMPTS = 3


def start_local_head(num_cpus: int | None) -> None:
    """Start a local Ray head on loopback and connect to it (address="local" starts a new head even
    when another Ray cluster runs here; ray.init would join that one).

    Tried up to three times: Ray waits a fixed 30 s for its own raylet to register with the GCS
    (ray/_private/node.py, not configurable), which a loaded 2-core machine can miss; the next try
    usually starts in seconds. Any other failure is raised at once."""
    import ray

    ray_on_loopback_only()
    for attempt in range(1, LOCAL_HEAD_ATTEMPTS + 1):
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                namespace="tandem",
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == LOCAL_HEAD_ATTEMPTS:
                raise
            logger.warning("Ray's head did not register in its 30 s (attempt %d); starting it again", attempt)
            ray.shutdown()


def _on_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in ("localhost", "::1") or host.startswith("127.")


class RayConnection:
    """Ray for one command: join the cluster at `address`, else start a local head we own."""

    def __init__(self, address: str | None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.owns_cluster = False

    def __enter__(self) -> RayConnection:
        import ray

        if self.address:
            if _on_loopback(self.address):
                # A cluster of nodes on this machine (tests, or a trial run on one box): Ray would
                # otherwise swap 127.0.0.1 for the host's outward address, where nothing listens.
                ray_on_loopback_only()
            ray.init(address=self.address, namespace="tandem", log_to_driver=False)
            return self
        start_local_head(self.num_cpus)
        self.owns_cluster = True
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        if self.owns_cluster:
            shutdown_serve()
        ray.shutdown()


def shutdown_serve(timeout_s: float = SERVE_SHUTDOWN_TIMEOUT_S) -> None:
    """`serve.shutdown()`, bounded: when tried here it could hang for 45 s or more; the actors
    it leaves are ended with the Ray processes when the local head stops."""
    from ray import serve

    worker = threading.Thread(target=serve.shutdown, daemon=True, name="serve-shutdown")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        logger.warning("serve.shutdown() did not finish in %.0f s; stopping Ray's processes instead", timeout_s)


Progress = Callable[[float, dict[str, str]], None]
"""Told the seconds since the deploy began and the app's and each deployment's state, on each change."""


def deploy(
    plan: ServingPlan,
    log_dir: Path | None = None,
    timeout_s: float = READY_TIMEOUT_S,
    on_progress: Progress | None = None,
) -> Deployed:
    """Deploy the plan on the connected cluster and wait, at most `timeout_s` in all, until the
    app runs and the gateway answers /ready. Failure: RuntimeError with each deployment's own
    message (an engine's log tail); past the time: TimeoutError with the states it reached. The
    app is left deployed either way: the caller decides whether to remove it (`undeploy`)."""
    from ray import serve
    from ray.serve.api import RunTarget

    started = time.monotonic()
    log_dir = log_dir or cache_dir() / "logs"
    serve.start(proxy_location="Disabled")
    app = build_app(plan, model_sources(plan), str(log_dir))
    # Not serve.run, which waits without a bound or a word: the same call, then our own wait.
    (handle,) = serve.run_many(
        [RunTarget(app, name=APP_NAME, route_prefix=None)],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )
    _wait_running(started, timeout_s, on_progress)
    replica_urls = handle.replica_urls.remote().result()
    settings = plan.gateway
    scheme = "https" if settings.tls is not None else "http"
    base_url = f"{scheme}://{_client_host(settings.host)}:{settings.port}/v1"
    wait_ready(base_url, max(1.0, timeout_s - (time.monotonic() - started)))
    return Deployed(base_url=base_url, models=tuple(g.name for g in plan.models), replica_urls=replica_urls)


def _wait_running(started: float, timeout_s: float, on_progress: Progress | None) -> None:
    """Poll the app's status (as serve.run does) until RUNNING, telling each change."""
    last: dict[str, str] | None = None
    while True:
        states = app_status() or {"app": "NOT_STARTED"}
        if states != last and on_progress is not None:
            on_progress(time.monotonic() - started, states)
        last = states
        if states["app"] == "RUNNING":
            return
        if states["app"] == "DEPLOY_FAILED":
            # Serve says only which deployments failed; why (an engine's log tail) is in their status.
            raise RuntimeError(f"deploying the app failed:\n{_failure_details()}")
        if time.monotonic() - started > timeout_s:
            where = ", ".join(f"{name} {state}" for name, state in states.items())
            details = _failure_details()
            raise TimeoutError(
                f"the app was not running after {timeout_s:.0f} s ({where})" + (f"\n{details}" if details else "")
            )
        time.sleep(1.0)


def _failure_details() -> str:
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return ""
    return "\n".join(f"{name}: {d.message}" for name, d in app.deployments.items() if d.message)


def _client_host(listen_host: str) -> str:
    return "127.0.0.1" if listen_host in ("0.0.0.0", "::", "") else listen_host


def wait_ready(base_url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the gateway's /ready until every replica answers. Over https the certificate is not
    checked: it names the gateway's public host, not the loopback address asked here, and this
    request carries no key and reads only the answer's status."""
    ready_url = base_url.removesuffix("/v1") + "/ready"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(ready_url, timeout=5, verify=False)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise TimeoutError(f"gateway at {ready_url} not ready after {timeout_s:.0f} s ({last})")


def undeploy() -> bool:
    """Delete Tandem's Serve app from the connected cluster; False when none was running."""
    from ray import serve

    if APP_NAME not in serve.status().applications:
        return False
    serve.delete(APP_NAME)
    return True


def app_status() -> dict[str, str] | None:
    """Status of the app and of each deployment, or None when no Tandem app is deployed."""
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return None
    status = {"app": str(app.status.value if hasattr(app.status, "value") else app.status)}
    for name, deployment in app.deployments.items():
        status[name] = str(getattr(deployment.status, "value", deployment.status))
    return status


@contextmanager
def running_stack(
    plan: ServingPlan, address: str | None = None, on_progress: Progress | None = None
) -> Iterator[Deployed]:
    """Deploy a plan for the length of a `with` block (tests, `gateway up`, live tuning)."""
    with RayConnection(address, num_cpus=None if address else logical_cpus_needed(plan)) as connection:
        try:
            yield deploy(plan, on_progress=on_progress)
        finally:
            if not connection.owns_cluster:  # a failed deploy is removed too: Serve would retry it
                undeploy()


__all__ = [
    "Deployed",
    "GATEWAY_DEPLOYMENT",
    "RayConnection",
    "app_status",
    "deploy",
    "running_stack",
    "undeploy",
    "wait_ready",
]
