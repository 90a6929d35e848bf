"""Two models behind one endpoint on the real CPU stack (issue 27): deploy/plans/cpu-two-models.yaml,
the demo model and the smaller demo model, one one-worker engine each, started with `gateway up` as
a user starts it. The OpenAI SDK reaches each model by its name (and alias), /v1/models lists both,
a model the plan does not serve is a 404 in OpenAI's error envelope, and one model's engine killed
leaves the other serving, undisturbed, while the first answers 503 until Serve has its engine back.

The stack is the session's (tests/real_stack.py, `Stacks`: one stack at a time); this module stops
it when its tests are done, so the stacks of the tests after it start on free cores."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest
from real_stack import CpuStack, Stacks
from stack_support import eventually
from test_faults import CLIENT_ENDS_WITHIN_S, ENGINE_RETURNS_WITHIN_S, PROBE_MARKS_DOWN_WITHIN_S, kill_at_once, refuses

from deploy.plan import shipped_plan

pytestmark = pytest.mark.stack

PLAN = shipped_plan("cpu-two-models")
BIG, SMALL = "tandem-demo", "tandem-demo-small"
REPLICA = {BIG: "demo", SMALL: "small"}


@pytest.fixture(scope="module", autouse=True)
def stops_its_stack(stacks: Stacks) -> Iterator[None]:
    """The two-model stack runs for this module's tests only."""
    yield
    stacks.stop()


@pytest.fixture
def two_models(stacks: Stacks) -> CpuStack:
    return stacks.get(PLAN)


def client(stack: CpuStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=CLIENT_ENDS_WITHIN_S)


def chat(base_url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=CLIENT_ENDS_WITHIN_S)


def engine_of(served_name: str) -> tuple[psutil.Process, str]:
    """The engine server process that serves `served_name` (its `--served-model-name`; the two
    engines have the same layout, so the model tells them apart) and its base URL."""
    for process in psutil.process_iter(["cmdline"]):
        args = process.info["cmdline"] or []
        option = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
        if "deploy.engine_process" in args and option.get("--served-model-name") == served_name:
            return process, f"http://{option['--host']}:{option['--port']}/v1"
    raise LookupError(f"no engine process serves {served_name}")


def test_the_sdk_talks_to_each_model_by_its_name(two_models: CpuStack) -> None:
    sdk = client(two_models)
    for name in (BIG, SMALL):
        raw = sdk.chat.completions.with_raw_response.create(
            model=name, messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
        reply = raw.parse()
        assert reply.model == name and reply.choices[0].message.content is not None
        assert raw.headers["x-tandem-replica"] == REPLICA[name], name  # each model's own engine
    by_alias = sdk.completions.with_raw_response.create(model="demo-small", prompt="hello", max_tokens=4)
    assert by_alias.headers["x-tandem-replica"] == "small"  # an alias reaches its model's engine
    streamed = sdk.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    assert {chunk.model for chunk in streamed} == {SMALL}


def test_models_lists_both_and_an_unknown_model_is_a_404(two_models: CpuStack) -> None:
    listed = {model.id for model in client(two_models).models.list()}
    assert {BIG, SMALL} <= listed
    with pytest.raises(openai.NotFoundError) as info:
        client(two_models).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert info.value.status_code == 404
    answer = chat(two_models.base_url, "no-such-model")
    assert answer.status_code == 404
    error = answer.json()["error"]  # OpenAI's envelope
    assert "no-such-model" in error["message"] and error["type"], error


def test_one_models_engine_killed_leaves_the_other_serving(two_models: CpuStack) -> None:
    base = two_models.base_url
    old_url = two_models.replica_urls[REPLICA[BIG]]
    small_answers: list[tuple[int, str | None]] = []
    done = threading.Event()

    def keep_asking_the_small_model() -> None:
        while not done.is_set():
            reply = chat(base, SMALL)
            small_answers.append((reply.status_code, reply.headers.get("x-tandem-replica")))
            time.sleep(0.5)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asking = pool.submit(keep_asking_the_small_model)
        try:
            engine, url = engine_of(BIG)
            assert url == old_url
            kill_at_once(engine)
            eventually(lambda: refuses(old_url), "the killed engine's port refusing connections", 60, every_s=0.2)
            # The probe marks the engine down; with its model's only replica down, that model is a 503
            # (OpenAI's envelope), the other model's requests are not touched.
            eventually(
                lambda: chat(base, BIG).status_code == 503,
                "the killed model answers 503",
                PROBE_MARKS_DOWN_WITHIN_S + 30,
                every_s=0.5,
            )
            gap = chat(base, BIG)
            if gap.status_code == 503:  # Serve may have its engine back already
                assert gap.json()["error"]["message"], gap.text
            answered = chat(base, SMALL)
            assert answered.status_code == 200 and answered.headers["x-tandem-replica"] == "small"
            took = eventually(
                lambda: chat(base, BIG).status_code == 200,
                "Serve restarts the killed engine and its model serves again",
                ENGINE_RETURNS_WITHIN_S,
                every_s=2.0,
            )
        finally:
            done.set()
            asking.result(timeout=CLIENT_ENDS_WITHIN_S + 30)
    new_url = engine_of(BIG)[1]
    assert new_url != old_url, "the engine came back on its old port: nothing was followed"
    two_models.replica_urls[REPLICA[BIG]] = new_url
    assert small_answers, "the small model was never asked while the other's engine was down"
    assert set(small_answers) == {(200, "small")}, small_answers  # every answer, from its own engine
    print(f"{BIG}'s engine back after {took:.0f} s; {SMALL} answered all {len(small_answers)} requests meanwhile")
