"""Runtime changes to the routing settings (PUT or PATCH /admin/routing), as pure functions.

A body names only what changes. It is merged into the settings in force, field by field, and
under `limits` class by class and limit by limit; the result is validated as a whole and only
then replaces them. So a body with one field never resets the others: a PUT of
`{"policy": ...}` keeps every plan-derived threshold and class limit in force. A full body (what GET /admin/routing answers) still replaces everything it names.
"""

from __future__ import annotations

from typing import Any

from gateway.config import RoutingSettings


class NotAnObject(ValueError):
    """The body is valid JSON but not an object of RoutingSettings fields."""


def merge_routing(current: RoutingSettings, change: Any) -> RoutingSettings:
    """`current` with `change` (parsed JSON) merged in; raises NotAnObject, or pydantic's
    ValidationError naming the first bad field (unknown fields included)."""
    if not isinstance(change, dict):
        raise NotAnObject(f"the body must be a JSON object of routing settings, got {type(change).__name__}")
    return RoutingSettings.model_validate(_merged(current.model_dump(), change))


def _merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in change.items():
        inner = base.get(name)
        merged[name] = _merged(inner, value) if isinstance(value, dict) and isinstance(inner, dict) else value
    return merged
