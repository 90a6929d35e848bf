"""Engine adapters (see .base): the registry of the engines Tandem can run a replica on.

A plan's replica names its engine (`engine_kind`, default "vllm"); the gateway's replica endpoint
carries the same name. `engine_adapter` is the one lookup."""

from __future__ import annotations

from gateway.engines.base import EngineAdapter, EngineArguments, ServerLaunch
from gateway.engines.vllm import VLLM

ENGINES: dict[str, EngineAdapter] = {VLLM.name: VLLM}
DEFAULT_ENGINE = VLLM.name


class UnknownEngine(ValueError):
    """A replica names an engine no adapter is registered for."""


def engine_adapter(name: str) -> EngineAdapter:
    try:
        return ENGINES[name]
    except KeyError:
        raise UnknownEngine(f"no engine adapter named {name!r}; known: {', '.join(sorted(ENGINES))}") from None


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "EngineAdapter",
    "EngineArguments",
    "ServerLaunch",
    "UnknownEngine",
    "engine_adapter",
]
