"""The live evaluator on the real CPU stack: deploy one replica on Ray, bench it, tear it down.

One engine start for a measured trial (the demo model, TP=1, chat-sized requests) and one for
a replica vLLM refuses at start, which must come back as an infeasible trial with vLLM's reason
rather than an exception. Run under the heavy lock: `flock /tmp/tandem-heavy.lock pytest -m stack ...`.
"""

from __future__ import annotations

import psutil
import pytest

from deploy.plan import load_plan, shipped_plan
from tuner.bench import WorkloadSpec
from tuner.optimize import ClassObjective, Infeasible, LiveEvaluator
from tuner.optimize.compose import tuned_replica
from tuner.optimize.space import Candidate
from tuner.perfmodel import Layout

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]


def _vllm_servers() -> set[int]:
    return {
        p.pid for p in psutil.process_iter(["cmdline"]) if "deploy.engine_process" in " ".join(p.info["cmdline"] or [])
    }


def test_live_trial_measures_then_reports_a_failed_start_as_infeasible() -> None:
    template = load_plan(shipped_plan("cpu-demo"))
    objective = ClassObjective.batch(concurrency=4)
    good = Candidate(
        Layout(tp=1, pp=1), max_num_seqs=8, enable_chunked_prefill=True, max_num_batched_tokens=512, memory_share=None
    )
    before = _vllm_servers()
    with LiveEvaluator(
        template, WorkloadSpec(input_len=32, output_len=16), requests_per_trial=12, max_duration_s=30, timeout_s=240
    ) as evaluator:
        replica = tuned_replica(template, "batch", good)
        assert replica.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and replica.placement.strategy == "PACK"
        measured = evaluator.evaluate(good, replica, objective)
        assert measured.source == "live" and measured.completed and measured.completed >= 12
        assert measured.output_tok_s > 0 and 0 < measured.ttft_p50_ms <= measured.ttft_p99_ms
        # vLLM refuses, at start-up, a context longer than the model's (the demo model's 4096 positions);
        # the plan cannot know the model's limit, so this is a failed start, not a refused plan.
        bad = replica.model_copy(update={"engine": replica.engine.model_copy(update={"max_model_len": 100_000})})
        with pytest.raises(Infeasible) as failed:
            evaluator.evaluate(good, bad, objective)
        assert failed.value.reason.startswith("failed to start") and "max_model_len" in failed.value.reason
    assert _vllm_servers() <= before  # every engine this test started is gone
