"""Versions of the plan format: a plan says which one it is written in (`version:`), older ones are
brought up to the current version before they are checked, and one from a newer Tandem is refused
with a message that says so, instead of a list of fields this Tandem does not know.

Version 1 is the first versioned format; plans written before versions existed (no `version:`)
are version 0 and differ from version 1 only by lacking the field. Version 2 drops `data_path`
(one data path since). Version 3 adds a replica's `engine_kind` (the engine adapter that runs it,
gateway.engines); absent, it is vLLM, which every earlier plan ran. Version 4 writes
`gateway.routing` by concern (classify, spill, yielding, arbitration, limits: gateway.contract.config)
instead of one flat list of settings. Version 5 serves several models: `models:` lists model groups,
each with its own replicas (and admission limits); the one-model form of earlier versions (`model:`
and `replicas:` at the top level) becomes one group. Each later change to the
format adds a step to `_STEPS` that rewrites a plan's data from the version before, with a note
saying what it changed, so that a plan written by any earlier Tandem still loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.contract.config import FLAT_ROUTING_KEYS, nest_flat_routing

PLAN_VERSION = 5
"""The plan format this Tandem writes and reads."""


class PlanVersionError(ValueError):
    """A plan whose version this Tandem cannot read."""


def _from_unversioned(data: dict[str, Any]) -> str:
    return "it has no `version:` (written before plan versions); read as version 1, which it already is"


def _one_data_path(data: dict[str, Any]) -> str:
    """Version 2 has one data path (vLLM's own server in each replica, spanning nodes on GPUs with
    vLLM's Ray executor), so `data_path` is gone; a plan that named either path runs unchanged on it."""
    named = data.pop("data_path", None)
    if named is None:
        return "version 1 -> 2: nothing to change"
    return f"version 1 -> 2: `data_path: {named}` dropped (one data path now: docs/architecture.md)"


def _engine_named(data: dict[str, Any]) -> str:
    """Version 3 names each replica's engine; every earlier plan ran vLLM, the default."""
    return "version 2 -> 3: nothing to change (a replica without `engine_kind` runs vllm, as before)"


def _routing_nested(data: dict[str, Any]) -> str:
    """Version 4 groups the routing settings by concern; a flat key moves into its group
    (gateway.contract.config.FLAT_ROUTING_KEYS), with its value unchanged."""
    gateway = data.get("gateway")
    routing = gateway.get("routing") if isinstance(gateway, dict) else None
    if not isinstance(gateway, dict) or not isinstance(routing, dict):
        return "version 3 -> 4: nothing to change (no gateway.routing)"
    moved = sorted(set(routing) & set(FLAT_ROUTING_KEYS))
    gateway["routing"] = nest_flat_routing(routing)
    if not moved:
        return "version 3 -> 4: nothing to change (gateway.routing already nested)"
    where = ", ".join(f"{name} -> {'.'.join(FLAT_ROUTING_KEYS[name])}" for name in moved)
    return f"version 3 -> 4: gateway.routing nested by concern ({where})"


def one_model_form(data: dict[str, Any]) -> dict[str, Any]:
    """Plan data in the one-model short form (`model:` and `replicas:` at the top level) as the
    `models:` form, in place: one group holding the model's fields and the replicas."""
    model = data.pop("model", None)
    group: dict[str, Any] = dict(model) if isinstance(model, dict) else {}
    if "replicas" in data:
        group["replicas"] = data.pop("replicas")
    data["models"] = [group]
    return data


def _model_groups(data: dict[str, Any]) -> str:
    """Version 5 lists model groups; the one model of an earlier plan, with its replicas, is the one group."""
    if "models" in data or ("model" not in data and "replicas" not in data):
        return "version 4 -> 5: nothing to change (no top-level model)"
    one_model_form(data)
    return "version 4 -> 5: `model:` and `replicas:` moved into `models:` (one model group)"


# _STEPS[n] rewrites version-n data (in place) into version n + 1 and says what it did.
_STEPS: dict[int, Callable[[dict[str, Any]], str]] = {
    0: _from_unversioned,
    1: _one_data_path,
    2: _engine_named,
    3: _routing_nested,
    4: _model_groups,
}


def upgrade_plan_data(data: dict[str, Any]) -> list[str]:
    """Bring plan data to PLAN_VERSION, in place; the notes say what was done (none for a current
    plan). PlanVersionError for a version that is not a whole number or is newer than this Tandem's."""
    version = data.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise PlanVersionError(f"version must be a whole number from 1 to {PLAN_VERSION}, got {version!r}")
    if version > PLAN_VERSION:
        raise PlanVersionError(
            f"it is written in plan format version {version}, and this Tandem reads versions up to {PLAN_VERSION}: "
            "it comes from a newer Tandem; upgrade this one (the plan is left as it is)"
        )
    notes = []
    for step in range(version, PLAN_VERSION):
        notes.append(_STEPS[step](data))
    data["version"] = PLAN_VERSION
    return notes
