"""Drives every batch from validating to its end, and resumes them after a restart.

Per batch: validate the input file (in a worker thread), then send its pending lines in line
order through the gateway's own generation path (gateway.batches.dispatch), at most
`per_batch_concurrency` of them at once and `global_concurrency` over all batches, then write
the output and error files. Each answer is recorded in the store before the next step counts on
it, so a restarted gateway finds every unfinished batch in the store and sends only the lines
that have no recorded answer: a line whose answer was recorded is never sent again.

Transient refusals (429 from a key's or class's limit, 502/503 when no replica could take the
line) are not answers: the line waits and is sent again, until the batch's window closes.
Cancelling or expiry stops new lines and aborts the running ones (the proxy sees a client
disconnect and the engine aborts); lines with no answer go to the error file with
`batch_cancelled` / `batch_expired`, so nothing submitted disappears without a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from gateway.auth import Client
from gateway.batches.dispatch import Dispatch, Reply
from gateway.batches.objects import BatchError, BatchErrors, BatchObject, new_id
from gateway.batches.observe import BatchObserver
from gateway.batches.store import BatchStore, LineResult, PendingLine, now
from gateway.batches.validate import InputValidator
from gateway.contract.batch_settings import BatchSettings

log = logging.getLogger("tandem.gateway.batches")

RETRY_STATUSES = frozenset({429, 502, 503})
_PAGE = 256
StopReason = Literal["cancelled", "expired", "shutdown"]
UNFINISHED_LINE: dict[StopReason, tuple[str, str]] = {
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
}


def retry_delay(attempt: int) -> float:
    """Backoff between sends of a refused line: 0.25 s doubling to at most 5 s."""
    return min(5.0, 0.25 * 2**attempt)


@dataclass
class _Run:
    """One batch being driven: why it stops (if it does) and the abort switches of its lines."""

    batch_id: str
    reason: StopReason | None = None
    aborts: set[asyncio.Event] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, reason: StopReason) -> None:
        if self.reason is None or reason == "cancelled":
            self.reason = reason
        for abort in self.aborts:
            abort.set()
        self.wake.set()


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        dispatch: Dispatch,
        settings: BatchSettings,
        served_names: frozenset[str],
        client_named: Callable[[str], Client | None],
        observer: BatchObserver,
    ) -> None:
        self.store = store
        self._dispatch = dispatch
        self._settings = settings
        self._served_names = served_names
        self._client_named = client_named
        self._observer = observer
        self._global = asyncio.Semaphore(settings.global_concurrency)
        self._runs: dict[str, _Run] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def resume(self) -> None:
        """Drive every batch the store holds unfinished (after a restart: where it stopped)."""
        for batch_id in self.store.unfinished():
            self.submit(batch_id)

    def submit(self, batch_id: str) -> None:
        if batch_id in self._tasks:
            return
        self._runs[batch_id] = _Run(batch_id)
        task = asyncio.create_task(self._drive(batch_id), name=f"batch {batch_id}")
        self._tasks[batch_id] = task
        task.add_done_callback(lambda _: self._forget(batch_id))

    def _forget(self, batch_id: str) -> None:
        self._tasks.pop(batch_id, None)
        self._runs.pop(batch_id, None)

    def cancel(self, batch_id: str) -> BatchObject:
        """Move a running batch to cancelling; the driver aborts its lines and ends it cancelled."""
        batch = self.store.update(batch_id, status="cancelling", cancelling_at=now())
        run = self._runs.get(batch_id)
        if run is None:
            self.submit(batch_id)
            run = self._runs[batch_id]
        run.stop("cancelled")
        return batch

    async def stop(self) -> None:
        """Stop driving (gateway shutdown): running lines are aborted and stay pending."""
        tasks = list(self._tasks.values())
        for run in self._runs.values():
            run.stop("shutdown")
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drive(self, batch_id: str) -> None:
        run = self._runs[batch_id]
        try:
            stored = self.store.get_batch(batch_id)
            assert stored is not None
            batch = stored.batch
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, (batch.expires_at or math.inf) - time.time()), run.stop, "expired"
            )
            try:
                await self._drive_stages(run, batch, stored.owner)
            finally:
                expiry.cancel()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s stopped on an unexpected error; it resumes at the next start", batch_id)

    async def _drive_stages(self, run: _Run, batch: BatchObject, owner: str) -> None:
        if batch.status == "validating":
            batch = await self._validate(batch)
            if run.reason == "cancelled":
                batch = self.store.update(batch.id, status="cancelling", cancelling_at=batch.cancelling_at or now())
            if batch.status == "failed":
                return
        client = self._client_named(owner)
        if client is None:
            error = BatchError(code="key_revoked", message=f"the API key {owner!r} that created the batch is gone")
            self.store.update(batch.id, status="failed", failed_at=now(), errors=BatchErrors(data=[error]))
            return
        if batch.status == "in_progress" and run.reason is None:
            await self._send_lines(run, batch, client)
        if run.reason == "shutdown":
            return
        batch = self._current(batch.id)
        if batch.status == "cancelling" or run.reason == "cancelled":
            await asyncio.to_thread(self.store.finalize, batch.id, "cancelled", UNFINISHED_LINE["cancelled"])
        elif run.reason == "expired" and self.store.pending_lines(batch.id, 0, 1):
            await asyncio.to_thread(self.store.finalize, batch.id, "expired", UNFINISHED_LINE["expired"])
        else:
            if batch.status != "finalizing":
                self.store.update(batch.id, status="finalizing", finalizing_at=now())
            await asyncio.to_thread(self.store.finalize, batch.id, "completed", None)
        log.info("batch %s: %s", batch.id, self._current(batch.id).status)

    def _current(self, batch_id: str) -> BatchObject:
        stored = self.store.get_batch(batch_id)
        assert stored is not None
        return stored.batch

    async def _validate(self, batch: BatchObject) -> BatchObject:
        stored_file = self.store.get_file(batch.input_file_id)
        if stored_file is None or not stored_file.path.exists():
            error = BatchError(code="file_not_found", message=f"input file {batch.input_file_id} no longer exists")
            return self.store.update(batch.id, status="failed", failed_at=now(), errors=BatchErrors(data=[error]))
        validator = InputValidator(
            stored_file.path, batch.endpoint, self._served_names, self._settings.max_validation_errors
        )

        def run() -> BatchObject:
            return self.store.start_lines(batch.id, validator)

        return await asyncio.to_thread(run)

    async def _send_lines(self, run: _Run, batch: BatchObject, client: Client) -> None:
        cap = min(self._settings.per_batch_concurrency, client.max_concurrent or self._settings.per_batch_concurrency)
        per_batch = asyncio.Semaphore(cap)
        running: set[asyncio.Task[None]] = set()
        after = 0
        while run.reason is None:
            page = self.store.pending_lines(batch.id, after, _PAGE)
            if not page:
                break
            for line in page:
                after = line.line_no
                await per_batch.acquire()
                await self._global.acquire()
                if run.reason is not None:
                    self._global.release()
                    per_batch.release()
                    break
                task = asyncio.create_task(self._run_line(run, batch, line, client))
                running.add(task)

                def done(t: asyncio.Task[None], sem: asyncio.Semaphore = per_batch) -> None:
                    running.discard(t)
                    self._global.release()
                    sem.release()

                task.add_done_callback(done)
        try:
            if running:
                await asyncio.gather(*running)
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            raise

    async def _run_line(self, run: _Run, batch: BatchObject, line: PendingLine, client: Client) -> None:
        abort = asyncio.Event()
        run.aborts.add(abort)
        request_id = new_id("batch_req_")
        try:
            attempt = 0
            while run.reason is None:
                try:
                    reply = await self._dispatch(batch.endpoint, line.body, client, request_id, abort)
                except Exception:
                    log.exception("batch %s line %d failed inside the gateway", batch.id, line.line_no)
                    reply = Reply(500, b'{"error": {"message": "internal gateway error", "code": 500}}')
                if reply is None:
                    return  # aborted: stays pending
                if reply.status in RETRY_STATUSES:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(retry_delay(attempt)):
                            await run.wake.wait()
                    attempt += 1
                    continue
                result = line_result(request_id, line.custom_id, reply)
                if self.store.record(batch.id, line.line_no, result):
                    self._observer.line_done(client.name, result.ok)
                return
        finally:
            run.aborts.discard(abort)


def line_result(request_id: str, custom_id: str, reply: Reply) -> LineResult:
    """OpenAI's output line for an answer: the body as JSON (as text if it is not JSON)."""
    try:
        body: Any = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        body = reply.body.decode("utf-8", "replace")
    usage = body.get("usage") if isinstance(body, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    record = {
        "id": request_id,
        "custom_id": custom_id,
        "response": {"status_code": reply.status, "request_id": request_id, "body": body},
        "error": None,
    }
    return LineResult(
        orjson.dumps(record),
        reply.status,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )
