"""The conversation-affinity policy (gateway/contract/policies/conversation_affinity.py), the router's
memory of where each conversation went (gateway.router), and the conversation a request continues
(gateway.protocol)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from gateway.contract.config import ReplicaEndpoint, RoutingSettings
from gateway.contract.policy import ReplicaLoad, RequestFeatures
from gateway.contract.router import PolicyState, Route, route
from gateway.load import LoadBoard
from gateway.protocol import ChatView, CompletionView, features_of, opening_hash
from gateway.router import Router

AFFINITY = RoutingSettings(
    policy="conversation-affinity", spill_queue_threshold=4, spill_release_threshold=1, spill_target_headroom=8
)
TURN = RequestFeatures("chat", stream=True, max_tokens=256, prefix_hash=1)


def loads(tp2_running: int = 0, pp_running: int = 0) -> list[ReplicaLoad]:
    """Two interactive replicas (class-aware picks the less loaded, "tp" of equals) and a batch one."""
    return [
        ReplicaLoad("tp", "interactive", max_num_seqs=8),
        ReplicaLoad("tp2", "interactive", running=tp2_running, max_num_seqs=8),
        ReplicaLoad("pp", "batch", running=pp_running, max_num_seqs=64),
    ]


def pick(request: RequestFeatures, replicas: list[ReplicaLoad], settings: RoutingSettings = AFFINITY) -> str:
    decision, _ = route(request, "interactive", replicas, settings, PolicyState(), random.Random(0))
    assert isinstance(decision, Route)
    return decision.replica


def test_a_follow_up_goes_back_to_the_replica_of_its_previous_turn() -> None:
    assert pick(TURN, loads()) == "tp"  # a first turn: class-aware's choice
    assert pick(replace(TURN, previous_replica="tp2"), loads()) == "tp2"
    assert (
        pick(replace(TURN, previous_replica="tp2"), loads(), AFFINITY.model_copy(update={"policy": "class-aware"}))
        == "tp"
    )


def test_class_aware_spreads_a_class_and_affinity_keeps_a_conversation_on_its_cache() -> None:
    busier_tp = [replace(loads()[0], running=3), *loads()[1:]]
    class_aware = AFFINITY.model_copy(update={"policy": "class-aware"})
    assert pick(TURN, busier_tp, class_aware) == "tp2"  # the class's least loaded replica
    assert pick(replace(TURN, previous_replica="tp"), busier_tp, class_aware) == "tp2"  # off its cache
    assert pick(replace(TURN, previous_replica="tp"), busier_tp) == "tp"  # affinity: where its prefix is


def test_a_full_previous_replica_is_not_followed() -> None:
    assert pick(replace(TURN, previous_replica="tp2"), loads(tp2_running=8)) == "tp"


def test_a_previous_replica_of_the_other_class_is_followed_only_where_class_aware_goes() -> None:
    """The last turn spilled to the batch replica; the interactive queue is short now, so the
    turn goes home rather than running on the batch engine for its cache."""
    assert pick(replace(TURN, previous_replica="pp"), loads()) == "tp"


def test_a_previous_replica_that_is_down_is_routed_around() -> None:
    replicas = [*loads()[:1], replace(loads()[1], healthy=False), loads()[2]]
    assert pick(replace(TURN, previous_replica="tp2"), replicas) == "tp"


def board() -> LoadBoard:
    return LoadBoard(
        [
            ReplicaEndpoint(name="tp", traffic_class="interactive", model="m", max_num_seqs=8),
            ReplicaEndpoint(name="tp2", traffic_class="interactive", model="m", max_num_seqs=8),
            ReplicaEndpoint(name="pp", traffic_class="batch", model="m", max_num_seqs=64),
        ],
        probe_misses_to_mark_down=3,
    )


@pytest.mark.parametrize(
    "conversation",
    [TURN, replace(TURN, prefix_hash=None, session="alice")],
    ids=["by-opening", "by-session"],
)
def test_the_router_remembers_each_conversations_replica(conversation: RequestFeatures) -> None:
    """A first turn routed while "tp" was out goes to "tp2"; the next turn of that conversation
    returns there although class-aware would now pick "tp"; another conversation gets "tp"."""
    router = Router(AFFINITY, board(), random.Random(0))
    assert router.follows_conversations
    assert router.route(conversation, "interactive", exclude=frozenset({"tp"})).replica == "tp2"
    assert router.route(conversation, "interactive").replica == "tp2"
    assert router.route(replace(TURN, prefix_hash=2), "interactive").replica == "tp"


def test_other_policies_read_no_conversation() -> None:
    router = Router(RoutingSettings(), board())
    assert not router.follows_conversations
    router.update(AFFINITY)
    assert router.follows_conversations


def chat(*messages: tuple[str, str], user: object = None) -> ChatView:
    return ChatView.model_validate(
        {"messages": [{"role": role, "content": text} for role, text in messages], "user": user}
    )


def test_every_turn_of_a_chat_has_its_openings_hash() -> None:
    first = chat(("system", "be brief"), ("user", "hi"))
    later = chat(("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "and then?"))
    other = chat(("system", "be brief"), ("user", "bye"))
    assert opening_hash(first.messages) == opening_hash(later.messages) != opening_hash(other.messages)
    assert opening_hash(chat(("system", "only")).messages) is None


@pytest.mark.parametrize("conversation", [False, True])
def test_features_carry_the_conversation_only_when_a_policy_reads_it(conversation: bool) -> None:
    features = features_of("chat", chat(("user", "hi"), user="alice"), conversation=conversation)
    assert (features.prefix_hash is not None, features.session) == ((True, "alice") if conversation else (False, None))
    completion = features_of("completions", CompletionView.model_validate({"prompt": "x", "user": 7}), True)
    assert (completion.prefix_hash, completion.session) == (None, None)
