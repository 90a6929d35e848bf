"""The routing evaluation's command (benchmarks/routing.py): which earlier results a run replaces."""

from __future__ import annotations

from tuner.policy_eval import command


def test_a_live_run_replaces_only_its_plan_and_scenarios() -> None:
    args = command.parse_args(
        ["--live-only", "--live-plan", "benchmarks/plans/cpu-roles-swapped.yaml", "--live-scenarios", "steady"]
    )
    assert args.live_setting == "live cpu-roles-swapped"
    assert command._reruns(args, "live cpu-roles-swapped", "steady")
    assert not command._reruns(args, "live cpu-roles-swapped", "burst")
    assert not command._reruns(args, "live cpu-demo", "steady")  # another plan's live results stay
    assert not command._reruns(args, "simulated gpt-oss-120b", "steady")


def test_a_simulated_run_replaces_every_simulated_setting_and_no_live_one() -> None:
    args = command.parse_args(["--simulated-only"])
    assert command._reruns(args, "simulated llama-3.1-8b, no co-residence contention")
    assert not command._reruns(args, "live cpu-demo", "steady")
    assert not any(command._reruns(command.parse_args(["--report-only"]), s) for s in ("simulated x", "live cpu-demo"))
