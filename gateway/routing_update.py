"""Runtime changes to the routing settings (PUT or PATCH /admin/routing), as pure functions.

A body names only what changes. It is merged into the settings in force, field by field, and
under `limits` class by class and limit by limit; the result is validated as a whole and only
then replaces them. So a body with one field never resets the others: a PUT of
`{"policy": ...}` keeps every plan-derived threshold and class limit in force. A full body (what GET /admin/routing answers) still replaces everything it names.
A body may use the flat form (`{"batch_yield_fraction": 0.5}`, gateway.contract.config.FLAT_ROUTING_KEYS)
or the nested one (`{"yielding": {"fraction": 0.5}}`); a flat key changes its group's field, so it
wins over the same field in a full nested body it is added to (GET, then one flat key, then PUT).
"""

from __future__ import annotations

from typing import Any

from gateway.contract.config import RoutingSettings, merged_settings, nest_flat_routing


class NotAnObject(ValueError):
    """The body is valid JSON but not an object of RoutingSettings fields."""


def merge_routing(current: RoutingSettings, change: Any) -> RoutingSettings:
    """`current` with `change` (parsed JSON) merged in; raises NotAnObject, or pydantic's
    ValidationError naming the first bad field (unknown fields included)."""
    if not isinstance(change, dict):
        raise NotAnObject(f"the body must be a JSON object of routing settings, got {type(change).__name__}")
    return RoutingSettings.model_validate(merged_settings(current.model_dump(), nest_flat_routing(change)))
