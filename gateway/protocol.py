"""What the gateway reads from a request body, and nothing more.

The body itself passes on intact (vLLM's extra fields included: top_k, min_tokens, guided or
structured output, priority, ...); these pydantic views check only the fields the gateway needs
to route and to protect itself, so a vLLM upgrade that adds fields needs no gateway change.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from gateway.contract.policy import Endpoint, RequestFeatures
from gateway.errors import VALIDATION_ERROR_TYPE, GatewayError, invalid_field


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool | None = None


class _GenerationView(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=0)
    priority: int | None = None
    user: Any = None  # read as a session name only when a string; vLLM checks it

    def requested_tokens(self) -> int | None:
        return self.max_tokens


class ChatView(_GenerationView):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def prompt_count(self) -> int:
        return 1


class CompletionView(_GenerationView):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)

    def prompt_count(self) -> int:
        """A list of strings or of token lists is several prompts; a token list is one."""
        prompt = self.prompt
        if isinstance(prompt, list) and not isinstance(prompt[0], int):
            return len(prompt)
        return 1


class ResponsesView(BaseModel):
    """POST /v1/responses (the Responses API): one input, one answer. `max_output_tokens` is its
    max_tokens; `previous_response_id` pins the request to the replica that stored that response."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: str | list[Any]
    # Lax booleans, as vLLM's ResponsesRequest reads them ("yes" streams there too).
    stream: bool | None = False
    background: bool | None = False
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    priority: int | None = None
    user: Any = None

    @property
    def n(self) -> int:
        return 1

    @property
    def stream_options(self) -> None:
        """The event stream always carries usage (in response.completed): nothing to ask for."""
        return None

    def requested_tokens(self) -> int | None:
        return self.max_output_tokens

    def prompt_count(self) -> int:
        return 1


_VALUE_CHECKS = frozenset({"greater_than_equal", "greater_than", "too_short"})

View = ChatView | CompletionView | ResponsesView
VIEWS: dict[Endpoint, type[View]] = {"chat": ChatView, "completions": CompletionView, "responses": ResponsesView}


def parse_view(endpoint: Endpoint, body: Any) -> View:
    """Validate the fields the gateway reads; the first problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    try:
        return VIEWS[endpoint].model_validate(body)
    except ValidationError as exc:
        # vLLM's request models check types; values (n >= 1, some messages) it checks later, with
        # its other error type. Answer each as vLLM would.
        err_type = None if exc.errors()[0]["type"] in _VALUE_CHECKS else VALIDATION_ERROR_TYPE
        raise invalid_field(exc, err_type) from None


def features_of(endpoint: Endpoint, view: View, conversation: bool = False) -> RequestFeatures:
    """What routing may know of a request; with `conversation` (a policy that follows
    conversations is in force), also its prefix hash and session."""
    features = RequestFeatures(
        endpoint=endpoint,
        stream=bool(view.stream),
        n=view.n or 1,
        prompts=view.prompt_count(),
        max_tokens=view.requested_tokens(),
        client_priority=view.priority,
    )
    if not conversation:
        return features
    prefix = opening_hash(view.messages) if isinstance(view, ChatView) else None
    session = view.user if isinstance(view.user, str) and view.user else None
    return replace(features, prefix_hash=prefix, session=session)


def opening_hash(messages: list[dict[str, Any]]) -> int | None:
    """A chat's opening (its messages up to and including the first user message), hashed: every
    later turn of the conversation resends the same opening, and the engine's prefix cache holds
    it. None without a user message. Stable across processes (blake2b, not Python's hash)."""
    end = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    if end is None:
        return None
    opening = orjson.dumps(messages[: end + 1], option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(opening, digest_size=8).digest(), "big")
