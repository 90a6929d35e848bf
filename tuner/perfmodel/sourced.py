"""A number with its provenance: every figure the model uses says where it came from.

The performance model is only as honest as its inputs, so hardware profiles, engine constants
and calibration points are made of `Figure`s rather than bare floats: a value, whether it is a
vendor's nominal rating or a measurement (or derived from others, or an assumption), and the
source a reader can check.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

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


Entry = TypeVar("Entry", bound=BaseModel)


def read_yaml(path: Path) -> dict[str, Any]:
    """Load one mapping from a data file; a malformed file names itself in the error."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping")
    return data


class NamedEntries(Generic[Entry]):
    """The entries of one data file, a mapping of name -> fields, each read as `model` with its
    name (engine builds, engine constants): the file is read once, each entry validated once."""

    def __init__(self, path: Path, model: type[Entry], kind: str) -> None:
        self._path, self._model, self._kind = path, model, kind
        self._loaded: dict[str, Entry] = {}

    @cached_property
    def _data(self) -> dict[str, Any]:
        return read_yaml(self._path)

    def names(self) -> list[str]:
        return sorted(self._data)

    def load(self, name: str) -> Entry:
        """The named entry; a name the file lacks is refused naming the ones it has."""
        if name not in self._loaded:
            if name not in self._data:
                raise ValueError(f"unknown {self._kind} {name!r}; known: {', '.join(self.names())}")
            self._loaded[name] = self._model.model_validate({"name": name, **self._data[name]})
        return self._loaded[name]
