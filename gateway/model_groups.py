"""The models one gateway serves, each a group with its own router, class gates and batch yielding.

A request's `model` (a name or an alias) picks the group; the group's router then picks one of the
group's replicas, so one model's traffic never reaches another's engines, and each model's classes
queue in their own gates (a long batch job on one model does not fill the other's queue). What
the models share is the load board (one poller for every replica), the routing settings (one
policy, one switch, PUT /admin/routing) and the devices: a group's batch admissions yield to the
interactive work of every group whose replicas share a device group with its batch replicas, as
the engine freezer (gateway.freezing) freezes a batch engine for interactive work on any model
beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gateway.admission import ClassGate
from gateway.auth import Client
from gateway.contract.config import GatewayConfig, ReplicaEndpoint, RoutingSettings, ServedModel, TrafficClass
from gateway.errors import GatewayError
from gateway.load import LoadBoard
from gateway.router import Router
from gateway.yielding import BatchYielding


class ModelGroup:
    """One served model's runtime: its router over its replicas, its class gates, its yielding."""

    def __init__(self, config: ServedModel, board: LoadBoard, settings: RoutingSettings) -> None:
        self.config = config
        self.name = config.name
        self.replicas: dict[str, ReplicaEndpoint] = {r.name: r for r in config.replicas}
        self.router = router = Router(config.routing(settings), board, replicas=self.replicas)
        self.yielding = yielding = BatchYielding(lambda: router.settings)
        self._interactive_listeners: list[Callable[[], None]] = []  # told when interactive work changes
        self.gates: dict[TrafficClass, ClassGate] = {
            "interactive": ClassGate(
                "interactive", lambda: router.settings.limits["interactive"], on_change=self._interactive_changed
            ),
            "batch": ClassGate("batch", yielding.batch_limits),
        }
        router.on_update(yielding.update)
        for gate in self.gates.values():
            router.on_update(gate.grant)

    def on_interactive_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever this model's interactive requests in flight or queued change."""
        self._interactive_listeners.append(listener)

    def _interactive_changed(self) -> None:
        for listener in self._interactive_listeners:
            listener()

    def device_groups(self, traffic_class: TrafficClass | None = None) -> frozenset[str]:
        """The device groups this model's replicas (of one class, or all) run on."""
        return frozenset(
            r.device_group
            for r in self.replicas.values()
            if r.device_group is not None and traffic_class in (None, r.traffic_class)
        )


class ModelGroups:
    """Every model of a config, by each of its names, and the routing settings they share."""

    def __init__(self, config: GatewayConfig, board: LoadBoard) -> None:
        self.settings = config.settings.routing
        self.groups = [ModelGroup(served, board, self.settings) for served in config.models]
        self._named = {name: group for group in self.groups for name in group.config.served_names}
        self.by_replica = {name: group for group in self.groups for name in group.replicas}  # who serves what
        self._listeners: list[Callable[[], None]] = []
        for group in self.groups:
            beside = [
                other
                for other in self.groups
                if other is group or group.device_groups("batch") & other.device_groups("interactive")
            ]
            group.yielding.watch([other.gates["interactive"] for other in beside], group.gates["batch"])
            for other in beside:
                other.on_interactive_change(group.yielding.update)

    @property
    def default(self) -> ModelGroup:
        """The group that serves a request naming no model: the config's first."""
        return self.groups[0]

    def __iter__(self) -> Iterator[ModelGroup]:
        return iter(self.groups)

    def named(self, name: str | None) -> ModelGroup | None:
        """The group a request's `model` names; the default one for none; None if not served."""
        return self.default if name is None else self._named.get(name)

    def for_request(self, requested: str | None, client: Client) -> ModelGroup:
        """The group serving a request's `model` (the default one for none): vLLM's 404 for a model
        not served, and the same for one the client's key may not use (OpenAI answers a model a key
        cannot reach as one that does not exist, so a key does not learn what else is served)."""
        group = self.named(requested)
        if group is None or not client.may_use(group.config.served_names):
            raise GatewayError(404, f"The model `{requested or self.default.name}` does not exist.", param="model")
        return group

    def on_update(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each settings switch, once every group has its new settings."""
        self._listeners.append(listener)

    def update(self, settings: RoutingSettings) -> None:
        """Switch every group to `settings` (each keeping its own class limits over them)."""
        self.settings = settings
        for group in self.groups:
            group.router.update(group.config.routing(settings))
        for listener in self._listeners:
            listener()

    @property
    def spilling(self) -> bool:
        return any(group.router.spilling for group in self.groups)

    @property
    def batch_held(self) -> bool:
        return any(group.yielding.holding for group in self.groups)
