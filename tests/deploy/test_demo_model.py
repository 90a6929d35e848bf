"""The generated demo models (deploy.demo_model): two Llama shapes, each in its own cache folder,
with the same tokenizer, so one plan can serve both as two different models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.demo_model import SHAPES, ensure_demo_model
from deploy.plan import DEMO_SOURCES


def test_the_two_demo_models_differ_in_shape_and_share_the_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path))
    assert set(SHAPES) == set(DEMO_SOURCES)
    big, small = ensure_demo_model("demo"), ensure_demo_model("demo-small")
    assert big != small and big.parent == small.parent == tmp_path
    configs = [json.loads((folder / "config.json").read_text()) for folder in (big, small)]
    shapes = [(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]) for c in configs]
    assert shapes == [(256, 4, 4), (128, 2, 2)]
    assert all(c["head_dim"] == 64 for c in configs)  # the smallest vLLM's CPU attention accepts
    assert (big / "tokenizer.json").read_text() == (small / "tokenizer.json").read_text()
    assert ensure_demo_model("demo-small") == small  # made once, then found
