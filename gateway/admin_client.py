"""What `gateway keys ...` and `gateway usage` use to talk to a running gateway's admin routes.

Standard library only (urllib, ssl): these commands run from a gateway-only install. The admin
key is read from the environment (TANDEM_ADMIN_KEY), never from a command-line flag, which
`ps` and the shell's history would show to others. Errors come back as the gateway's own
OpenAI-shaped message; nothing here echoes a key.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

URL_ENV = "TANDEM_URL"
ADMIN_KEY_ENV = "TANDEM_ADMIN_KEY"
CA_FILE_ENV = "TANDEM_CA_FILE"
DEFAULT_URL = "http://127.0.0.1:8000"


class AdminError(RuntimeError):
    """A call the gateway refused or could not be made; the message says why."""


class AdminClient:
    def __init__(self, url: str, admin_key: str | None, ca_file: Path | None = None, timeout_s: float = 30.0) -> None:
        self.root = url.rstrip("/").removesuffix("/v1")
        self._admin_key = admin_key
        self._timeout_s = timeout_s
        self._context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
        """The JSON answer of `method path`; AdminError with the gateway's message otherwise."""
        params = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        request = urllib.request.Request(
            f"{self.root}{path}{'?' + params if params else ''}",
            data=orjson.dumps(body) if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if self._admin_key:
            request.add_header("Authorization", f"Bearer {self._admin_key}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s, context=self._context) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AdminError(_gateway_message(exc)) from None
        except urllib.error.URLError as exc:
            hint = ""
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                hint = f" (give the CA that signed its certificate with --cacert or {CA_FILE_ENV})"
            raise AdminError(f"cannot reach the gateway at {self.root}: {exc.reason}{hint}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise AdminError(f"cannot reach the gateway at {self.root}: {exc}") from None


def _gateway_message(exc: urllib.error.HTTPError) -> str:
    try:
        message = orjson.loads(exc.read())["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = exc.reason
    hint = ""
    if exc.code == 401:
        hint = f" (set {ADMIN_KEY_ENV} to an admin key)"
    return f"the gateway answered {exc.code}: {message}{hint}"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '12h', '7d', '2w' -> seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use a number and s, m, h, d or w, e.g. 7d")
    return float(match[1]) * _UNIT_S[match[2]]


def parse_time(text: str, now: float | None = None) -> float:
    """A moment as unix time: a duration from now ('30d': in 30 days) or an ISO 8601 date or
    time ('2027-01-31', '2027-01-31T12:00'; UTC unless it names a zone)."""
    now = time.time() if now is None else now
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (30d) nor an ISO date (2027-01-31)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
