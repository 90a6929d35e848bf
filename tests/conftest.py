"""Session fixtures shared across the suite: the real CPU stacks.

`cpu_stack` runs `gateway up` (the command behind `make up`) in a subprocess, exactly as a user
would, on free ports: real Ray, two real vLLM engines on the CPU (TP=2 and PP=2 of the demo
model), the real gateway. `cpu_stack_handle` is the same with `data_path: handle` (ray.serve.llm
LLMServer replicas reached through Serve handles). Both come from `Stacks`, which runs one stack
at a time, each started once per session on first use (a few minutes here); stopping a stack
checks that Ctrl-C left no process behind, and a stack that fails to start reports the command's
own output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from real_stack import HANDLE_PLAN, CpuStack, Stacks

from deploy.plan import default_plan
from gateway.batch_settings import DATA_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def batch_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every gateway the tests start keeps its Batch API state here unless its config names a
    directory: never in the user's own (~/.local/share/tandem), whose batches it would resume."""
    path = tmp_path_factory.mktemp("batch-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_ENV, str(path))
        yield path


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    """The session's real stacks, one at a time; stopped (and checked) at the end."""
    stacks = Stacks(tmp_path_factory.mktemp("stacks"))
    try:
        yield stacks
    finally:
        stacks.stop()


@pytest.fixture
def cpu_stack(stacks: Stacks) -> CpuStack:
    """The default stack (`make up`): the http data path, TP=2 interactive + PP=2 batch."""
    return stacks.get(default_plan())


@pytest.fixture
def cpu_stack_handle(stacks: Stacks) -> CpuStack:
    """The handle data path: ray.serve.llm LLMServer replicas behind Serve handles."""
    return stacks.get(HANDLE_PLAN)


def _stack_order(item: pytest.Item) -> int:
    """0: no real stack; 1: the default (http) stack; 2: the handle stack."""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get("endpoint") if callspec is not None else None
    if "cpu_stack_handle" in names or param == "stack-handle":
        return 2
    if "cpu_stack" in names or param == "stack":
        return 1
    return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that need no stack first, then those on each stack together (stable sort:
    the file order holds inside each group), so each stack starts once and only one runs."""
    items.sort(key=_stack_order)
