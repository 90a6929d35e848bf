"""Named workload shapes shared by `tuner bench` and the performance model.

A workload is only the request shape: how many prompt tokens go in (ISL) and how many
generated tokens come out (OSL). Keeping it here, free of any dependency, lets the load
generator and the performance model agree on what "decode-heavy" means without importing
each other.

The presets bracket the regimes that decide TP=2 versus PP=2 on two DGX Sparks:

- ``equal``: 1024/1024, the symmetric shape most public serving benchmarks quote.
- ``prefill-heavy``: 2048/128, summarisation / RAG: long prompts, short answers; prefill-bound.
- ``decode-heavy``: 128/2048, generation / reasoning: short prompts, long answers; decode-bound.
- ``chat``: 256/256, a short conversational turn; interactive latency dominates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """Input (prompt) and output (generated) token counts of one request shape."""

    input_len: int
    output_len: int


WORKLOADS: dict[str, Workload] = {
    "equal": Workload(input_len=1024, output_len=1024),
    "prefill-heavy": Workload(input_len=2048, output_len=128),
    "decode-heavy": Workload(input_len=128, output_len=2048),
    "chat": Workload(input_len=256, output_len=256),
}


def get_workload(name: str) -> Workload:
    """Return the preset called ``name``; the error lists the valid names."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}") from None
