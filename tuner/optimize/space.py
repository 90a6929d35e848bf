"""The search space of one traffic class's replica, derived from the cluster and the template plan.

Knobs: the parallel layout (every tp x pp the cluster has workers for, less those whose weights
cannot fit), max_num_seqs, chunked prefill on/off, max_num_batched_tokens (only with chunked
prefill: without it vLLM needs the whole context in one step, so the budget is max_model_len),
and the replica's memory share of each device (GPU clusters only: on the CPU the KV cache is
sized by VLLM_CPU_KVCACHE_SPACE, kept from the template). Every knob is a finite, ordered set,
so the same space can be searched by Optuna, swept as a grid, or enumerated exhaustively.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna

from tuner.perfmodel import Layout

LAYOUT = "layout"
MAX_NUM_SEQS = "max_num_seqs"
CHUNKED_PREFILL = "enable_chunked_prefill"
BATCHED_TOKENS = "max_num_batched_tokens"
MEMORY_SHARE = "memory_share"
MIN_MEMORY_SHARE = 0.1
MEMORY_SHARE_STEP = 0.05


@dataclass(frozen=True)
class IntRange:
    """Integers low..high by `step`, or every integer on a log scale (Optuna samples it so)."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class ShareRange:
    """Memory shares low..high in steps of MEMORY_SHARE_STEP."""

    low: float
    high: float

    def values(self) -> list[float]:
        count = round((self.high - self.low) / MEMORY_SHARE_STEP)
        return [round(self.low + i * MEMORY_SHARE_STEP, 4) for i in range(count + 1)]

    def suggest(self, trial: optuna.Trial) -> float:
        return round(trial.suggest_float(MEMORY_SHARE, self.low, self.high, step=MEMORY_SHARE_STEP), 4)


@dataclass(frozen=True)
class Candidate:
    """One point of the space: the effective engine settings of one replica."""

    layout: Layout
    max_num_seqs: int
    enable_chunked_prefill: bool
    max_num_batched_tokens: int
    """The effective token budget: max_model_len when chunked prefill is off."""
    memory_share: float | None

    def params(self) -> dict[str, object]:
        """The Optuna parameters that produce this point (for enqueueing it)."""
        params: dict[str, object] = {
            LAYOUT: self.layout.name,
            MAX_NUM_SEQS: self.max_num_seqs,
            CHUNKED_PREFILL: self.enable_chunked_prefill,
        }
        if self.enable_chunked_prefill:
            params[BATCHED_TOKENS] = self.max_num_batched_tokens
        if self.memory_share is not None:
            params[MEMORY_SHARE] = self.memory_share
        return params

    def label(self) -> str:
        prefill = f"chunk {self.max_num_batched_tokens}" if self.enable_chunked_prefill else "no chunking"
        share = f", mem {self.memory_share:.2f}" if self.memory_share is not None else ""
        return f"{self.layout.name} seqs {self.max_num_seqs}, {prefill}{share}"


def layout_from_name(name: str) -> Layout:
    """The layout `Layout.name` wrote: 'tp2-pp1', or 'tp2-pp1-ep' with expert parallelism."""
    ep = name.endswith("-ep")
    tp, pp = name.removeprefix("tp").removesuffix("-ep").split("-pp")
    return Layout(tp=int(tp), pp=int(pp), ep=ep)


@dataclass(frozen=True)
class SearchSpace:
    """The knobs of one class's replica. `suggest` (Optuna), `candidates` (exhaustive) and
    `grid` (a coarse sweep) describe the same points."""

    layouts: tuple[str, ...]
    max_num_seqs: IntRange
    max_num_batched_tokens: IntRange
    max_model_len: int
    memory_share: ShareRange | None

    def suggest(self, trial: optuna.Trial) -> Candidate:
        layout = trial.suggest_categorical(LAYOUT, list(self.layouts))
        seqs = self.max_num_seqs.suggest(trial, MAX_NUM_SEQS)
        chunked = trial.suggest_categorical(CHUNKED_PREFILL, [True, False])
        tokens = self.max_num_batched_tokens.suggest(trial, BATCHED_TOKENS) if chunked else self.max_model_len
        share = self.memory_share.suggest(trial) if self.memory_share is not None else None
        return Candidate(layout_from_name(layout), seqs, chunked, tokens, share)

    def from_params(self, params: dict[str, Any]) -> Candidate:  # Optuna's trial.params
        """The point a finished trial evaluated."""
        chunked = bool(params[CHUNKED_PREFILL])
        share = params.get(MEMORY_SHARE)
        return Candidate(
            layout=layout_from_name(str(params[LAYOUT])),
            max_num_seqs=int(params[MAX_NUM_SEQS]),
            enable_chunked_prefill=chunked,
            max_num_batched_tokens=int(params[BATCHED_TOKENS]) if chunked else self.max_model_len,
            memory_share=None if share is None else round(float(share), 4),
        )

    def candidates(self) -> Iterator[Candidate]:
        """Every point, once (no chunked-prefill-off duplicates)."""
        shares: list[float | None] = list(self.memory_share.values()) if self.memory_share else [None]
        token_options = [(True, t) for t in self.max_num_batched_tokens.values()] + [(False, self.max_model_len)]
        for layout, seqs, (chunked, tokens), share in itertools.product(
            self.layouts, self.max_num_seqs.values(), token_options, shares
        ):
            yield Candidate(layout_from_name(layout), seqs, chunked, tokens, share)

    def size(self) -> int:
        shares = len(self.memory_share.values()) if self.memory_share else 1
        return (
            len(self.layouts)
            * len(self.max_num_seqs.values())
            * (len(self.max_num_batched_tokens.values()) + 1)
            * shares
        )

    def grid(self, points_per_knob: int = 3) -> dict[str, list[object]]:
        """A coarse Cartesian grid (what sweep tools run): every layout, chunking on and off,
        `points_per_knob` evenly spread values of each numeric knob. For Optuna's GridSampler."""

        def spread(values: list) -> list:
            if len(values) <= points_per_knob:
                return values
            return [values[round(i * (len(values) - 1) / (points_per_knob - 1))] for i in range(points_per_knob)]

        grid: dict[str, list[object]] = {
            LAYOUT: list(self.layouts),
            MAX_NUM_SEQS: spread(self.max_num_seqs.values()),
            CHUNKED_PREFILL: [True, False],
            BATCHED_TOKENS: spread(self.max_num_batched_tokens.values()),
        }
        if self.memory_share is not None:
            grid[MEMORY_SHARE] = spread(self.memory_share.values())
        return grid
