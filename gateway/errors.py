"""The one error helper: every error the gateway itself produces is the OpenAI envelope
{"error": {"message", "type", "param", "code"}}, shaped as vLLM's server shapes it (type named
after the status, code the status number), so clients and SDKs cannot tell the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import orjson
from pydantic import ValidationError

# The OpenAI SDK maps statuses to these exception names; vLLM uses the same spellings.
_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
}


class GatewayError(Exception):
    """An error the gateway answers itself, with its status and OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        err_type: str | None = None,
    ) -> None:
        super().__init__(message)
        # FastAPI's 422 is not part of the contract: what the gateway cannot accept is a 400.
        self.status = 400 if status == 422 else status
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        self.err_type = err_type

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.param, self.err_type)


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    if status >= 500:
        return "InternalServerError" if status == 500 else HTTPStatus(status).phrase.replace(" ", "")
    return HTTPStatus(status).phrase.replace(" ", "")


# vLLM answers a request whose fields fail validation with this type (its other 400s say
# "BadRequestError"); the gateway does the same so that the two cannot be told apart.
VALIDATION_ERROR_TYPE = HTTPStatus.BAD_REQUEST.phrase


def error_body(status: int, message: str, param: str | None = None, err_type: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": err_type or error_type(status), "param": param, "code": status}}
    )


def internal_error(exc: Exception) -> GatewayError:
    """The 500 for a failure nobody planned for: names the exception's type, never its text
    (which may hold a request's content)."""
    return GatewayError(500, f"internal gateway error ({type(exc).__name__})")


def invalid_field(exc: ValidationError, err_type: str | None = None) -> GatewayError:
    """The 400 for a body that failed its pydantic model: the first problem, naming its field
    (`messages.0.role: ...`) as `param` and in the message, without pydantic's "Value error, "."""
    first = exc.errors()[0]
    param = ".".join(map(str, first["loc"])) or None
    message = first["msg"].removeprefix("Value error, ")
    return GatewayError(400, f"{param}: {message}" if param else message, param=param, err_type=err_type)
