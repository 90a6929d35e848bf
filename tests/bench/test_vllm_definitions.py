"""tuner bench and vLLM's own client, fed the same recorded vLLM streams on the same clock.

Each file in data/ is one streamed completion recorded from vLLM 0.32.0's OpenAI server (CPU
build, demo model, 16 tokens, include_usage), one entry per network read with its arrival time.
A fake aiohttp session replays the reads and moves a fake clock to each read's time, and both
clients run their real request code on it: vLLM's `async_request_openai_completions` (loaded from
the installed vllm's file, without importing the vllm package) and tuner bench's StreamingClient.
So TTFT, ITL, E2EL, output tokens and TPOT are compared exactly, with no timing noise.

The streams are the cases where definitions could part: a first token event whose text is empty
(a partial UTF-8 byte), several events in one read, several tokens merged into one event (vLLM's
RequestOutputCollector when its API server falls behind), and the whole answer in one read, which
gives TPOT 0 under vLLM's definition as under tuner bench's.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tuner.bench import client as tuner_client
from tuner.bench.client import StreamingClient
from tuner.bench.config import Endpoint
from tuner.bench.metrics import compute_metrics
from tuner.bench.prompts import Prompt

DATA = Path(__file__).parent / "data"
STREAMS = sorted(DATA.glob("vllm-stream-*.json"))


def vllm_request_functions() -> ModuleType:
    """vLLM's benchmark request functions, from the installed file (importing the vllm package
    costs tens of seconds of CPU; this file needs only aiohttp, regex and tqdm)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "benchmarks" / "lib" / "endpoint_request_func.py"
    module_spec = importlib.util.spec_from_file_location("vllm_endpoint_request_func", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class Clock:
    """A perf_counter that moves only when a recorded read arrives."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class ReplayedResponse:
    status = 200
    reason = "OK"

    def __init__(self, reads: list[dict[str, Any]], clock: Clock) -> None:
        self._reads = reads
        self._clock = clock
        self.content = SimpleNamespace(iter_any=self._iter_any)

    async def _iter_any(self) -> AsyncIterator[bytes]:
        for read in self._reads:
            self._clock.now = read["at_ms"] / 1000
            yield read["data"].encode()

    async def __aenter__(self) -> ReplayedResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class ReplaySession:
    """Stands in for aiohttp.ClientSession: every POST gets the recorded stream, sent at clock 0."""

    def __init__(self, reads: list[dict[str, Any]], clock: Clock) -> None:
        self._reads = reads
        self._clock = clock

    def post(self, *args: object, **kwargs: object) -> ReplayedResponse:
        return ReplayedResponse(self._reads, self._clock)


def replay_both(stream: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, tuner_client.RequestRecord]:
    reads = json.loads(stream.read_text())["reads"]
    vllm = vllm_request_functions()
    clock = Clock()
    monkeypatch.setattr(vllm, "time", clock)
    monkeypatch.setattr(tuner_client, "time", clock)
    session: Any = ReplaySession(reads, clock)
    theirs_input = vllm.RequestFuncInput(
        prompt="p", api_url="http://127.0.0.1:1/v1/completions", prompt_len=5, output_len=16, model="m"
    )

    async def run() -> tuple[Any, tuner_client.RequestRecord]:
        clock.now = 0.0
        theirs = await vllm.async_request_openai_completions(theirs_input, session)
        clock.now = 0.0
        ours = await StreamingClient(Endpoint(url="http://127.0.0.1:1/v1", model="m"), session).send(
            Prompt(text="p", target_input_len=5, output_len=16), stream="all", traffic_class=None, ignore_eos=True
        )
        return theirs, ours

    return asyncio.run(run())


def vllm_tpot(output: Any) -> float:
    """vLLM's TPOT (benchmarks/serve.py, calculate_metrics): (latency - ttft) / (output tokens - 1)."""
    return float((output.latency - output.ttft) / (output.output_tokens - 1))


@pytest.mark.parametrize("stream", STREAMS, ids=lambda path: path.stem)
def test_both_clients_measure_the_same_on_a_recorded_stream(stream: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs, ours = replay_both(stream, monkeypatch)

    assert theirs.success and ours.success, (theirs.error, ours.error)
    assert ours.ttft == theirs.ttft
    assert ours.itl == theirs.itl
    assert ours.latency == theirs.latency
    assert ours.output_tokens == theirs.output_tokens == 16  # the server's usage, not the events counted
    metrics = compute_metrics([ours], duration_s=1.0)
    assert metrics.tpot_ms is not None and metrics.ttft_ms is not None
    assert metrics.tpot_ms.median == pytest.approx(vllm_tpot(theirs) * 1000)
    assert metrics.ttft_ms.median == pytest.approx(theirs.ttft * 1000)


def test_an_empty_first_token_counts_as_the_first_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # Recorded: the first event's text is "" (a token that is part of a UTF-8 character), and it
    # arrived with the next event in one read at 132.9 ms.
    theirs, ours = replay_both(DATA / "vllm-stream-mixed-reads.json", monkeypatch)
    assert ours.ttft == theirs.ttft == pytest.approx(0.1329)
    assert len(ours.itl) + 1 == len(theirs.itl) + 1 == 10  # 16 tokens in 10 events: the server merged some


def test_a_whole_answer_in_one_read_is_tpot_zero_for_vllm_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Recorded on a loaded machine: all 16 token events, the usage and [DONE] in one read.
    theirs, ours = replay_both(DATA / "vllm-stream-one-read.json", monkeypatch)
    assert ours.ttft == ours.latency == theirs.ttft == theirs.latency
    assert vllm_tpot(theirs) == 0.0
    metrics = compute_metrics([ours], duration_s=1.0)
    assert metrics.tpot_ms is not None and metrics.tpot_ms.median == 0.0
    assert metrics.tokens_per_event == 1.0  # 16 events for 16 tokens: nothing merged, only read late


def test_tokens_per_event_shows_merged_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    _, ours = replay_both(DATA / "vllm-stream-mixed-reads.json", monkeypatch)
    assert compute_metrics([ours], duration_s=1.0).tokens_per_event == pytest.approx(1.6)
