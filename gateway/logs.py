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

import orjson

from gateway.contract.config import LogFormat, LogLevel

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


def configure_logging(fmt: LogFormat = "text", level: LogLevel = "info", logger: str | None = None) -> None:
    """Send log records to stderr in `fmt`, from `level` up: every record (the gateway's and
    uvicorn's: `gateway serve`), or only those of `logger` and below (inside a process whose
    logging belongs to someone else, such as a Ray Serve replica), which then stop there."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    target = logging.getLogger(logger)
    for old in list(target.handlers):
        target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(level.upper())
    if logger is not None:
        target.propagate = False
