"""The Batch API's parts in one gateway: the store (opened lazily), the runner and the metrics.

The store is opened at start when the data directory already holds a database (to resume its
unfinished batches), else on the first Files or Batches request: a gateway that never sees a
batch never creates a directory. If another gateway process holds the directory, the Batch API
answers 503 (two processes driving the same batches would send lines twice); live traffic is
not affected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gateway.auth import Client
from gateway.batches.dispatch import Dispatch
from gateway.batches.observe import BatchObserver
from gateway.batches.runner import BatchRunner
from gateway.batches.store import BatchStore, StoreBusy
from gateway.contract.batch_settings import BatchSettings, resolve_data_dir
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics

log = logging.getLogger("tandem.gateway.batches")


class BatchService:
    def __init__(
        self,
        settings: BatchSettings,
        dispatch: Dispatch,
        served_names: frozenset[str],
        client_named: Callable[[str], Client | None],
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.data_dir: Path = resolve_data_dir(settings)
        self._dispatch = dispatch
        self._served_names = served_names
        self._client_named = client_named
        self._runner: BatchRunner | None = None
        self._busy: str | None = None
        self.observer = BatchObserver(metrics, self._counts)

    def _counts(self) -> dict[str, int]:
        return self._runner.store.count_by_status() if self._runner is not None else {}

    async def start(self) -> None:
        """Resume unfinished batches if the data directory holds any state."""
        if (self.data_dir / "batches.sqlite3").exists():
            self._open()

    def _open(self) -> BatchRunner | None:
        if self._runner is None and self._busy is None:
            try:
                store = BatchStore(self.data_dir)
            except StoreBusy as exc:
                self._busy = str(exc)
                log.warning("%s: the Batch API is off in this process", exc)
                return None
            except OSError as exc:  # not creatable or writable: say so, and try again next time
                log.error("cannot open the batch data directory %s: %s", self.data_dir, exc.strerror)
                raise GatewayError(503, f"the Batch API cannot open its data directory: {exc.strerror}") from None
            self._runner = BatchRunner(
                store, self._dispatch, self.settings, self._served_names, self._client_named, self.observer
            )
            self._runner.resume()
            log.info("batch data directory %s", self.data_dir)
        return self._runner

    def runner(self) -> BatchRunner:
        """The runner, opening the store on first use; 503 if another process holds it."""
        runner = self._open()
        if runner is None:
            raise GatewayError(503, f"the Batch API is unavailable: {self._busy}")
        return runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.stop()
            self._runner.store.close()
            self._runner = None
