"""Cutting a replica's SSE byte stream into whole events, whatever its line endings.

The gateway relays a stream event by event (it reads the final usage event, and an event must
never be split between two writes to the client). The SSE format lets a server end lines with
CRLF, LF or CR (WHATWG HTML, "Server-sent events", interpreting an event stream); vLLM uses LF,
other OpenAI-compatible servers CRLF. Events are passed on with LF line ends, which is what every
SSE client reads and what the gateway's own events use. An event may not grow past
MAX_EVENT_BYTES: a replica that never ends one cannot grow the gateway's memory without bound.
"""

from __future__ import annotations

# vLLM's largest events (a token's top logprobs, a final usage) are a few kilobytes.
MAX_EVENT_BYTES = 4 * 1024 * 1024


class EventTooLarge(ValueError):
    """The stream has gone MAX_EVENT_BYTES without ending an event."""


class EventFramer:
    """Feed bytes as they arrive; get back the whole events among them (LF line ends)."""

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._max = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        self.pending = b""  # the start of an event not yet ended

    def feed(self, data: bytes) -> bytes:
        """Whole events completed by `data`, in order, each ending in a blank line; b"" if none."""
        pending = self.pending + data
        if b"\r" in pending:
            # A CR at the very end may be the first half of a CRLF: it waits for the next bytes.
            held = b"\r" if pending.endswith(b"\r") else b""
            body = pending[:-1] if held else pending
            pending = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        end = pending.rfind(b"\n\n")
        if end < 0:
            if len(pending) > self._max:
                raise EventTooLarge(f"the replica sent {len(pending)} bytes without ending an event")
            self.pending = pending
            return b""
        self.pending = pending[end + 2 :]
        return pending[: end + 2]
