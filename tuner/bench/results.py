"""Typed results and their JSON file: what the tuner consumes and what people compare later.

A results file is a ``ResultSet``: the schema version, the client that measured, and one
``BenchResult`` per run (a sweep has several), each carrying its full configuration.
Bump ``SCHEMA_VERSION`` on any change that an old reader would misread.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, Field, ValidationError

from tuner.bench.config import BenchConfig, ClosedLoop
from tuner.bench.metrics import Metrics

SCHEMA_VERSION: Final = 1  # Final: typed Literal[1], the one version this reader knows
CLIENT_NAME = "tandem-bench"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


class ClientInfo(BaseModel):
    name: str = CLIENT_NAME
    version: str = Field(default_factory=lambda: _package_version("tandem"))
    aiohttp: str = Field(default_factory=lambda: _package_version("aiohttp"))
    python: str = Field(default_factory=platform.python_version)
    host: str = Field(default_factory=platform.node)


class WarmupSummary(BaseModel):
    requests: int
    failed: int


class BenchResult(BaseModel):
    config: BenchConfig
    started_at: datetime
    duration_s: float
    warmup: WarmupSummary
    overall: Metrics
    by_class: dict[str, Metrics] = Field(
        default_factory=dict, description="Per traffic class, for streams that carry one"
    )
    prompt_lengths: str = Field(
        default="tokenizer",
        description="How prompt lengths were made: 'tokenizer' (a local one), 'tokenize' (exact, from the "
        "server's /tokenize) or 'usage' (a mean calibrated from usage; right on average only)",
    )

    @property
    def sweep_point(self) -> tuple[Literal["concurrency", "request rate"], float] | None:
        """The load axis this run sits on, or None when several streams make it ambiguous."""
        if len(self.config.streams) != 1:
            return None
        load = self.config.streams[0].load
        if isinstance(load, ClosedLoop):
            return "concurrency", float(load.concurrency)
        return "request rate", load.request_rate


class ResultSet(BaseModel):
    schema_version: Literal[1] = SCHEMA_VERSION
    client: ClientInfo = Field(default_factory=ClientInfo)
    label: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    runs: list[BenchResult] = Field(default_factory=list)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ResultSet:
        """Read a results file; a clear ValueError for anything that is not one of ours."""
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise ValueError(
                f"{path} is not a tandem-bench results file of schema version {SCHEMA_VERSION}: "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']} at "
                f"{'.'.join(map(str, exc.errors()[0]['loc']))}"
            ) from None
