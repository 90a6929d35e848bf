"""PUT / PATCH /admin/routing merge what they are sent into the routing in force (issue 14,
defect 6): a body with one field never resets the others, the merged result is validated as a
whole, and a refused change leaves everything as it was."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gateway_support import FakeStack

from gateway.contract.config import FLAT_ROUTING_KEYS, RoutingSettings
from gateway.routing_update import NotAnObject, merge_routing

PLAN_ROUTING = {
    "spill_queue_threshold": 7,
    "spill_release_threshold": 2,
    "limits": {
        "interactive": {"max_concurrency": 3, "max_queue": 9, "priority": 0},
        "batch": {"max_concurrency": 40, "max_queue": 400, "priority": 5},
    },
}


def routing(stack: FakeStack) -> dict[str, Any]:
    return httpx.get(f"{stack.root_url}/admin/routing").json()


def change(stack: FakeStack, method: str, body: Any) -> httpx.Response:
    return httpx.request(method, f"{stack.root_url}/admin/routing", json=body)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_a_partial_body_changes_only_what_it_names(make_stack, method: str) -> None:
    stack = make_stack(routing=PLAN_ROUTING)
    before = routing(stack)
    reply = change(stack, method, {"policy": "all-batch"})
    assert reply.status_code == 200
    assert reply.json() == routing(stack) == before | {"policy": "all-batch"}
    reply = change(stack, method, {"limits": {"interactive": {"max_queue": 2}}})
    assert reply.status_code == 200
    limits = routing(stack)["limits"]
    assert limits["interactive"] == before["limits"]["interactive"] | {"max_queue": 2}
    assert limits["batch"] == before["limits"]["batch"]


def test_a_change_that_does_not_validate_changes_nothing(make_stack) -> None:
    stack = make_stack(routing=PLAN_ROUTING)
    before = routing(stack)
    cases = [
        ({"spill_release_threshold": 7}, "spill: release_threshold (7) must be below queue_threshold (7)"),
        ({"spill": {"release_threshold": 7}}, "spill: release_threshold (7) must be below queue_threshold (7)"),
        ({"limits": {"batch": {"max_concurrency": 0}}}, "greater than or equal to 1"),
        ({"no_such_setting": 1}, "Extra inputs are not permitted"),
        ([{"policy": "all-batch"}], "must be a JSON object"),
    ]
    for body, message in cases:
        reply = change(stack, "PUT", body)
        assert reply.status_code == 400, body
        assert message in reply.json()["error"]["message"]
    assert routing(stack) == before


def test_merge_routing_is_field_by_field() -> None:
    current = RoutingSettings.model_validate(PLAN_ROUTING)
    merged = merge_routing(current, {"batch_yield_fraction": 0.5, "limits": {"batch": {"priority": 1}}})
    assert merged.yielding.fraction == 0.5 and merged.limits["batch"].priority == 1
    assert merged.limits["batch"].max_concurrency == 40 and merged.spill.queue_threshold == 7
    assert current.yielding.fraction == 1.0  # the settings in force are not touched
    with pytest.raises(NotAnObject):
        merge_routing(current, "all-batch")


def test_get_answers_the_nested_form_and_put_takes_either(make_stack) -> None:
    """GET answers the settings by concern; a PUT may name a setting nested or by its flat key
    (existing clients), and a flat key added to the nested settings a client read wins."""
    stack = make_stack(routing=PLAN_ROUTING)
    before = routing(stack)
    assert before["spill"]["queue_threshold"] == 7 and "spill_queue_threshold" not in before
    assert change(stack, "PUT", {"yielding": {"fraction": 0.5}}).status_code == 200
    assert routing(stack)["yielding"] == before["yielding"] | {"fraction": 0.5}
    assert change(stack, "PUT", {"batch_yield_settle_s": 4.0}).status_code == 200
    assert routing(stack)["yielding"] == before["yielding"] | {"fraction": 0.5, "settle_s": 4.0}
    assert change(stack, "PUT", routing(stack) | {"gpu_arbitration": "freeze"}).status_code == 200
    after = routing(stack)
    assert after["arbitration"] == before["arbitration"] | {"mode": "freeze"}
    assert after["spill"] == before["spill"] and after["limits"] == before["limits"]


def test_every_flat_key_names_its_nested_setting() -> None:
    """Each flat key (plans of format 3, existing clients) sets the same setting as its nested
    form, and the settings dump nested: no flat key is left at the top level."""
    for flat, (group, field) in FLAT_ROUTING_KEYS.items():
        value = getattr(RoutingSettings(), group).model_dump()[field]
        changed = "freeze" if isinstance(value, str) else (not value if isinstance(value, bool) else value + 1)
        if flat == "batch_yield_fraction":
            changed = 0.5
        if flat == "spill_release_threshold":
            changed = 2  # below the queue threshold's default of 4
        from_flat = RoutingSettings.model_validate({flat: changed})
        assert from_flat == RoutingSettings.model_validate({group: {field: changed}}), flat
        assert getattr(from_flat, group).model_dump()[field] == changed, flat
        assert flat not in from_flat.model_dump()
    assert RoutingSettings.model_validate({"freeze_max_s": 3, "arbitration": {"max_s": 7}}).arbitration.max_s == 3
