"""An input file checked line by line before any of it runs, as OpenAI does: every problem is a
BatchError with its 1-based line number, and one problem fails the whole batch (nothing runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from gateway.batches.objects import ENDPOINTS, BatchEndpoint, BatchError
from gateway.batches.store import PendingLine
from gateway.contract.policy import Endpoint
from gateway.errors import GatewayError
from gateway.protocol import parse_view

PROXY_ENDPOINT: dict[BatchEndpoint, Endpoint] = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


class InputValidator:
    """Iterate `lines()` to get the valid lines; afterwards `errors` holds the problems found
    (at most `max_errors`; the count of all of them is in `error_count`) and `model` the model."""

    def __init__(self, path: Path, endpoint: BatchEndpoint, served_names: frozenset[str], max_errors: int) -> None:
        self.path = path
        self.endpoint = endpoint
        self.served_names = served_names
        self.max_errors = max_errors
        self.errors: list[BatchError] = []
        self.error_count = 0
        self.model: str | None = None

    def _problem(self, line: int, code: str, message: str, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(BatchError(code=code, message=message, param=param, line=line))

    def lines(self) -> Iterator[PendingLine]:
        seen: set[str] = set()
        count = 0
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue  # blank lines (a trailing newline) carry no request
                count += 1
                line = self._check(number, raw, seen)
                if line is not None:
                    yield line
        if count == 0:
            self._problem(1, "empty_file", "the input file holds no requests")

    def _check(self, number: int, raw: bytes, seen: set[str]) -> PendingLine | None:
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._problem(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            return None
        if not isinstance(item, dict):
            self._problem(number, "invalid_json_line", "Each line must be a JSON object.")
            return None
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            self._problem(number, "missing_required_parameter", "custom_id must be a non-empty string", "custom_id")
            return None
        if custom_id in seen:
            self._problem(number, "duplicate_custom_id", f"custom_id {custom_id!r} appears more than once", "custom_id")
            return None
        seen.add(custom_id)
        if item.get("method") != "POST":
            self._problem(number, "invalid_method", f"method must be POST, got {item.get('method')!r}", "method")
            return None
        url = item.get("url")
        if url != self.endpoint:
            known = url in ENDPOINTS
            message = (
                f"url {url!r} does not match the batch's endpoint {self.endpoint}"
                if known
                else f"url {url!r} is not a supported endpoint; use one of {list(ENDPOINTS)}"
            )
            self._problem(number, "mismatched_endpoint" if known else "invalid_url", message, "url")
            return None
        return self._check_body(number, custom_id, item.get("body"))

    def _check_body(self, number: int, custom_id: str, body: object) -> PendingLine | None:
        if not isinstance(body, dict):
            self._problem(number, "invalid_request", "body must be a JSON object", "body")
            return None
        model = body.get("model")
        if not isinstance(model, str):
            self._problem(number, "missing_required_parameter", "body.model is required", "body.model")
            return None
        if model not in self.served_names:
            self._problem(number, "model_not_found", f"The model `{model}` does not exist.", "body.model")
            return None
        if self.model is None:
            self.model = model
        elif model != self.model:
            self._problem(
                number, "mismatched_model", f"every line must use the same model ({self.model!r})", "body.model"
            )
            return None
        if body.get("stream"):
            self._problem(number, "invalid_request", "streaming is not supported in a batch", "body.stream")
            return None
        try:
            parse_view(PROXY_ENDPOINT[self.endpoint], body)
        except GatewayError as exc:
            param = f"body.{exc.param}" if exc.param else "body"
            self._problem(number, "invalid_request", exc.message, param)
            return None
        return PendingLine(number, custom_id, orjson.dumps(body))
