"""One log line per request (issue 25), from `gateway serve` run as a user runs it (a subprocess):
with --log-format json every line on stderr is a JSON object, the request's own carries its id,
key name (never the key), class, replica, status, time to first token, tokens and duration;
--log-level warning leaves the per-request lines out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import yaml
from fake_upstream import FakeUpstream
from gateway_support import KEYS, PUBLIC_MODEL, USER_KEY

from deploy.ports import free_port

REPO = Path(__file__).parents[2]
START_WITHIN_S = 60.0


@contextmanager
def serving(tmp_path: Path, *flags: str) -> Iterator[tuple[str, list[str]]]:
    """`gateway serve` over two fake replicas; yields its base URL and, after the block, the
    lines it wrote to stderr (the list is filled once the process has stopped)."""
    with FakeUpstream(model="up-tp").running() as tp, FakeUpstream(model="up-pp").running() as pp:
        port = free_port()
        config = tmp_path / "gateway.yaml"
        replicas = [
            {"name": "tp", "traffic_class": "interactive", "model": tp.model, "base_url": tp.base_url},
            {"name": "pp", "traffic_class": "batch", "model": pp.model, "base_url": pp.base_url},
        ]
        settings = {"port": port, "auth": KEYS, "batches": {"data_dir": str(tmp_path / "data")}}
        config.write_text(yaml.safe_dump({"model": PUBLIC_MODEL, "replicas": replicas, "settings": settings}))
        stderr = tmp_path / "stderr.log"
        with stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), *flags],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stderr=err,
            )
        lines: list[str] = []
        try:
            root = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_WITHIN_S
            while True:
                assert process.poll() is None, stderr.read_text()
                try:
                    if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "gateway serve did not start"
                time.sleep(0.2)
            yield f"{root}/v1", lines
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(30)
            lines.extend(stderr.read_text().splitlines())


def test_json_lines_carry_each_request(tmp_path: Path) -> None:
    with serving(tmp_path, "--log-format", "json", "--log-level", "info") as (base_url, lines):
        client = openai.OpenAI(base_url=base_url, api_key=USER_KEY, max_retries=0)
        stream = client.chat.completions.create(
            model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
        with stream:
            request_id = stream.response.headers["x-request-id"]
            list(stream)
        with openai.OpenAI(base_url=base_url, api_key="sk-wrong-0123456789", max_retries=0) as stranger:
            try:
                stranger.models.list()
            except openai.AuthenticationError:
                pass
    records = [json.loads(line) for line in lines]  # every line is JSON, uvicorn's own too
    mine = [r for r in records if r.get("request_id") == request_id]
    assert len(mine) == 1, lines
    line = mine[0]
    assert line["logger"] == "tandem.gateway.requests" and line["level"] == "INFO"
    assert (line["key"], line["class"], line["replica"], line["status"]) == ("user", "interactive", "tp", 200)
    assert line["completion_tokens"] == 3 and line["prompt_tokens"] > 0
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert f"request_id={request_id}" in line["message"]  # readable as text too
    assert USER_KEY not in "\n".join(lines) and "sk-wrong" not in "\n".join(lines)


def test_warning_level_leaves_request_lines_out(tmp_path: Path) -> None:
    with serving(tmp_path, "--log-level", "warning") as (base_url, lines):
        openai.OpenAI(base_url=base_url, api_key=USER_KEY, max_retries=0).chat.completions.create(
            model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    assert not [line for line in lines if "request_id=" in line]
