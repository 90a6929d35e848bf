"""The layering rule of docs/architecture.md, checked on the source: imports run one way, down the
layers, and no two modules import each other, directly or around a loop.

Every import statement counts, wherever it sits (module level, inside a function, under
TYPE_CHECKING): a lazy import hides a cycle from Python's import machinery, not from a reader.
The layers are data (LAYERS below); a module belongs to the layer with its longest matching prefix.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "deploy", "tuner", "benchmarks")

# Bottom to top. A module may import its own layer and the layers below it, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # 1. contract: the directory gateway/contract/, plan/settings types and the pure rules (no I/O),
    #    which the gateway runs per request and the simulation calls with simulated numbers.
    ("contract", ("gateway.contract",)),
    # 2. gateway runtime: the ASGI app, proxy, backends, metrics, auth, `gateway serve`.
    ("gateway", ("gateway",)),
    # 3. deploy: the ServingPlan, the Ray Serve builder, engine servers, stack lifecycle and the
    #    CLI commands that start stacks (`gateway up/deploy/status/down`).
    ("deploy", ("deploy",)),
    # 4. tuner: bench, perfmodel, optimize, the routing-policy evaluation.
    ("tuner", ("tuner",)),
    # 5. scripts on top: nothing in the packages (or the tests) imports them.
    ("benchmarks", ("benchmarks",)),
)

# What the contract layer may not import: a clock, the network, processes, threads, an event loop or
# a web framework. Its functions take the time and the load as arguments, so the simulation can call
# them with simulated ones. (Reading a config file or an environment variable is allowed: settings.)
CONTRACT_FORBIDDEN = (
    "time",
    "asyncio",
    "socket",
    "subprocess",
    "threading",
    "multiprocessing",
    "httpx",
    "aiohttp",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
)

# Packages the gateway layers (1 and 2) must not import: a gateway-only install has none of them.
HEAVY = ("ray", "vllm", "torch", "transformers", "optuna", "pandas", "matplotlib", "numpy", "scipy")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the longest prefix that is a module of this tree), or a third-party name
    line: int
    internal: bool
    lazy: bool = False  # inside a function: runs on the first call, not at import


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def tree_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of this tree that `import name` loads last: the longest prefix that is one."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _import_nodes(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it runs only when a function is called (lazy)."""

    def walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, lazy
            yield from walk(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    yield from walk(tree, False)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    is_package = path.name == "__init__.py"
    for node, lazy in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for name in dict.fromkeys(names):
            target = _resolve(name, modules)
            if target is not None:
                yield Import(module, target, node.lineno, internal=True, lazy=lazy)
            elif name.split(".")[0] not in PACKAGES:
                yield Import(module, name.split(".")[0], node.lineno, internal=False, lazy=lazy)
            else:  # a module of this tree that does not exist: the import would fail
                yield Import(module, name, node.lineno, internal=True, lazy=lazy)


def all_imports() -> list[Import]:
    modules = tree_modules()
    found = [imp for module, path in modules.items() for imp in imports_of(module, path, modules)]
    return list(dict.fromkeys(found))


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    assert best is not None, f"{module} is in no layer: add its prefix to LAYERS"
    return best[1]


def upward_imports(imports: list[Import]) -> list[str]:
    return [
        f"{imp.source}:{imp.line} ({LAYERS[layer_of(imp.source)][0]}) imports {imp.target} "
        f"({LAYERS[layer_of(imp.target)][0]})"
        for imp in imports
        if imp.internal and layer_of(imp.target) > layer_of(imp.source)
    ]


def cycles(imports: list[Import]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each a cycle or a
    knot of them; a module importing itself counts too."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.internal:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in tree_modules():
        layer_of(module)


def test_imports_only_run_down_the_layers() -> None:
    upward = upward_imports(all_imports())
    assert not upward, "imports up the layers (docs/architecture.md):\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    found = cycles(all_imports())
    assert not found, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_gateway_layers_import_no_heavy_package() -> None:
    """What a gateway-only install lacks (tests/test_gateway_install.py runs one for real). A lazy
    import is allowed: the Serve-handle backend imports Ray when it is used, inside a Ray cluster."""
    heavy = [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in all_imports()
        if not imp.internal and not imp.lazy and imp.target in HEAVY and layer_of(imp.source) <= 1
    ]
    assert not heavy, "\n".join(heavy)


def test_the_contract_has_no_clock_network_or_concurrency() -> None:
    found = [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in all_imports()
        if not imp.internal and layer_of(imp.source) == 0 and imp.target in CONTRACT_FORBIDDEN
    ]
    assert not found, "\n".join(found)


def test_tests_do_not_import_benchmarks() -> None:
    """Benchmarks are scripts: what a test needs lives in the packages."""
    modules = tree_modules()
    found = [
        f"{path.relative_to(ROOT)}:{imp.line}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for imp in imports_of(module_name(path), path, modules)
        if imp.target.split(".")[0] == "benchmarks"
    ]
    assert not found, "tests importing benchmarks/:\n" + "\n".join(found)


# The checker itself, on small made-up graphs: each rule must be able to fail.


def _imp(source: str, target: str) -> Import:
    return Import(source, target, 1, internal=True)


def test_the_checker_finds_a_cycle_and_a_knot() -> None:
    assert cycles(
        [
            _imp("gateway.contract.config", "gateway.contract.router"),
            _imp("gateway.contract.router", "gateway.contract.config"),
        ]
    ) == [["gateway.contract.config", "gateway.contract.router"]]
    knot = [_imp("tuner.a", "tuner.b"), _imp("tuner.b", "tuner.c"), _imp("tuner.c", "tuner.a"), _imp("tuner.c", "x")]
    assert cycles(knot) == [["tuner.a", "tuner.b", "tuner.c"]]
    assert cycles([_imp("tuner.a", "tuner.a")]) == [["tuner.a"]]
    assert cycles([_imp("tuner.a", "tuner.b"), _imp("tuner.a", "gateway.contract.config")]) == []


@pytest.mark.parametrize(
    ("source", "target", "upward"),
    [
        ("gateway.cli", "deploy.stack", True),
        ("gateway.contract.router", "gateway.proxy", True),  # the contract under the runtime, though both in gateway/
        ("deploy.plan", "tuner.perfmodel", True),
        ("tuner.bench.runner", "benchmarks.vllm_client", True),
        ("deploy.plan", "gateway.contract.config", False),
        ("gateway.proxy", "gateway.contract.router", False),
        ("benchmarks.routing", "tuner.bench", False),
    ],
)
def test_the_checker_judges_direction(source: str, target: str, upward: bool) -> None:
    assert bool(upward_imports([_imp(source, target)])) is upward


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from gateway.proxy import X\n"
        "def f():\n    from deploy.stack import running_stack\n"
        "from .classify import classify\n"
    )
    path = ROOT / "gateway" / "policy.py"
    modules = {
        "gateway.proxy": path,
        "deploy.stack": path,
        "gateway.contract.classify": path,
        "gateway.contract.router": path,
    }
    fake = tmp_path / "policy.py"
    fake.write_text(source)
    found = {(i.target, i.lazy) for i in imports_of("gateway.contract.router", fake, modules) if i.internal}
    assert found == {("gateway.proxy", False), ("deploy.stack", True), ("gateway.contract.classify", False)}
