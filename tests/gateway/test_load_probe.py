"""The load poller's verdict on a replica (gateway/load.py): a probe that times out takes a
replica out of routing only after `load_probe_misses` in a row (a generating CPU engine answers its
own /metrics seconds late, and one slow answer used to turn traffic away from a working engine); a
refused or failed probe takes it out at once; one good answer brings it back and clears the count."""

from __future__ import annotations

import pytest
from gateway_support import IdleBackend

from gateway.backends.base import EngineLoad
from gateway.backends.http_client import ConnectFailed
from gateway.contract.config import ReplicaEndpoint, RequestLimits
from gateway.load import LoadBoard

REPLICA = ReplicaEndpoint(name="tp", traffic_class="interactive", model="m")


class ScriptedProbe(IdleBackend):
    """A replica whose load probes answer, in order, what `answers` says: a load or an exception."""

    def __init__(self, answers: list[EngineLoad | Exception]) -> None:
        self.answers = answers

    async def engine_load(self) -> EngineLoad | None:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def verdicts(
    answers: list[EngineLoad | Exception], misses: int = RequestLimits().load_probe_misses
) -> list[bool]:
    """The replica's health after each probe."""
    board = LoadBoard([REPLICA], probe_misses_to_mark_down=misses)
    backend = ScriptedProbe(list(answers))
    seen = []
    for _ in answers:
        await board.poll_once({"tp": backend})
        seen.append(board.snapshot()[0].healthy)
    return seen


LOAD = EngineLoad(running=2, waiting=0)
SLOW = TimeoutError()


@pytest.mark.parametrize(
    ("answers", "healthy_after_each"),
    [
        pytest.param([SLOW, SLOW, LOAD], [True, True, True], id="two-slow-answers-keep-it"),
        pytest.param([SLOW, SLOW, SLOW], [True, True, False], id="three-slow-in-a-row-take-it-out"),
        pytest.param([SLOW, SLOW, LOAD, SLOW, SLOW], [True] * 5, id="a-good-answer-clears-the-count"),
        pytest.param([ConnectFailed("refused")], [False], id="refused-takes-it-out-at-once"),
        pytest.param([RuntimeError("/metrics answered 500")], [False], id="a-bad-answer-takes-it-out-at-once"),
        pytest.param([SLOW, SLOW, SLOW, LOAD], [True, True, False, True], id="back-on-its-next-answer"),
        pytest.param([ConnectFailed("refused"), SLOW, LOAD], [False, False, True], id="slow-keeps-a-down-replica-down"),
    ],
)
async def test_a_replica_is_taken_out_on_failure_or_repeated_slowness(
    answers: list[EngineLoad | Exception], healthy_after_each: list[bool]
) -> None:
    assert await verdicts(answers) == healthy_after_each


async def test_one_miss_is_enough_when_the_setting_says_so() -> None:
    assert await verdicts([SLOW], misses=1) == [False]


async def test_the_load_read_by_a_good_probe_reaches_the_snapshot() -> None:
    board = LoadBoard([REPLICA], RequestLimits().load_probe_misses)
    await board.poll_once({"tp": ScriptedProbe([LOAD])})
    assert (board.snapshot()[0].running, board.snapshot()[0].waiting) == (2, 0)
