"""The single-box calibration set, and the model's prediction for each point.

Calibration uses one DGX Spark only: the model's two-node behaviour is then a prediction, not a
fit. data/calibration.yaml lists public measurements (llama.cpp, SGLang, vLLM) with their
sources; `compare()` puts the model next to each one (docs/perfmodel.md shows the table and a
test holds every point within 25%).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tuner.perfmodel.architecture import WeightFormats, resolve_model
from tuner.perfmodel.engine import EngineProfile, load_engine
from tuner.perfmodel.hardware import load_hardware
from tuner.perfmodel.sourced import DATA_DIR, read_yaml
from tuner.perfmodel.step import StepBatch, StepModel

CALIBRATION_HARDWARE = "dgx-spark"


class CalibrationPoint(BaseModel):
    """One public single-box measurement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str
    model: str
    weights: dict[str, str] = Field(
        default_factory=dict, description="Formats of the measured build, where they differ."
    )
    kind: Literal["decode", "prefill"]
    batch: int = Field(ge=1)
    context: int = Field(ge=1)
    chunk: int | None = Field(None, ge=1, description="Prefill tokens per step (prefill points).")
    measured_tok_s: float = Field(gt=0)
    holdout: bool = Field(False, description="Not used to fit any constant: a check of the model out of sample.")
    source: str
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.engine} {self.model} {self.kind} B={self.batch} ctx={self.context}"


class Comparison(BaseModel):
    point: CalibrationPoint
    predicted_tok_s: float

    @property
    def ratio(self) -> float:
        return self.predicted_tok_s / self.point.measured_tok_s


@cache
def calibration_points() -> tuple[CalibrationPoint, ...]:
    data = read_yaml(DATA_DIR / "calibration.yaml")
    return tuple(CalibrationPoint.model_validate(p) for p in data["points"])


def predict_point(point: CalibrationPoint, engine: EngineProfile | None = None) -> float:
    """The model's tok/s for one calibration point (decode: output tok/s; prefill: prompt tok/s)."""
    model = resolve_model(point.model)
    model = model.with_weights(**WeightFormats.model_validate(point.weights).model_dump(exclude_unset=True))
    steps = StepModel(model, load_hardware(CALIBRATION_HARDWARE), engine or load_engine(point.engine))
    if point.kind == "decode":
        batch = StepBatch(decode_tokens=point.batch, decode_context=point.context)
        return point.batch / steps.cycle_seconds([batch])
    total_tokens = point.batch * point.context
    chunk = point.chunk or total_tokens
    seconds, done = 0.0, 0
    while done < total_tokens:
        tokens = min(chunk, total_tokens - done)
        sequences = max(1, math.ceil(tokens / point.context))
        reached = (done % point.context) + min(tokens, point.context)
        batch = StepBatch(prefill_tokens=tokens, prefill_context=reached, prefill_sequences=sequences)
        seconds += steps.cycle_seconds([batch])
        done += tokens
    return total_tokens / seconds


def compare(engine_overrides: dict[str, EngineProfile] | None = None) -> list[Comparison]:
    """Model vs measurement for every calibration point."""
    overrides = engine_overrides or {}
    return [
        Comparison(point=p, predicted_tok_s=predict_point(p, overrides.get(p.engine))) for p in calibration_points()
    ]
