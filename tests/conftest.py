"""Session fixtures shared across the suite: the real CPU stack.

`cpu_stack` runs `gateway up` (the command behind `make up`) in a subprocess, exactly as a user
would, on free ports: real Ray, two real vLLM engines on the CPU (TP=2 and PP=2 of the demo
model), the real gateway. It starts once per session, on first use (about two minutes), and
its teardown checks that Ctrl-C left no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from deploy.plan import ServingPlan, load_plan, shipped_plan

STACK_START_TIMEOUT_S = 900
STACK_STOP_TIMEOUT_S = 90
ENGINE_LINE = re.compile(r"engine (\S+): (http://\S+/v1)")


@dataclass(frozen=True)
class CpuStack:
    base_url: str
    model: str
    replica_urls: dict[str, str]
    plan: ServingPlan
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture(scope="session")
def cpu_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpuStack]:
    port = free_port()
    log = tmp_path_factory.mktemp("stack") / "gateway-up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "up", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        text = _wait_for_welcome(process, log)
        yield CpuStack(
            base_url=f"http://127.0.0.1:{port}/v1",
            model=load_plan(shipped_plan("cpu-demo")).model.name,
            replica_urls=dict(ENGINE_LINE.findall(text)),
            plan=load_plan(shipped_plan("cpu-demo")),
            log=log,
        )
    finally:
        _stop_and_check_nothing_left(process, log)
