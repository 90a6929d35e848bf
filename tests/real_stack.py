"""The real stacks the suite runs against, one at a time, started as a user starts them.

`gateway_up(plan, workdir)` runs `gateway up` (the command behind `make up`) on a free port: real
Ray, two real vLLM engines, the real gateway. `two_node_deploy(plan, workdir)` starts two Ray nodes
on this machine (tests/two_node_cluster.py) and runs `gateway deploy --address` onto them, as a
team does on its two boxes. `Stacks` keeps at most one running (tests/conftest.py makes it the
session's) and picks the way by the plan's node count. A start that fails raises StackStartFailed
with the commands' own output; stopping checks that nothing was left behind.
"""

from __future__ import annotations

import contextlib
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
import yaml

from deploy.plan import ServingPlan, load_plan
from deploy.ports import free_port

STACK_START_TIMEOUT_S = 900
STACK_STOP_TIMEOUT_S = 90
ENGINE_LINE = re.compile(r"engine (\S+): (http://\S+/v1)")
TWO_NODE_PLAN = Path(__file__).parent / "plans" / "cpu-two-nodes.yaml"
TWO_NODE_CLUSTER = Path(__file__).parent / "two_node_cluster.py"


@dataclass(frozen=True)
class CpuStack:
    base_url: str
    model: str
    replica_urls: dict[str, str]
    plan: ServingPlan
    log: Path


def _wait_for_welcome(process: subprocess.Popen, log: Path) -> str:
    """The log once `gateway up` serves. No fixed start-up budget of its own beyond a generous
    bound: the command reports its own failures (and exits), which are shown whole."""
    deadline = time.monotonic() + STACK_START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Press Ctrl-C to stop." in text:
            return text
        if process.poll() is not None:
            raise StackStartFailed(f"`gateway up` exited with {process.returncode} before serving:\n{text[-6000:]}")
        time.sleep(1)
    raise StackStartFailed(f"`gateway up` did not serve within {STACK_START_TIMEOUT_S} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:]


class StackStartFailed(Exception):
    """`gateway up` did not come up; the message holds its own output, the real cause."""


def _stop_and_check_nothing_left(process: subprocess.Popen, log: Path) -> None:
    """Ctrl-C the command and check it stopped cleanly with nothing left behind. A command that
    already exited (a failed start) has nothing to stop; its children are still looked for."""
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STACK_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"`gateway up` did not stop within {STACK_STOP_TIMEOUT_S} s of Ctrl-C:\n{_tail(log)}")
    _, alive = psutil.wait_procs(tree, timeout=15)
    leftovers = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in alive if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    assert process.returncode == 0, _tail(log, 3000)
    assert not leftovers, "processes left behind after Ctrl-C:\n" + "\n".join(leftovers)


@contextmanager
def gateway_up(plan: Path, workdir: Path) -> Iterator[CpuStack]:
    """`gateway up --plan PLAN` in a subprocess on a free port, until the block ends. A start that
    fails raises StackStartFailed with the command's own output; stopping never hides it."""
    port = free_port()
    log = workdir / "gateway-up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "up", "--plan", str(plan), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200", "TANDEM_DATA_DIR": str(workdir / "batch-data")},
        )
    try:
        text = _wait_for_welcome(process, log)
    except BaseException:
        with contextlib.suppress(BaseException):  # the start failure is the error to report
            _stop_and_check_nothing_left(process, log)
        raise
    try:
        serving_plan = load_plan(plan)
        yield CpuStack(
            base_url=f"http://127.0.0.1:{port}/v1",
            model=serving_plan.models[0].name,
            replica_urls=dict(ENGINE_LINE.findall(text)),
            plan=serving_plan,
            log=log,
        )
    finally:
        _stop_and_check_nothing_left(process, log)


def _plan_on_port(plan: Path, port: int, workdir: Path) -> Path:
    """A copy of the plan whose gateway listens on `port` (`gateway deploy` has no --port)."""
    data = yaml.safe_load(plan.read_text())
    data["gateway"] = {**data.get("gateway", {}), "port": port}
    copy = workdir / plan.name
    copy.write_text(yaml.safe_dump(data))
    return copy


def _run_cli(args: list[str], log: Path, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    with log.open("a") as out:
        out.write(f"\n$ gateway {' '.join(args)}\n")
        out.flush()
        return subprocess.run(
            [sys.executable, "-m", "deploy.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout_s,
        )


@contextmanager
def two_node_deploy(plan: Path, workdir: Path) -> Iterator[CpuStack]:
    """Two Ray nodes here, `gateway deploy PLAN --address` onto them, until the block ends; then
    `gateway down` and both nodes stopped, with nothing left behind."""
    port = free_port()
    log = workdir / "two-nodes.log"
    env = {**os.environ, "COLUMNS": "200", "TANDEM_DATA_DIR": str(workdir / "batch-data")}
    with log.open("w") as out:
        cluster = subprocess.Popen(
            [sys.executable, str(TWO_NODE_CLUSTER), "--cpus", "2"],
            stdout=subprocess.PIPE,
            stderr=out,
            env=env,
            text=True,
        )
    try:
        assert cluster.stdout is not None
        line = cluster.stdout.readline()  # blocks until both nodes are up, or the script ends
        if not line.startswith("address="):
            raise StackStartFailed(f"two Ray nodes did not start ({cluster.wait()}):\n{_tail(log)}")
        address = line.strip().removeprefix("address=")
        deployed = _run_cli(
            ["deploy", str(_plan_on_port(plan, port, workdir)), "--address", address], log, env, STACK_START_TIMEOUT_S
        )
        if deployed.returncode != 0:
            raise StackStartFailed(f"`gateway deploy` exited with {deployed.returncode}:\n{_tail(log)}")
        text = log.read_text(errors="replace")
        try:
            yield CpuStack(
                base_url=f"http://127.0.0.1:{port}/v1",
                model=load_plan(plan).models[0].name,
                replica_urls=dict(ENGINE_LINE.findall(text)),
                plan=load_plan(plan),
                log=log,
            )
        finally:
            down = _run_cli(["down", "--address", address], log, env, STACK_STOP_TIMEOUT_S)
            assert down.returncode == 0, _tail(log, 3000)
    finally:
        _stop_and_check_nothing_left(cluster, log)


class Stacks:
    """The real stacks of a session, at most one running at a time: two full stacks on two cores
    starve each other (a gateway that took minutes to start, engines that crawl), and no test needs
    both at once. Asking for another plan stops the running stack first; tests are ordered by the
    stack they use (pytest_collection_modifyitems) so each starts once. A start that failed is
    reported again, with its cause, to every test that asks for that stack, not retried."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._running: tuple[Path, CpuStack, contextlib.ExitStack] | None = None
        self._failed: dict[Path, str] = {}

    def get(self, plan: Path) -> CpuStack:
        if plan in self._failed:
            pytest.fail(self._failed[plan], pytrace=False)
        if self._running is not None and self._running[0] == plan:
            return self._running[1]
        self.stop()
        exits = contextlib.ExitStack()
        workdir = self._workdir / plan.stem
        workdir.mkdir(exist_ok=True)
        try:
            start = two_node_deploy if load_plan(plan).cluster.nodes > 1 else gateway_up
            stack = exits.enter_context(start(plan, workdir))
        except StackStartFailed as exc:
            self._failed[plan] = str(exc)
            pytest.fail(str(exc), pytrace=False)
        self._running = (plan, stack, exits)
        return stack

    def stop(self) -> None:
        if self._running is not None:
            _, _, exits = self._running
            self._running = None
            exits.close()
