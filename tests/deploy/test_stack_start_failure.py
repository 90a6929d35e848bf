"""A stack that cannot start is reported with `gateway up`'s own words, not with an error of the
fixture's making (once: a psutil NoSuchProcess about the process that had exited)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from real_stack import StackStartFailed, gateway_up

from deploy.plan import shipped_plan


def test_a_failed_start_reports_the_commands_own_output(tmp_path: Path) -> None:
    plan = yaml.safe_load(shipped_plan("cpu-demo").read_text())
    plan["model"]["source"] = str(tmp_path / "no-such-model")
    bad = tmp_path / "bad-plan.yaml"
    bad.write_text(yaml.safe_dump(plan))
    with pytest.raises(StackStartFailed) as failure, gateway_up(bad, tmp_path):
        pytest.fail("a plan with a missing model directory must not serve")
    message = str(failure.value)
    assert "exited with 2 before serving" in message
    assert "no-such-model" in message and "is not a directory" in message  # the plan's own error
