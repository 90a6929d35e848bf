"""The arbitration study's live objective (issue 23), against a real gateway over fake engines.

The gateway is Tandem's own (started in a thread, as the gateway unit tests do), its two replicas
fake upstreams that stream tokens at a fixed pace; the bench is `tuner bench`'s. What is checked:
the routing is switched per trial through /admin/routing and restored afterwards, the references
and trials are measured per class, the step budget is never searched live, and the loads follow
the study's names. The real-stack run is the lead's (docs/routing.md says how)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from fake_upstream import FakeUpstream

from deploy.plan import load_plan
from gateway.contract.config import GatewayConfig, RoutingSettings
from gateway.server import start_in_thread
from tuner.bench.client import RequestRecord
from tuner.optimize import OptimizeRequest, optimize
from tuner.optimize.arbitration_live import LiveJudge, LiveLoads, busy_share
from tuner.optimize.arbitration_search import point, tune_arbitration
from tuner.workloads import Workload

LOADS = LiveLoads(
    chat_users=2, think_time_s=0.05, chat_shape=Workload(input_len=16, output_len=8), batch_streams=3,
    batch_shape=Workload(input_len=32, output_len=8),
)  # fmt: skip


@contextmanager
def fake_stack(model: str) -> Iterator[str]:
    """A gateway serving `model` with no keys (admin calls from loopback) over two fake engines, 2 ms
    a token; yields its /v1 URL."""
    with (
        FakeUpstream(model="upstream-tp", token_delay_s=0.002).running() as tp,
        FakeUpstream(model="upstream-pp", token_delay_s=0.002, scheduling_policy="priority").running() as pp,
    ):
        config = GatewayConfig.model_validate(
            {
                "model": model,
                "replicas": [
                    {"name": "tp", "traffic_class": "interactive", "model": tp.model, "base_url": tp.base_url},
                    {"name": "pp", "traffic_class": "batch", "model": pp.model, "base_url": pp.base_url},
                ],
            }
        )
        gateway = start_in_thread(config)
        try:
            yield gateway.base_url
        finally:
            gateway.stop()


@pytest.fixture
def gateway_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("TANDEM_ADMIN_KEY", raising=False)
    with fake_stack("tandem-test") as url:
        yield url


def _judge(url: str) -> LiveJudge:
    return LiveJudge(url, "tandem-test", LOADS, duration_s=1.0, timeout_s=60)


def test_busy_share_is_the_covered_part_of_the_window() -> None:
    records = [
        RequestRecord("interactive", start=0.0, end=2.0),
        RequestRecord("interactive", start=1.0, end=3.0),  # overlaps the first: counted once
        RequestRecord("interactive", start=6.0, end=10.0),
    ]
    assert busy_share(records) == pytest.approx(7 / 10)
    assert busy_share([]) == 0.0


def test_named_loads_follow_the_study_and_the_batch_engine() -> None:
    team = LiveLoads.named("team", "saturating", batch_slots=256)
    assert (team.chat_users, team.think_time_s, team.batch_streams) == (20, 120.0, 320)
    assert LiveLoads.named("team", "half", batch_slots=256).batch_streams == 128
    with pytest.raises(ValueError, match="unknown batch load"):
        LiveLoads.named("team", "flood", batch_slots=256)
    with pytest.raises(ValueError, match="unknown chat load"):
        LiveLoads.named("crowd", "half", batch_slots=256)


def test_a_trial_switches_the_routing_and_the_judge_restores_it(gateway_url: str) -> None:
    with _judge(gateway_url) as judge:
        base = judge.routing()
        assert base.arbitration.mode == "admission"
        refs = judge.references()
        assert refs.ttft_p99_ms > 0 and refs.tpot_p50_ms > 0 and refs.batch_tok_s > 0
        assert 0 < refs.interactive_busy <= 1
        outcome = judge.outcome(point("freeze", base, freeze_max_s=20.0), refs)
        now = judge.routing()
        assert (now.arbitration.mode, now.arbitration.max_s) == ("freeze", 20.0)  # the trial ran under its point
        assert outcome.ttft_p99 > 0 and outcome.batch_vs_alone > 0 and outcome.batch_step_p99_ms is None
        with pytest.raises(ValueError, match="step budget"):
            judge.outcome(point("bounded", base, fraction=0.25, batch_tokens=512), refs)
    assert _judge(gateway_url).routing() == base  # put back on exit


def test_the_live_study_never_searches_the_step_budget(gateway_url: str) -> None:
    storage = optuna.storages.InMemoryStorage()
    with _judge(gateway_url) as judge:
        base = judge.routing()
        kept, outcome, _ = tune_arbitration("t.arbitration-live", storage, judge, base, n_trials=3, seed=2)
    study = optuna.load_study(study_name="t.arbitration-live", storage=storage)
    assert study.trials[0].params == {"mode": "off"} and len(study.trials) == 3
    assert all(t.user_attrs["judge"] == "live" and "batch_tokens" not in t.params for t in study.trials)
    assert kept.batch_tokens is None and outcome.ttft_p99 > 0
    assert RoutingSettings.model_validate(kept.routing.model_dump()) == kept.routing


def test_optimize_scores_the_arbitration_on_the_stack_it_is_pointed_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tuner optimize --arbitration-live-url`: the study is the live one, and the plan written
    carries its choice. The named loads are the study's own (a team of twenty, 1.25x the batch
    engine's 256 slots), for one second a phase against the fake engines."""
    monkeypatch.delenv("TANDEM_ADMIN_KEY", raising=False)
    with fake_stack("llama-3.1-8b-instruct") as url:  # the plan's served name
        request = OptimizeRequest(
            model="llama-3.1-8b",
            storage=f"sqlite:///{tmp_path / 'studies.db'}",
            out=tmp_path / "plans",
            trials=8,
            routing_trials=0,
            arbitration_trials=2,
            arbitration_live_url=url,
            arbitration_live_duration_s=1.0,
        )
        result = optimize(request)
    info = result.routing["arbitration"]
    assert isinstance(info, dict) and info["judge"] == "live"
    assert info["study"] == "llama-3.1-8b.dgx-spark-pair.arbitration-live"
    routing = load_plan(result.plan_path).gateway.routing
    assert routing.arbitration.mode == ("freeze" if info["mode"] in ("freeze", "bounded") else "admission")
