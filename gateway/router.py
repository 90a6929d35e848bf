"""The router, live: the pure routing (gateway.contract.router) fed with live load, plus the little state it
carries between decisions. Settings can be swapped at runtime (PUT /admin/routing)."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import replace

from gateway.contract.config import RoutingSettings, TrafficClass
from gateway.contract.policies.class_aware import Spilling
from gateway.contract.policy import ReplicaLoad, RequestFeatures
from gateway.contract.router import POLICIES, PolicyState, Reject, Route, route
from gateway.errors import GatewayError
from gateway.load import LoadBoard
from gateway.response_ids import ResponseIdMap

# Conversations whose last replica the router remembers (least recently routed first out), and for
# how long after a turn: a user comes back within minutes, and an engine's prefix cache does not
# keep an idle conversation much longer under load.
CONVERSATIONS_KEPT = 100_000
CONVERSATION_TTL_S = 600.0


class Router:
    """Routes among one model's replicas (`replicas`; all of the board's when None)."""

    def __init__(
        self,
        settings: RoutingSettings,
        board: LoadBoard,
        rng: random.Random | None = None,
        replicas: Collection[str] | None = None,
    ) -> None:
        self.board = board
        self.replicas = frozenset(replicas) if replicas is not None else None
        self._rng = rng or random.Random()
        self._listeners: list[Callable[[], None]] = []
        self.update(settings)

    def on_update(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each settings switch, in the order registered: the parts that
        read the settings in force (admission gates, batch yielding, GPU arbitration) act on a
        switch at once instead of at their next event."""
        self._listeners.append(listener)

    def update(self, settings: RoutingSettings) -> None:
        """Switch settings (the policy included); policy state starts afresh for the new policy,
        and the listeners hear of it."""
        self.settings = settings
        self._state = PolicyState()
        self._last_replica = (
            ResponseIdMap(CONVERSATIONS_KEPT, CONVERSATION_TTL_S)
            if POLICIES[settings.policy].reads_conversation
            else None
        )
        for listener in self._listeners:
            listener()

    @property
    def follows_conversations(self) -> bool:
        """Whether the policy in force reads a request's conversation (gateway.protocol.features_of)."""
        return self._last_replica is not None

    @property
    def spilling(self) -> bool:
        """Whether interactive work spills to the batch replica now, by the policy in force's own
        state (class_aware.Spilling; a policy that never spills, False)."""
        name = self.settings.policy
        own = self._state.of(name, POLICIES[name])
        return isinstance(own, Spilling) and own.spilling

    def route(
        self, request: RequestFeatures, traffic_class: TrafficClass, exclude: frozenset[str] = frozenset()
    ) -> Route:
        memory = self._last_replica
        conversation = _conversation_key(request) if memory is not None else None
        if memory is not None and conversation is not None:
            request = replace(request, previous_replica=memory.replica_of(conversation))
        decision, self._state = route(
            request, traffic_class, self.snapshot(exclude), self.settings, self._state, self._rng
        )
        if isinstance(decision, Reject):
            raise GatewayError(decision.status, decision.message, headers={"Retry-After": "1"})
        if memory is not None and conversation is not None:
            memory.remember(conversation, decision.replica)
        return decision

    def snapshot(self, exclude: frozenset[str] = frozenset()) -> list[ReplicaLoad]:
        """The load of this router's replicas (another model's replicas are never candidates)."""
        loads = self.board.snapshot(exclude)
        return loads if self.replicas is None else [r for r in loads if r.name in self.replicas]


def _conversation_key(request: RequestFeatures) -> str | None:
    """The conversation a request continues: its chat opening where it has one, else its session."""
    if request.prefix_hash is not None:
        return f"prefix:{request.prefix_hash:016x}"
    if request.session is not None:
        return f"session:{request.session}"
    return None
