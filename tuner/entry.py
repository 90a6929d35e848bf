"""The `tuner` console script: checks that the tuner's packages are installed before building the
command, so a gateway-only install (`pip install '.[gateway]'`, which still installs the `tuner`
script) says what to install instead of failing on an import with a traceback."""

from __future__ import annotations

import importlib.util
import sys

# What `tuner`'s subcommands import at start (the tuner extra in pyproject.toml).
TUNER_PACKAGES = ("numpy", "optuna", "aiohttp", "matplotlib")


def missing_packages() -> list[str]:
    return [name for name in TUNER_PACKAGES if importlib.util.find_spec(name) is None]


def main() -> None:
    missing = missing_packages()
    if missing:
        print(
            f"error: tuner needs {', '.join(missing)}, which this install lacks (a gateway-only install runs "
            "`gateway serve` alone); install them with `make` or `pip install '.[tuner]'`",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from tuner.cli import app  # imports the subcommands' packages, checked above

    app()
