"""The engine's child process hands the replica's placement group to vLLM (deploy.engine_process,
through the vLLM adapter's attach_placement_group).

Under vLLM's Ray executor the workers must go into the replica's own placement group, whose
bundles Ray spread over the nodes; a child process is not "in" its parent actor's group, so
the group travels by id and is attached to every engine config the process builds, where vLLM's
executor looks first (`parallel_config.placement_group`). Checked with the installed vLLM's own
EngineArgs on the demo model.
"""

from __future__ import annotations

import pytest
from ray import PlacementGroupID

from deploy.demo_model import ensure_demo_model
from gateway.engines.vllm import VLLM


def test_every_engine_config_carries_the_handed_over_placement_group(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

    # Restored after the test: the attach replaces EngineArgs.create_engine_config process-wide.
    monkeypatch.setattr(EngineArgs, "create_engine_config", EngineArgs.create_engine_config)
    group_hex = PlacementGroupID.from_random().hex()
    model = str(ensure_demo_model())
    before = AsyncEngineArgs(model=model, max_model_len=256).create_engine_config()
    assert before.parallel_config.placement_group is None

    VLLM.attach_placement_group(group_hex)
    # The OpenAI server builds its config from AsyncEngineArgs, a subclass: it must carry the group too.
    config = AsyncEngineArgs(model=model, max_model_len=256).create_engine_config()
    assert config.parallel_config.placement_group.id.hex() == group_hex
    assert config.model_config.max_model_len == 256  # the rest of the config is vLLM's own
