"""Serve's health check of an engine replica (deploy/engine_server.py): a server that does not
answer /health is reported unhealthy only when its main thread has neither run nor waited to run
since the last check. A generating CPU engine left its /health unanswered for 20 s three checks in
a row in a 30-minute soak and Serve restarted the working engine; a starved server waits in the run
queue, a stopped (SIGSTOP) or deadlocked one does not. Real processes stand in for the server here:
one that spins, one starved of CPU, one stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.engine_server import RUNNABLE_S, EngineServer, ServerProgress, server_run_seconds
from deploy.plan import Replica
from deploy.ports import free_port

SPIN = "while True: pass"


def test_progress_is_run_time_since_the_last_reading() -> None:
    readings = iter([10.0, 10.0, 10.0 + RUNNABLE_S, 12.0, 12.0])
    progress = ServerProgress(lambda: next(readings))
    assert [progress.advanced() for _ in range(4)] == [False, True, True, False]


@pytest.fixture
def spinner() -> Iterator[subprocess.Popen[bytes]]:
    """A process that computes, like a busy server; stopped and killed after the test."""
    process = subprocess.Popen([sys.executable, "-c", SPIN])
    yield process
    process.kill()
    process.wait(timeout=30)


def wait_for_cpu(read: Any, seconds: float, deadline_s: float = 120.0) -> None:
    """Until the process has used `seconds` of CPU (a loaded machine gives it less than a core)."""
    start, end = read(), time.monotonic() + deadline_s
    while read() - start < seconds:
        assert time.monotonic() < end, "the spinning process got no CPU"
        time.sleep(0.05)


def test_a_computing_process_advances_and_a_stopped_one_does_not(spinner: subprocess.Popen[bytes]) -> None:
    read = server_run_seconds(spinner.pid)
    progress = ServerProgress(read)
    wait_for_cpu(read, 2 * RUNNABLE_S)
    assert progress.advanced()
    spinner.send_signal(signal.SIGSTOP)
    time.sleep(0.5)  # a stop takes effect at once; what it had run before is read now
    progress.advanced()
    time.sleep(1.0)
    assert not progress.advanced()
    spinner.send_signal(signal.SIGCONT)
    wait_for_cpu(read, 2 * RUNNABLE_S)
    assert progress.advanced()


def pinned(cpu: int, nice: int) -> subprocess.Popen[str]:
    """A process that spins on CPU `cpu` at `nice`; it prints a line once both are set."""
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nos.nice({nice})\nprint(flush=True)\n{SPIN}\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "\n", f"the spinner exited ({process.wait()})"
    return process


def cpu_seconds(pid: int) -> float:
    """The process's CPU time alone (utime + stime from /proc/PID/stat), which a starved server
    barely adds to."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_starved_process_advances_though_it_barely_runs() -> None:
    """Pinned to one CPU at nice 19 beside two normal spinners, it gets little CPU time but waits in
    the run queue, as a CPU engine's starved server does (its CPU time alone read as 'stuck')."""
    cpu = min(os.sched_getaffinity(0))
    processes = [pinned(cpu, nice=0) for _ in range(2)]
    try:
        starved = pinned(cpu, nice=19)
        processes.append(starved)
        read = server_run_seconds(starved.pid)
        progress, cpu_before, run_before = ServerProgress(read), cpu_seconds(starved.pid), read()
        time.sleep(1.0)
        ran, used_cpu = read() - run_before, cpu_seconds(starved.pid) - cpu_before
        assert progress.advanced()
        assert used_cpu < ran / 2, f"starved, it ran or waited {ran:.2f} s but used {used_cpu:.2f} s of CPU"
        starved.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        progress.advanced()
        time.sleep(1.0)
        assert not progress.advanced()
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=30)


def test_a_gone_process_reads_as_no_run_time() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    read = server_run_seconds(process.pid)
    process.wait(timeout=60)
    assert read() == 0.0


def server_over(process: subprocess.Popen[bytes]) -> Any:
    """An EngineServer whose 'engine' is `process` and whose /health port refuses connections
    (only the health check is under test: no vLLM is started)."""
    server = object.__new__(EngineServer)
    server.replica = Replica(name="batch", traffic_class="batch")
    server.host, server.port = "127.0.0.1", free_port("127.0.0.1")
    server._process = process
    server._session = None
    server._progress = ServerProgress(server_run_seconds(process.pid))
    return server


async def test_an_unanswered_health_check_passes_while_the_server_computes(
    spinner: subprocess.Popen[bytes],
) -> None:
    server = server_over(spinner)
    wait_for_cpu(server_run_seconds(spinner.pid), 2 * RUNNABLE_S)
    try:
        await server.check_health()  # /health refused, but the process computes
        spinner.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        server._progress.advanced()
        time.sleep(1.0)
        with pytest.raises(RuntimeError, match="neither runs nor waits to run"):
            await server.check_health()
    finally:
        spinner.send_signal(signal.SIGCONT)
        if server._session is not None:
            await server._session.close()


async def test_an_exited_engine_is_unhealthy() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server = server_over(process)
    process.wait(timeout=60)
    with pytest.raises(RuntimeError, match="exited with code 3"):
        await server.check_health()
