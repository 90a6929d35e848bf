"""A number with its provenance: every figure the model uses says where it came from.

The performance model is only as honest as its inputs, so hardware profiles, engine constants
and calibration points are made of `Figure`s rather than bare floats: a value, whether it is a
vendor's nominal rating or a measurement (or derived from others, or an assumption), and the
source a reader can check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

FigureKind = Literal["nominal", "measured", "derived", "assumed", "calibrated"]

DATA_DIR = Path(__file__).parent / "data"


class Figure(BaseModel):
    """One sourced number. `kind` says how far to trust it: nominal (datasheet), measured
    (someone ran it), derived (arithmetic on other figures), calibrated (fitted to the
    single-box calibration set), assumed (no source; a stated guess)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float
    kind: FigureKind
    source: str = Field(min_length=1)
    note: str = ""


def read_yaml(path: Path) -> dict[str, Any]:
    """Load one mapping from a data file; a malformed file names itself in the error."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, nested mappings merged key by key (for `extends:`)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
