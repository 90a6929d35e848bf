"""The router's settings switch (gateway.router): every part that reads the settings in force
hears of a switch, in the order it registered (PUT /admin/routing calls only `Router.update`)."""

from __future__ import annotations

from gateway.contract.config import ReplicaEndpoint, RoutingSettings
from gateway.load import LoadBoard
from gateway.router import Router


def test_a_settings_switch_reaches_every_listener_in_order() -> None:
    board = LoadBoard([ReplicaEndpoint(name="tp", traffic_class="interactive", model="m")], 3)
    router = Router(RoutingSettings(), board)
    heard: list[tuple[str, str]] = []
    router.on_update(lambda: heard.append(("yielding", router.settings.policy)))
    router.on_update(lambda: heard.append(("gates", router.settings.policy)))
    assert heard == []  # registering is not a switch
    router.update(RoutingSettings(policy="least-busy"))
    assert heard == [("yielding", "least-busy"), ("gates", "least-busy")]
