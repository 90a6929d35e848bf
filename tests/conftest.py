"""Session fixtures shared across the suite: the real CPU stack.

`cpu_stack` runs `gateway up` (the command behind `make up`) in a subprocess, exactly as a user
would, on free ports: real Ray, two real vLLM engines on the CPU (TP=2 and PP=2 of the demo
model), the real gateway. It starts once per session, on first use (about two minutes), and
its teardown checks that Ctrl-C left no process behind. `cpu_stack_handle` is the same with
`data_path: handle` (ray.serve.llm LLMServer replicas reached through Serve handles).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from deploy.plan import ServingPlan, load_plan, shipped_plan
from deploy.ports import free_port

STACK_START_TIMEOUT_S = 900
STACK_STOP_TIMEOUT_S = 90
ENGINE_LINE = re.compile(r"engine (\S+): (http://\S+/v1)")
HANDLE_PLAN = Path(__file__).parent / "plans" / "cpu-handle.yaml"


@dataclass(frozen=True)
class CpuStack:
    base_url: str
    model: str
    replica_urls: dict[str, str]
    plan: ServingPlan
    log: Path


def _wait_for_welcome(process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + STACK_START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Press Ctrl-C to stop." in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"`gateway up` exited with {process.returncode} before serving:\n{text[-4000:]}")
        time.sleep(1)
    pytest.fail(f"`gateway up` did not serve within {STACK_START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _stop_and_check_nothing_left(process: subprocess.Popen, log: Path) -> None:
    tree = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STACK_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"`gateway up` did not stop within {STACK_STOP_TIMEOUT_S} s of Ctrl-C")
    _, alive = psutil.wait_procs(tree, timeout=15)
    leftovers = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in alive if p.is_running()]
    for p in alive:
        p.kill()
    assert process.returncode == 0, log.read_text()[-3000:]
    assert not leftovers, "processes left behind after Ctrl-C:\n" + "\n".join(leftovers)


@contextmanager
def gateway_up(plan: Path, workdir: Path) -> Iterator[CpuStack]:
    """`gateway up --plan PLAN` in a subprocess on a free port, until the block ends."""
    port = free_port()
    log = workdir / "gateway-up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "up", "--plan", str(plan), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        text = _wait_for_welcome(process, log)
        serving_plan = load_plan(plan)
        yield CpuStack(
            base_url=f"http://127.0.0.1:{port}/v1",
            model=serving_plan.model.name,
            replica_urls=dict(ENGINE_LINE.findall(text)),
            plan=serving_plan,
            log=log,
        )
    finally:
        _stop_and_check_nothing_left(process, log)


@pytest.fixture(scope="session")
def cpu_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpuStack]:
    """The default stack (`make up`): the http data path, TP=2 interactive + PP=2 batch."""
    with gateway_up(shipped_plan("cpu-demo"), tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture(scope="session")
def cpu_stack_handle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpuStack]:
    """The handle data path: ray.serve.llm LLMServer replicas behind Serve handles."""
    with gateway_up(HANDLE_PLAN, tmp_path_factory.mktemp("stack-handle")) as stack:
        yield stack
