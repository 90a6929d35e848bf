"""The live run's parts that need no engines: killing a server by its URL's port, and per-class figures."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from deploy.ports import free_port
from tuner.bench.client import RequestRecord
from tuner.policy_eval.live import kill_engine, sample_of
from tuner.policy_eval.scenarios import LIVE_SLO


def test_the_server_behind_a_url_is_killed_with_its_children() -> None:
    port = free_port()
    # A listening parent with a child, like vLLM's API server and its engine core.
    code = (
        "import socket, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print(child.pid, flush=True); time.sleep(60)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(server.stdout.readline())
        killed = kill_engine(f"http://127.0.0.1:{port}/v1")
        assert set(killed) == {server.pid, child}
        assert not psutil.pid_exists(server.pid) and not psutil.pid_exists(child)
    finally:
        server.kill()
        server.wait()
    with pytest.raises(RuntimeError, match="no process listens"):
        kill_engine(f"http://127.0.0.1:{port}/v1")


def record(stream: str, ttft: float, latency: float, tokens: int, error: str | None = None) -> RequestRecord:
    now = time.perf_counter()
    return RequestRecord(
        stream=stream, start=now, end=now + latency, ttft=ttft, latency=latency, output_tokens=tokens, error_type=error
    )


def test_each_class_is_judged_by_its_own_slo() -> None:
    records = [
        record("interactive", 0.1, 0.5, 21),  # 20 ms TPOT: good
        record("interactive", 0.4, 0.9, 21),  # TTFT over 250 ms: not good
        record("batch", 5.0, 10.0, 65),  # batch SLO is lenient: good
        record("batch", 0.0, 0.0, 0, error="stream_cut"),
    ]
    sample = sample_of(records, 10.0, LIVE_SLO)
    assert sample["interactive_goodput_req_s"] == pytest.approx(0.1)
    assert sample["batch_goodput_req_s"] == pytest.approx(0.1)
    assert sample["goodput_req_s"] == pytest.approx(0.2)
    assert sample["batch_output_tok_s"] == pytest.approx(6.5)
    assert sample["failed"] == 1.0
    assert sample["interactive_ttft_p50_ms"] == pytest.approx(250.0)


def test_a_killed_process_left_a_zombie_counts_as_gone() -> None:
    from tuner.policy_eval.live import _running

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process = psutil.Process(child.pid)
    assert _running(process)
    child.kill()
    deadline = time.monotonic() + 5
    while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:  # not reaped: we do not wait()
        time.sleep(0.05)
    assert process.status() == psutil.STATUS_ZOMBIE and not _running(process)
    child.wait()
    assert not _running(process)
