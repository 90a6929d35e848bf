"""`gateway pull` and the weights check of `gateway deploy` (issue 25), against a local server
standing in for the Hugging Face Hub (tests/fake_hub.py; the hub cannot be reached here), with
the real huggingface_hub: the token from HF_TOKEN only, a dropped connection resumed with a
Range request, a failed pull completed by running it again, and on a real Ray cluster one
download per node and a deploy refused while a node lacks the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub
from typer.testing import CliRunner

from deploy.cli import app
from deploy.plan import shipped_plan
from deploy.weights import missing

REPO = "acme/tiny-model"
TOKEN = "hf_test_token_0123456789"
ROOT = Path(__file__).parents[2]
# huggingface_hub reads a download in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE) and resumes from
# the last whole chunk: the second shard is larger than one, to break off after the first.
CHUNK = 10 * 1024 * 1024
SHARDS = {
    "model-00001-of-00002.safetensors": os.urandom(600_000),
    "model-00002-of-00002.safetensors": os.urandom(CHUNK + 500_000),
}
FIRST, SECOND = sorted(SHARDS)
FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors.index.json": json.dumps({"weight_map": {"layers.0": FIRST, "layers.1": SECOND}}).encode(),
    **SHARDS,
    "original/consolidated.00.pth": b"not wanted",
}


def hub_plan(tmp_path: Path) -> Path:
    data = yaml.safe_load(shipped_plan("cpu-demo").read_text())
    data["model"]["source"] = REPO
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(REPO, dict(FILES), token=TOKEN).running() as running:
        yield running


def pull(hub: FakeHub, tmp_path: Path, *, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """`gateway pull --plan P` as a process of its own, its environment as a user's shell would set it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.endpoint, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    if token is not None:
        env["HF_TOKEN"] = token
    command = [sys.executable, "-m", "deploy.cli", "pull", "--plan", str(hub_plan(tmp_path))]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)


def authorizations(hub: FakeHub) -> set[str | None]:
    """The Authorization headers the model's routes received (huggingface_hub asks other routes too)."""
    return {auth for _, path, _, auth in hub.requests if REPO in path}


def snapshot(tmp_path: Path) -> Path:
    folders = list((tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots").iterdir())
    assert len(folders) == 1
    return folders[0]


def test_pull_downloads_with_the_environment_token_and_resumes_a_dropped_file(hub: FakeHub, tmp_path: Path) -> None:
    big = SECOND
    hub.drops[big] = CHUNK + 100_000  # the first GET breaks off after one chunk and a bit
    done = pull(hub, tmp_path)
    assert done.returncode == 0, done.stderr
    folder = snapshot(tmp_path)
    for name, data in SHARDS.items():
        assert (folder / name).read_bytes() == data
    assert not (folder / "original").exists()  # Meta's duplicate checkpoint is left out
    assert hub.ranges(big) == [None, f"bytes={CHUNK}-"]  # resumed after the chunk it had, not started again
    assert authorizations(hub) == {f"Bearer {TOKEN}"}
    assert TOKEN not in done.stdout + done.stderr
    assert "11.0 MB of 11.0 MB" in done.stderr and "Download complete" not in done.stderr  # progress, once
    assert missing(REPO, cache_dir=str(tmp_path / "hf" / "hub")) is None


def test_the_token_comes_from_the_environment_only(hub: FakeHub, tmp_path: Path) -> None:
    """A token saved by `hf auth login` is not used: one place to set it, the same on every node."""
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text(TOKEN)
    refused = pull(hub, tmp_path, token=None)
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
    assert "without a token" in refused.stderr
    assert authorizations(hub) == {None}
    assert missing(REPO, cache_dir=str(tmp_path / "hf" / "hub")) is not None


def test_a_failed_pull_is_completed_by_running_it_again(hub: FakeHub, tmp_path: Path) -> None:
    first, second = FIRST, SECOND
    hub.broken.add(second)
    failed = pull(hub, tmp_path)
    assert failed.returncode == 1 and "500" in failed.stderr
    assert missing(REPO, cache_dir=str(tmp_path / "hf" / "hub")) == f"1 of 2 weight shards missing ({second}, ...)"
    hub.broken.clear()
    assert pull(hub, tmp_path).returncode == 0
    assert len(hub.ranges(first)) == 1 and len(hub.ranges(second)) == 1  # the first shard was not fetched again
    assert missing(REPO, cache_dir=str(tmp_path / "hf" / "hub")) is None


# ---- on a real Ray cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_with_a_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeHub, Path]]:
    """A local Ray head whose workers see the fake hub and their own HF cache (as a node's
    `ray start` environment gives them), the hub serving the model."""
    ray = pytest.importorskip("ray")
    from deploy.stack import start_local_head

    home = tmp_path_factory.mktemp("node-hf")
    with FakeHub(REPO, dict(FILES)).running() as hub:
        saved = {k: os.environ.get(k) for k in ("HF_HOME", "HF_ENDPOINT", "HF_TOKEN")}
        os.environ |= {"HF_HOME": str(home), "HF_ENDPOINT": hub.endpoint}
        os.environ.pop("HF_TOKEN", None)
        try:
            start_local_head(num_cpus=1)
            yield hub, home
        finally:
            ray.shutdown()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.mark.ray
def test_deploy_refuses_missing_weights_and_pull_fetches_them_on_each_node(
    cluster_with_a_hub: tuple[FakeHub, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy import stack
    from deploy.weights import check_on_cluster

    hub, home = cluster_with_a_hub
    monkeypatch.setattr(stack.RayConnection, "__enter__", lambda self: self)  # this process is connected
    monkeypatch.setattr(stack.RayConnection, "__exit__", lambda self, *exc: None)
    plan = hub_plan(tmp_path)
    runner = CliRunner(env={"COLUMNS": "240"})
    refused = runner.invoke(app, ["deploy", str(plan), "--address", "127.0.0.1:6379", "--timeout", "30"])
    assert refused.exit_code == 1, refused.output
    assert "not downloaded" in refused.output and f"gateway pull --plan {plan}" in refused.output
    assert "nothing was deployed" in refused.output
    assert not [r for r in hub.requests if "/resolve/" in r[1]]  # the check never downloads

    pulled = runner.invoke(app, ["pull", "--plan", str(plan), "--address", "127.0.0.1:6379"])
    assert pulled.exit_code == 0, pulled.output
    assert "127.0.0.1:" in pulled.output and str(home) in pulled.output  # the node's own cache
    assert check_on_cluster(REPO) == {}


def test_every_hub_model_of_a_plan_is_pulled_once() -> None:
    from deploy.plan import load_plan
    from deploy.weights import hub_ids

    assert hub_ids(load_plan(shipped_plan("two-models.dgx-spark-pair"))) == [
        "openai/gpt-oss-20b",
        "meta-llama/Llama-3.1-8B-Instruct",
    ]
    assert hub_ids(load_plan(shipped_plan("cpu-two-models"))) == []  # demo models are made, not pulled
