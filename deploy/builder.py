"""ServingPlan -> Ray Serve application: one engine deployment per replica, the gateway in front.

Like `ray.serve.llm`'s builders, these are plain functions returning a bound `Application`;
`serve.run` (deploy.stack) starts it. Two data paths, chosen by `plan.data_path`:

- `http` (default): each replica is an `EngineServer` running vLLM's own OpenAI server; the
  gateway speaks HTTP to it. Ray reserves the replica's placement group (one bundle per worker).
- `handle`: each replica is a `ray.serve.llm` LLMServer; the gateway calls it through Serve
  handles. This is the path where vLLM's Ray executor places one GPU worker per bundle across
  nodes, so it is the one for layouts that span the two boxes on GPUs.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.deployment import Application

from deploy.engine_server import EngineServer
from deploy.gateway_server import GatewayServer
from deploy.plan import Replica, ServingPlan
from gateway.config import GatewayConfig, ReplicaEndpoint

APP_NAME = "tandem"
GATEWAY_DEPLOYMENT = "gateway"
ENGINE_HEALTH_CHECK_PERIOD_S = 10
# The gateway holds no GPU and little CPU: a small share keeps it placeable beside the engines.
GATEWAY_CPUS = 0.1
# Ray Serve LLM batches stream chunks every 50 ms by default; interactive latency cannot pay
# that, so the handle path streams every chunk as it comes (docs/architecture.md).
HANDLE_STREAM_BATCHING_MS = 0


def engine_deployment_name(replica: Replica) -> str:
    return f"engine-{replica.name}"


SHARED_DEVICES = "shared"


def device_group(plan: ServingPlan) -> str | None:
    """The device group of the plan's replicas (gateway.arbitration): when their workers
    outnumber the cluster's devices, the replicas are co-resident (Tandem's design: both replicas
    on the same GPUs, or on the CPU the same cores) and share one group; otherwise none shares."""
    workers = sum(r.world_size for r in plan.replicas)
    return SHARED_DEVICES if workers > plan.cluster.devices else None


def gateway_config(plan: ServingPlan, replica_urls: dict[str, str] | None = None) -> GatewayConfig:
    """The gateway's view of a plan: public names, one endpoint per replica, routing settings.
    API keys are resolved here, where `gateway up/deploy` runs: the keys file and the keys
    variable are read on this machine, and the gateway replica gets the keys themselves."""
    urls = replica_urls or {}
    settings = plan.gateway.model_copy(update={"auth": plan.gateway.auth.resolved()})
    return GatewayConfig(
        model=plan.model.name,
        aliases=plan.model.aliases,
        replicas=[
            ReplicaEndpoint(
                name=r.name,
                traffic_class=r.traffic_class,
                model=plan.model.name,
                max_num_seqs=r.engine.max_num_seqs,
                scheduling_policy=r.engine.scheduling_policy,
                base_url=urls.get(r.name),
                device_group=device_group(plan),
            )
            for r in plan.replicas
        ],
        settings=settings,
    )


def build_app(plan: ServingPlan, model_source: str, log_dir: str) -> Application:
    """Bind every replica's engine deployment and the gateway that fronts them."""
    if plan.data_path == "http":
        engines = {r.name: http_engine(plan, r, model_source, log_dir) for r in plan.replicas}
    else:
        engines = {r.name: _llm_server_engine(plan, r, model_source) for r in plan.replicas}
    return gateway_app(plan, engines)


def gateway_app(plan: ServingPlan, engines: dict[str, Application]) -> Application:
    """The gateway's deployment in front of `engines` (bound engine deployments, by replica name)."""
    gateway = serve.deployment(GatewayServer).options(
        name=GATEWAY_DEPLOYMENT,
        num_replicas=1,
        # On a cluster the gateway listens on the head node: the address the team is given.
        ray_actor_options={"num_cpus": GATEWAY_CPUS, "resources": {"node:__internal_head__": 0.001}},
        health_check_period_s=ENGINE_HEALTH_CHECK_PERIOD_S,
    )
    # The config object itself, not a dump: Ray pickles it with its SecretStr keys intact, where
    # a JSON dump would hand the replica `**********` for every key.
    return gateway.bind(gateway_config(plan), plan.data_path, engines)


def http_engine(
    plan: ServingPlan, replica: Replica, model_source: str, log_dir: str, engine_cls: type = EngineServer
) -> Application:
    """One replica as an `EngineServer` deployment holding the replica's placement group.
    `engine_cls` swaps the class behind the same deployment options (tests probe placement)."""
    bundles = replica.placement_bundles(plan.cluster.accelerator)
    deployment = serve.deployment(engine_cls).options(
        name=engine_deployment_name(replica),
        num_replicas=1,
        # The replica's actor sits in the first bundle; the rest are held for its other workers.
        ray_actor_options={"num_cpus": bundles[0]["CPU"], "num_gpus": bundles[0].get("GPU", 0)},
        placement_group_bundles=bundles,
        placement_group_strategy=replica.placement.strategy,
        health_check_period_s=ENGINE_HEALTH_CHECK_PERIOD_S,
        max_ongoing_requests=1000,  # only url()/health calls come through Serve; the data goes by HTTP
    )
    return deployment.bind(model_source, plan.model.name, replica.model_dump(mode="json"), log_dir)


def llm_config(plan: ServingPlan, replica: Replica, model_source: str) -> Any:
    """The `ray.serve.llm.LLMConfig` of one replica (the handle data path)."""
    from ray.serve.llm import LLMConfig

    engine_kwargs: dict[str, Any] = {
        "tensor_parallel_size": replica.tensor_parallel_size,
        "pipeline_parallel_size": replica.pipeline_parallel_size,
        **replica.engine.to_vllm_kwargs(),
    }
    if plan.cluster.is_cpu:
        # vLLM refuses its Ray executor on the CPU platform; its workers stay in the replica.
        engine_kwargs["distributed_executor_backend"] = "mp"
    return LLMConfig(
        model_loading_config={"model_id": plan.model.name, "model_source": model_source},
        engine_kwargs=engine_kwargs,
        # GPU bundles tell Ray Serve LLM it is a GPU deployment; its accelerator_type list
        # has no GB10, so the type stays unset rather than naming a resource no node has.
        placement_group_config={
            "bundles": replica.placement_bundles(plan.cluster.accelerator),
            "strategy": replica.placement.strategy,
        },
        runtime_env={"env_vars": dict(replica.env)},
        deployment_config={"num_replicas": 1, "health_check_period_s": ENGINE_HEALTH_CHECK_PERIOD_S},
        experimental_configs={"stream_batching_interval_ms": HANDLE_STREAM_BATCHING_MS},
    )


def _llm_server_engine(plan: ServingPlan, replica: Replica, model_source: str) -> Application:
    from ray.serve.llm import build_llm_deployment

    from deploy.leased_llm_server import LeasedLLMServer

    return build_llm_deployment(
        llm_config(plan, replica, model_source),
        override_serve_options={"name": engine_deployment_name(replica)},
        deployment_cls=LeasedLLMServer,  # a pause lease, for gateway.freezing
    )
