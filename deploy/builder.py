"""ServingPlan -> Ray Serve application: one engine deployment per replica of every model, the
gateway in front.

Like `ray.serve.llm`'s builders, these are plain functions returning a bound `Application`;
`serve.run` (deploy.stack) starts it. Each replica is an `EngineServer` running vLLM's own OpenAI
server inside the replica's placement group (one bundle per worker); the gateway speaks HTTP
to it. On GPUs a replica of several workers puts them in those bundles through vLLM's Ray
executor, which is how a layout spans the two boxes (deploy.engine_server).
"""

from __future__ import annotations

from ray import serve
from ray.serve.deployment import Application

from deploy.engine_server import EngineServer
from deploy.gateway_server import GatewayServer
from deploy.placement import actor_resources, bundles
from deploy.plan import Replica, ServingPlan
from gateway.contract.config import GatewayConfig, ReplicaEndpoint, ServedModel

APP_NAME = "tandem"
GATEWAY_DEPLOYMENT = "gateway"
ENGINE_HEALTH_CHECK_PERIOD_S = 10
# The gateway holds no GPU and little CPU: a small share keeps it placeable beside the engines.
GATEWAY_CPUS = 0.1


def engine_deployment_name(replica: Replica) -> str:
    return f"engine-{replica.name}"


SHARED_DEVICES = "shared"


def device_group(plan: ServingPlan) -> str | None:
    """The device group of the plan's replicas (gateway.contract.freezing): when their workers
    outnumber the cluster's devices, the replicas are co-resident (Tandem's design: both replicas
    on the same GPUs, or on the CPU the same cores) and share one group; otherwise none shares.
    Plan-wide: the replicas of every model count, since co-resident engines share the devices
    whichever model they serve."""
    workers = sum(r.world_size for r in plan.replicas)
    return SHARED_DEVICES if workers > plan.cluster.devices else None


def gateway_config(plan: ServingPlan, replica_urls: dict[str, str] | None = None) -> GatewayConfig:
    """The gateway's view of a plan: one served model per model group (its public names, its
    admission limits, one endpoint per replica), and the routing settings. API keys are resolved
    here, where `gateway up/deploy` runs: the keys file and the keys variable are read on this
    machine, and the gateway replica gets the keys themselves."""
    urls = replica_urls or {}
    group_of_devices = device_group(plan)
    settings = plan.gateway.model_copy(update={"auth": plan.gateway.auth.resolved()})
    return GatewayConfig(
        models=[
            ServedModel(
                name=group.name,
                aliases=group.aliases,
                limits=group.limits,
                replicas=[
                    ReplicaEndpoint(
                        name=r.name,
                        traffic_class=r.traffic_class,
                        model=group.name,
                        max_num_seqs=r.engine.max_num_seqs,
                        engine=r.engine_kind,
                        scheduling_policy=r.engine.scheduling_policy,
                        base_url=urls.get(r.name),
                        device_group=group_of_devices,
                    )
                    for r in group.replicas
                ],
            )
            for group in plan.models
        ],
        settings=settings,
    )


def build_app(plan: ServingPlan, model_sources: dict[str, str], log_dir: str) -> Application:
    """Bind every replica's engine deployment, each loading its model (`model_sources`: the path or
    hub id of each model group, by name), and the gateway that fronts them."""
    engines: dict[str, Application] = {}
    previous: Application | None = None
    for replica in plan.replicas:
        start_after = previous if starts_in_turn(plan) else None
        source = model_sources[plan.group_of(replica.name).name]
        engines[replica.name] = previous = engine_app(plan, replica, source, log_dir, start_after=start_after)
    return gateway_app(plan, engines)


def starts_in_turn(plan: ServingPlan) -> bool:
    """Whether the engines must start one after the other: GPU replicas that share devices and
    size their KV cache by profiling free memory (no `kv_cache_memory_bytes`). Started together,
    each would count the other's weights as its own use and could find no memory for its cache."""
    shared = not plan.cluster.is_cpu and device_group(plan) is not None
    return shared and any(r.engine.kv_cache_memory_bytes is None for r in plan.replicas)


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
    return gateway.bind(gateway_config(plan), engines)


def engine_app(
    plan: ServingPlan,
    replica: Replica,
    model_source: str,
    log_dir: str,
    engine_cls: type = EngineServer,
    start_after: Application | None = None,
) -> Application:
    """One replica as an `EngineServer` deployment holding the replica's placement group, serving
    its model group's model (`model_source`, under the group's name). `engine_cls` swaps the class
    behind the same deployment options (tests probe placement);
    `start_after` is the engine whose readiness this one waits for before starting vLLM."""
    deployment = serve.deployment(engine_cls).options(
        name=engine_deployment_name(replica),
        num_replicas=1,
        ray_actor_options=actor_resources(replica, plan.cluster.accelerator),
        placement_group_bundles=bundles(replica, plan.cluster.accelerator),
        placement_group_strategy=replica.placement.strategy,
        health_check_period_s=ENGINE_HEALTH_CHECK_PERIOD_S,
        max_ongoing_requests=1000,  # only url()/health calls come through Serve; the data goes by HTTP
    )
    return deployment.bind(
        model_source,
        plan.group_of(replica.name).name,
        replica.model_dump(mode="json"),
        log_dir,
        plan.cluster.accelerator,
        start_after,
    )
