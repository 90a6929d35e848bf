"""Both co-residence sets load, each figure sourced; where both measured the same thing (an
interactive decode step beside batch decode) they agree within 10%."""

from __future__ import annotations

import pytest

from tuner.perfmodel.coresidence import CORESIDENCE_DIR, DEFAULT, load_coresidence


@pytest.mark.parametrize("name", sorted(p.stem for p in CORESIDENCE_DIR.glob("*.yaml")))
def test_every_set_loads_with_sources(name: str) -> None:
    figures = load_coresidence(name)
    for field in type(figures).model_fields:
        assert getattr(figures, field).source


def test_graph_replay_and_real_engines_agree_on_decode() -> None:
    replay, engines = load_coresidence(DEFAULT), load_coresidence("h100-vllm-0.26")
    assert engines.interactive_next_to_decode.kind == "measured"
    assert engines.interactive_next_to_decode.value == pytest.approx(replay.interactive_next_to_decode.value, rel=0.1)
