"""A plan's weights on every node that loads them (`gateway pull`), and the check `gateway deploy`
makes before it starts engines.

The download is huggingface_hub's own `snapshot_download` into the node's Hugging Face cache,
where vLLM looks for a hub id: files already complete are skipped when it runs again, and a
connection that drops mid-file resumes from the byte it reached (HTTP Range). The token is
`HF_TOKEN` from the environment of the process that downloads, never a plan field, and never
the token file of `hf auth login` (one place to look, the same on every node). On a Ray cluster
every alive node downloads for itself, one task pinned to it (NodeAffinitySchedulingStrategy):
Ray places the replicas' workers where their bundles fit, so on the Spark pair both boxes load the
model; progress comes back to the command through a small actor. A plan of several models has
each of its hub models pulled and checked in turn.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.plan import ModelSpec, ServingPlan

TOKEN_ENV = "HF_TOKEN"
IGNORE = ["original/*"]  # Meta's consolidated checkpoints beside the HF weights: vLLM reads neither
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
CHECK_TIMEOUT_S = 120.0  # a node's check reads a few files; longer means the node is not taking tasks
Report = Callable[[str, int, int], None]  # (file or phase, bytes done, bytes in all)


def hub_id(model: ModelSpec) -> str | None:
    """The model as a hub id, None for a local directory or a demo model."""
    if model.is_local_path or model.is_demo:
        return None
    return model.source


def hub_ids(plan: ServingPlan) -> list[str]:
    """The plan's models that come from the hub, each once, in the plan's order."""
    return list(dict.fromkeys(repo_id for group in plan.models if (repo_id := hub_id(group)) is not None))


def token() -> str | bool:
    """HF_TOKEN from the environment; False (send none, read no token file) without it."""
    return os.environ.get(TOKEN_ENV) or False


def download(repo_id: str, report: Report | None = None, cache_dir: str | None = None) -> Path:
    """The model's snapshot in this machine's cache, downloaded or completed as needed."""
    from huggingface_hub import snapshot_download

    options: dict[str, Any] = {}
    if report is not None:
        options["tqdm_class"] = _progress_class(report)
    folder = snapshot_download(repo_id, token=token(), ignore_patterns=IGNORE, cache_dir=cache_dir, **options)
    return Path(folder)


def missing(repo_id: str, cache_dir: str | None = None) -> str | None:
    """What this machine's cache lacks of the model (None: nothing), without the network: the
    config, then every shard its safetensors index names, else at least one weights file."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir)
    if not isinstance(config, str):
        return "not downloaded (no config.json in the Hugging Face cache)"
    snapshot = Path(config).parent
    index = snapshot / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        absent = [shard for shard in shards if not (snapshot / shard).exists()]
        return f"{len(absent)} of {len(shards)} weight shards missing ({absent[0]}, ...)" if absent else None
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in snapshot.iterdir()):
        return "no weights file in the cached snapshot"
    return None


def _progress_class(report: Report) -> type:
    """A tqdm class for snapshot_download that passes its byte counts to `report` (every 2 s
    at most, and at the end) instead of drawing bars."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    class Reporting(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # snapshot_download's two byte bars count the same bytes: keep the one written to disk
            # ("Reconstructing"), not the network's ("Downloading bytes")
            self._shown = not str(kwargs.get("desc", "")).startswith("Downloading bytes")
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # closed with the bar
            super().__init__(*args, **kwargs)
            self._reported_at = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            now = time.monotonic()
            if self._shown and self.unit == "B" and now - self._reported_at >= 2.0:
                self._reported_at = now
                report(str(self.desc), int(self.n), int(self.total or 0))
            return shown

        def close(self) -> None:
            if self._shown and self.unit == "B" and self.total:
                report(str(self.desc), int(self.n), int(self.total))
            handle = self.fp
            super().close()
            handle.close()

    return Reporting


@dataclass(frozen=True)
class NodeResult:
    node: str
    folder: str | None
    error: str | None
    seconds: float


def pull_on_cluster(repo_id: str, show: Callable[[str], None]) -> list[NodeResult]:
    """Download on every alive node of the connected cluster, one task per node, showing each
    node's progress as it comes; returns each node's result."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]

    @ray.remote(num_cpus=0)
    class Progress:
        def __init__(self) -> None:
            self.latest: dict[str, tuple[str, int, int]] = {}

        def report(self, node: str, what: str, done: int, total: int) -> None:
            self.latest[node] = (what, done, total)

        def take(self) -> dict[str, tuple[str, int, int]]:
            latest, self.latest = self.latest, {}
            return latest

    progress = Progress.remote()  # type: ignore[attr-defined]

    @ray.remote(num_cpus=0, max_retries=0)
    def pull_here(node: str) -> NodeResult:
        started = time.monotonic()
        try:
            folder = download(repo_id, lambda what, done, total: progress.report.remote(node, what, done, total))
            return NodeResult(node, str(folder), None, time.monotonic() - started)
        except Exception as exc:  # reported per node: one box's failure must not hide the other's
            return NodeResult(node, None, f"{type(exc).__name__}: {exc}", time.monotonic() - started)

    names = {n["NodeID"]: n.get("NodeManagerAddress", n["NodeID"][:8]) for n in nodes}
    pending = [
        pull_here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(
            names[node_id]
        )
        for node_id in names
    ]
    results: list[NodeResult] = []
    while pending:
        done, pending = ray.wait(pending, timeout=2.0)
        results += ray.get(done)
        for node, (what, so_far, total) in ray.get(progress.take.remote()).items():
            show(f"{node}: {describe(what, so_far, total)}")
    return results


def check_on_cluster(repo_id: str) -> dict[str, str]:
    """What each alive node of the connected cluster lacks (node address -> what), empty when
    every node holds the model."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def check_here() -> str | None:
        return missing(repo_id)

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    checks = [
        check_here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in nodes
    ]
    try:
        answers = ray.get(checks, timeout=CHECK_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise RuntimeError(f"a node did not answer the weights check within {CHECK_TIMEOUT_S:.0f} s") from None
    return {
        n.get("NodeManagerAddress", n["NodeID"][:8]): answer
        for n, answer in zip(nodes, answers, strict=True)
        if answer is not None
    }


def describe(what: str, done: int, total: int) -> str:
    """One progress line: bytes so far, of how many, and what is downloading."""
    return f"{_bytes(done)} of {_bytes(total)} ({what})"


def _bytes(count: float) -> str:
    for unit in ("B", "KB", "MB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"
