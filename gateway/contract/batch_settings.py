"""Settings of the OpenAI Batch API (gateway/batches/): where its state lives and how hard it may
push the batch replica. Part of GatewaySettings, so a ServingPlan's `gateway.batches` sets it.

Pure contract (no I/O): `resolve_data_dir` only computes a path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

DATA_DIR_ENV = "TANDEM_DATA_DIR"

# OpenAI's own limits for a batch input file (platform.openai.com/docs/guides/batch): 200 MB and
# 50,000 requests. Kept as defaults so a file that OpenAI accepts is accepted here too.
OPENAI_MAX_FILE_BYTES = 200 * 1024 * 1024
OPENAI_MAX_LINES = 50_000


class BatchSettings(BaseModel):
    """Files and batches: storage, limits and the dispatch concurrency of batch lines."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path | None = Field(
        None,
        description="SQLite state and files. Unset: $TANDEM_DATA_DIR, else $XDG_DATA_HOME/tandem, else "
        "~/.local/share/tandem (on the machine the gateway runs on: the head node on a cluster).",
    )
    max_file_bytes: int = Field(OPENAI_MAX_FILE_BYTES, ge=1, description="Larger uploads: 413, refused early.")
    max_file_lines: int = Field(OPENAI_MAX_LINES, ge=1, description="Input files with more lines: 400.")
    per_batch_concurrency: int = Field(
        64, ge=1, description="Lines of one batch in flight at once (through the batch class's gate)."
    )
    global_concurrency: int = Field(
        96,
        ge=1,
        description="Lines of all batches in flight at once; keep it under the batch class's max_concurrency "
        "so live batch clients still get slots.",
    )
    completion_window_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="How long the '24h' completion window lasts; lines not done by then are reported expired.",
    )
    max_validation_errors: int = Field(100, ge=1, description="Validation errors kept in a failed batch's `errors`.")

    @model_validator(mode="after")
    def _per_batch_within_global(self) -> BatchSettings:
        if self.per_batch_concurrency > self.global_concurrency:
            raise ValueError(
                f"per_batch_concurrency ({self.per_batch_concurrency}) must not exceed "
                f"global_concurrency ({self.global_concurrency})"
            )
        return self


def resolve_data_dir(settings: BatchSettings, environ: Mapping[str, str] = os.environ) -> Path:
    """The data directory: the plan's `data_dir`, else $TANDEM_DATA_DIR, else the XDG data home
    (freedesktop.org's base-directory spec: $XDG_DATA_HOME, default ~/.local/share) / tandem."""
    if settings.data_dir is not None:
        return settings.data_dir.expanduser()
    if environ.get(DATA_DIR_ENV):
        return Path(environ[DATA_DIR_ENV]).expanduser()
    xdg = environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "tandem"
