"""The router: the pure policy (gateway.policy) fed with live load, plus the little state it
carries between decisions. Settings can be swapped at runtime (PUT /admin/routing)."""

from __future__ import annotations

import random

from gateway.config import RoutingSettings, TrafficClass
from gateway.errors import GatewayError
from gateway.load import LoadBoard
from gateway.policy import PolicyState, Reject, RequestFeatures, Route, route


class Router:
    def __init__(self, settings: RoutingSettings, board: LoadBoard, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.board = board
        self._state = PolicyState()
        self._rng = rng or random.Random()

    def update(self, settings: RoutingSettings) -> None:
        """Switch settings (the policy included); policy state starts afresh for the new policy."""
        self.settings = settings
        self._state = PolicyState()

    @property
    def spilling(self) -> bool:
        return self._state.spilling

    def route(
        self, request: RequestFeatures, traffic_class: TrafficClass, exclude: frozenset[str] = frozenset()
    ) -> Route:
        decision, self._state = route(
            request, traffic_class, self.board.snapshot(exclude), self.settings, self._state, self._rng
        )
        if isinstance(decision, Reject):
            raise GatewayError(decision.status, decision.message, headers={"Retry-After": "1"})
        return decision
