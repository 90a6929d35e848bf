"""Malformed and hostile requests for an OpenAI endpoint, generated with hypothesis, and the check
that each answer is a proper one: the fault-injection suite's bad-input part (issue 14).

A shared endpoint meets junk: wrong types, huge numbers, deep nesting, invalid UTF-8, header
injection, truncated bodies. Every such request must get the OpenAI error envelope with a 4xx
(`{"error": {"message", "type", "param", "code"}}`), or a real answer when the generated request
happens to be valid, never a 5xx and never a hang. `hostile_requests()` draws such requests;
`check_answer()` says what is wrong with an answer, if anything. Used by
tests/gateway/test_bad_input_property.py (a few hundred, in `make test`) and by
benchmarks/bad_input.py (10,000 and more against the real stack). Needs the `dev` extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
# Numbers at and past the edges clients and parsers get wrong.
EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 10**30, 10**400]


@dataclass(frozen=True)
class HostileRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep them readable
        return f"{self.method} {self.path} headers={self.headers} body={self.body[:300]!r}"


def _json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(EDGE_INTS),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=40),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=max_leaves,
    )


def _messages() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "", "\x00", 7]), "content": _json_values(4)}
    )
    return st.one_of(st.lists(message, max_size=3), _json_values(6))


def _bodies(model: str) -> st.SearchStrategy[dict[str, Any]]:
    """Request objects whose known fields hold anything: right or wrong types, edge numbers."""
    fields = {
        "model": st.one_of(st.just(model), _json_values(2)),
        "messages": _messages(),
        "prompt": _json_values(6),
        "max_tokens": st.one_of(st.integers(-5, 64), st.sampled_from(EDGE_INTS), _json_values(2)),
        "max_completion_tokens": st.one_of(st.integers(-5, 64), _json_values(2)),
        "n": st.one_of(st.integers(-2, 4), st.sampled_from(EDGE_INTS), _json_values(2)),
        "stream": st.one_of(st.booleans(), _json_values(2)),
        "stream_options": _json_values(3),
        "temperature": st.one_of(st.floats(allow_nan=False), _json_values(2)),
        "priority": st.one_of(st.sampled_from(EDGE_INTS), _json_values(2)),
        "logprobs": _json_values(2),
        "tools": _json_values(6),
    }
    return st.dictionaries(st.sampled_from(sorted(fields)), st.nothing(), max_size=0).flatmap(
        lambda _: st.fixed_dictionaries({}, optional=fields)
    )


def _deep(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "[":
        return ("[" * depth + "]" * depth).encode()
    return ('{"a":' * depth + "1" + closer * depth).encode()


def _raw_bodies(model: str) -> st.SearchStrategy[bytes]:
    valid_start = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    return st.one_of(
        st.binary(max_size=200),  # random bytes: invalid UTF-8, not JSON
        st.builds(lambda cut: valid_start[:cut], st.integers(0, len(valid_start) - 1)),  # truncated
        st.builds(_deep, st.integers(10, 100_000), st.sampled_from(["[", "{"])),  # deep nesting
        st.builds(lambda junk: valid_start[:-2] + junk + b"}]}", st.binary(min_size=1, max_size=20)),
        st.sampled_from([b"", b"null", b"[]", b"1e999999", b'"x"', b"{}", b'{"a":1,"a":2}', b"\xef\xbb\xbf{}"]),
    )


_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


def _headers(key: str | None) -> st.SearchStrategy[dict[str, str]]:
    auth = st.one_of(
        st.just(f"Bearer {key}") if key else st.just("Bearer unused"),
        st.builds(lambda t: f"Bearer {t}", _HEADER_TEXT),
        _HEADER_TEXT,
    )
    return st.fixed_dictionaries(
        {"Authorization": auth, "Content-Type": st.sampled_from(["application/json", "text/plain", "", "a/b; x=y"])},
        optional={
            "X-Tandem-Class": st.one_of(st.sampled_from(["interactive", "batch", "BATCH", ""]), _HEADER_TEXT),
            "X-Request-Id": st.one_of(
                _HEADER_TEXT, st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=129, max_size=400)
            ),
            # Header injection: CR/LF smuggled through a value arrive as one header's text at most.
            "X-Forwarded-For": st.builds(lambda a, b: f"{a}%0d%0aX-Evil: 1{b}", _HEADER_TEXT, _HEADER_TEXT),
        },
    )


def hostile_requests(model: str, key: str | None = None) -> st.SearchStrategy[HostileRequest]:
    """Generation requests to a gateway serving `model`; `key`: a valid key (so that most requests
    get past authentication and reach the parsing and routing code)."""
    path = st.sampled_from([CHAT_PATH, COMPLETIONS_PATH])
    json_body = _bodies(model).map(lambda body: json.dumps(body).encode())
    body = st.one_of(json_body, json_body, _raw_bodies(model))
    # HTTP clients refuse header values with edge whitespace (h11): strip them.
    headers = _headers(key).map(lambda h: {name: value.strip() for name, value in h.items()})
    return st.builds(HostileRequest, st.just("POST"), path, headers, body)


def check_answer(status: int, content_type: str, body: bytes) -> str | None:
    """What is wrong with one answer to a hostile request, or None when it is proper: a 2xx with
    a body, or a 4xx carrying the OpenAI error envelope with `code` equal to the status."""
    if status >= 500:
        return f"answered {status}: {body[:300]!r}"
    if status < 400:
        return None if 200 <= status < 300 and body else f"answered {status} with {len(body)} bytes"
    if not content_type.startswith("application/json"):
        return f"{status} with content type {content_type!r}"
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"{status} without an error envelope: {body[:300]!r}"
    if not isinstance(error, dict) or not isinstance(error.get("message"), str) or not error.get("type"):
        return f"{status} with a malformed envelope: {body[:300]!r}"
    if error.get("code") != status:
        return f"{status} whose envelope says code {error.get('code')!r}"
    return None
