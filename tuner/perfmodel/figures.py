"""Writing a matplotlib figure the way every `tuner` plot does: laid out, its folder made, closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """Lay out, write `path` (making its folder), and free the figure (plots run in loops)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
