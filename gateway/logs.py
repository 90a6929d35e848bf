"""The gateway's log output: text (the default) or one JSON object per line, for a log shipper.

Every request ends with one INFO line on the `tandem.gateway.requests` logger (gateway.proxy):
request id, key name (never the key), endpoint, class, replica, status, time to first token,
tokens and duration. Its message is readable as text (`key=value ...`) under any handler; the
same facts travel in the record's `fields`, which the JSON formatter writes as the object's own
keys, so a shipper reads them without parsing the message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import orjson

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
REQUEST_LOGGER = "tandem.gateway.requests"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the record's
    `fields` if it has them, and the traceback of a logged exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(fmt: LogFormat = "text", level: LogLevel = "info") -> None:
    """Send every log record (the gateway's, uvicorn's) to stderr in `fmt`, from `level` up."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
