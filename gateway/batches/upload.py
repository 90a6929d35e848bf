"""POST /v1/files: a multipart upload streamed to disk and checked on the way.

The body is never held whole in memory (Starlette's multipart parser spools the file part to a
temporary file past 1 MB, and it is then copied into the data directory in 1 MB chunks), and an
upload over `max_file_bytes` is refused as early as possible: at once from its Content-Length,
else as soon as the bytes received pass the limit, without reading the rest.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from gateway.contract.batch_settings import BatchSettings
from gateway.errors import GatewayError

_MULTIPART_SLACK = 64 * 1024  # boundaries, part headers and the `purpose` field around the file
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    filename: str
    purpose: str
    size: int
    lines: int


def _too_large(limit: int, size: str = "") -> GatewayError:
    return GatewayError(413, f"file{' of ' + size + ' bytes' if size else ''} is over the limit of {limit} bytes")


async def _bounded(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit + _MULTIPART_SLACK:
            raise _too_large(limit)
        yield chunk


async def receive_upload(request: Request, settings: BatchSettings, destination: Path) -> Upload:
    """Parse the form, write its `file` part to `destination` (fsynced) and return what it was."""
    limit = settings.max_file_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
        raise _too_large(limit, declared)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise GatewayError(400, "upload files as multipart/form-data with fields `file` and `purpose`")
    parser = MultiPartParser(request.headers, _bounded(request, limit), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise GatewayError(400, f"invalid multipart upload: {exc.message}") from None
    try:
        purpose, file = form.get("purpose"), form.get("file")
        if purpose != "batch":
            raise GatewayError(400, f"purpose must be 'batch', got {purpose!r}", param="purpose")
        if not isinstance(file, UploadFile):
            raise GatewayError(400, "the form has no `file` part", param="file")
        size, lines = await asyncio.to_thread(_copy, file.file, destination, limit, settings.max_file_lines)
        return Upload(file.filename or "upload.jsonl", purpose, size, lines)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    finally:
        await form.close()


def _copy(source: IO[bytes], destination: Path, limit: int, max_lines: int) -> tuple[int, int]:
    """Copy in chunks, counting bytes and requests (non-blank lines); fsync before returning.
    Only whether the current line has content is kept between chunks, never the line itself."""
    size = lines = 0
    current_has_text = False
    with destination.open("wb") as out:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.write(chunk)
            *ended, last = chunk.split(b"\n")
            for part in ended:
                lines += current_has_text or bool(part.strip())
                current_has_text = False
            current_has_text = current_has_text or bool(last.strip())
            _check_lines(lines, max_lines)
        lines += current_has_text
        _check_lines(lines, max_lines)
        out.flush()
        os.fsync(out.fileno())
    return size, lines


def _check_lines(lines: int, max_lines: int) -> None:
    if lines > max_lines:
        raise GatewayError(400, f"the file has more than {max_lines} lines (requests)", param="file")
