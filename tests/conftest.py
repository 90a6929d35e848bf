"""Session fixtures shared across the suite: the real CPU stacks.

`cpu_stack` runs `gateway up` (the command behind `make up`) in a subprocess, exactly as a user
would, on free ports: real Ray, two real vLLM engines (TP=2 and PP=2 of the demo model on the CPU;
the one-GPU plan where a GPU answers; `TANDEM_TEST_PLAN` names another plan), the real gateway.
`two_node_stack` is the Spark pair's path: two Ray nodes on this machine and `gateway deploy
--address` onto them, each replica holding a bundle on both nodes. Both come from `Stacks`, which
runs one stack at a time, each started once per session on first use (a few minutes here);
stopping a stack checks that nothing was left behind, and a stack that fails to start reports the
commands' own output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_stack import TWO_NODE_PLAN, CpuStack, Stacks

from deploy.plan import default_plan
from gateway.contract.batch_settings import DATA_DIR_ENV

TEST_PLAN_ENV = "TANDEM_TEST_PLAN"
"""A plan for the default stack instead of the embedded default (the GPU proving ground's model)."""


@pytest.fixture(scope="session", autouse=True)
def batch_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every gateway the tests start keeps its Batch API state here unless its config names a
    directory: never in the user's own (~/.local/share/tandem), whose batches it would resume."""
    path = tmp_path_factory.mktemp("batch-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_ENV, str(path))
        yield path


@pytest.fixture(autouse=True)
def logging_as_found() -> Iterator[None]:
    """Each test leaves logging as it found it: `gateway serve` run in-process sets the root logger
    to INFO with a handler of its own, after which every later test's per-request lines would pile
    up in pytest's log capture (and in the memory tests' counts)."""
    loggers = [logging.getLogger(name) for name in (None, "tandem")]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    yield
    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


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
    """The default stack (`make up`): TP=2 interactive + PP=2 batch on one node."""
    plan = os.environ.get(TEST_PLAN_ENV)
    return stacks.get(Path(plan).resolve() if plan else default_plan())


@pytest.fixture
def two_node_stack(stacks: Stacks) -> CpuStack:
    """The Spark pair's path on two Ray nodes here: `gateway deploy --address`, STRICT_SPREAD replicas."""
    return stacks.get(TWO_NODE_PLAN)


def _stack_order(item: pytest.Item) -> int:
    """0: no real stack; 1: the default stack; 2: the two-node stack; 3: the two-model stack."""
    names = set(getattr(item, "fixturenames", ()))
    if "two_models" in names:
        return 3
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get("endpoint") if callspec is not None else None
    if "two_node_stack" in names or param == "stack-two-nodes":
        return 2
    if "cpu_stack" in names or param == "stack":
        return 1
    return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that need no stack first, then those on each stack together (stable sort:
    the file order holds inside each group), so each stack starts once and only one runs."""
    items.sort(key=_stack_order)
