"""``RecordWriter``: the one task that writes call records, beside the calls.

Owns the bounded queue between calls and the database, retries, the loss counters and
the periodic retention purge. ``submit`` is what a call's shell calls when the call ends:
it never waits and never raises. When the queue is full, the writer closed, or the
database down or slow, records are dropped and counted (``stats``), with a warning at
most every ``warn_interval_s``: a bad database degrades records, never calls.

It must not touch the Call or build records (``bridge.store.records``), nor know SQL
(``bridge.store.db``): it writes to any ``RecordSink``. Call ``submit`` from the event
loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from bridge.store.records import CallRecord

logger = logging.getLogger(__name__)


class RecordSink(Protocol):
    """Where records go (``bridge.store.db.RecordStore``, or a test double)."""

    async def save(self, record: CallRecord) -> None: ...

    async def purge_older_than(self, days: float) -> int: ...


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters since the writer was made. Lost records = ``dropped + failed``."""

    submitted: int = 0  # handed to ``submit``
    written: int = 0  # stored
    dropped: int = 0  # never tried: queue full, writer not running, or left at close
    failed: int = 0  # tried and given up: the database refused or did not answer
    retried: int = 0  # write attempts after a first failure
    queued: int = 0  # waiting now


class RecordWriter:
    """A bounded queue of records and the background task that writes them.

    ``attempts`` bounds the tries per record (each within ``write_timeout_s``, backing off
    ``backoff_s``, doubled each time). After a record fails every attempt the database is
    taken to be down and later records get one try each until a write succeeds, so a dead
    database drains the queue quickly instead of growing it. With ``retention_days`` the
    writer also purges older records at start and every ``purge_interval_s``.
    """

    def __init__(
        self,
        sink: RecordSink,
        *,
        max_queue: int = 1000,
        attempts: int = 3,
        write_timeout_s: float = 10.0,
        backoff_s: float = 0.5,
        warn_interval_s: float = 30.0,
        retention_days: float | None = None,
        purge_interval_s: float = 6 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queue < 1 or attempts < 1:
            raise ValueError("max_queue and attempts must be at least 1")
        if retention_days is not None and retention_days <= 0:
            raise ValueError("retention_days must be positive (or None to keep everything)")
        self.sink = sink
        self.attempts = attempts
        self.write_timeout_s = write_timeout_s
        self.backoff_s = backoff_s
        self.warn_interval_s = warn_interval_s
        self.retention_days = retention_days
        self.purge_interval_s = purge_interval_s
        self.clock = clock
        self._queue: asyncio.Queue[CallRecord] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._accepting = False
        self._healthy = True
        self._submitted = self._written = self._dropped = self._failed = self._retried = 0
        # Losses not yet reported in a warning, and when the last warning went out.
        self._unreported_dropped = self._unreported_failed = 0
        self._last_error = ""
        self._warned_at: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the background task(s); needs a running event loop."""
        if self._task is not None:
            raise RuntimeError("the record writer is already started")
        self._task = asyncio.create_task(self._run(), name="record writer")
        if self.retention_days is not None:
            self._purger = asyncio.create_task(self._purge_loop(), name="record retention")
        self._accepting = True

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, write what is queued within ``timeout_s``, drop the rest."""
        self._accepting = False
        if self._purger is not None:
            self._purger.cancel()
            await asyncio.gather(self._purger, return_exceptions=True)
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = self._queue.qsize()
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        if left:
            self._lose("dropped", left, "closed before they were written")
        self._report(force=True)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ the audio side

    def submit(self, record: CallRecord) -> bool:
        """Queue ``record`` for writing; False if it was dropped. Never blocks or raises."""
        try:
            self._submitted += 1
            if not self._accepting:
                self._lose("dropped", 1, "the writer is not running")
                return False
            self._queue.put_nowait(record)
            return True
        except asyncio.QueueFull:
            self._lose("dropped", 1, "the queue is full (database slow or down)")
        except Exception as exc:  # never let a record break a call
            self._lose("dropped", 1, f"{type(exc).__name__}: {exc}")
        return False

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            submitted=self._submitted,
            written=self._written,
            dropped=self._dropped,
            failed=self._failed,
            retried=self._retried,
            queued=self._queue.qsize(),
        )

    # ------------------------------------------------------------------ the task

    async def _run(self) -> None:
        while True:
            record = await self._queue.get()
            try:
                await self._write(record)
            except asyncio.CancelledError:  # closed mid-write: that record is lost
                self._lose("dropped", 1, "closed before they were written")
                raise
            except Exception:  # a bug here must not stop later records
                logger.exception("records: writer error on call %s", record.id)
                self._lose("failed", 1, "writer error")
            finally:
                self._queue.task_done()

    async def _write(self, record: CallRecord) -> None:
        attempts = self.attempts if self._healthy else 1
        for attempt in range(attempts):
            if attempt:
                self._retried += 1
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                async with asyncio.timeout(self.write_timeout_s):
                    await self.sink.save(record)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                logger.debug("records: writing call %s failed: %s", record.id, error)
                self._last_error = error
                continue
            self._written += 1
            if not self._healthy:
                self._healthy = True
                logger.info("records: the database is writable again")
            return
        self._healthy = False
        self._lose("failed", 1, self._last_error)

    async def _purge_loop(self) -> None:
        assert self.retention_days is not None
        while True:
            try:
                async with asyncio.timeout(max(self.write_timeout_s, 60.0)):
                    await self.sink.purge_older_than(self.retention_days)
            except Exception as exc:
                logger.warning("records: retention purge failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.purge_interval_s)

    # ------------------------------------------------------------------ losses

    def _lose(self, kind: str, count: int, why: str) -> None:
        if kind == "dropped":
            self._dropped += count
            self._unreported_dropped += count
        else:
            self._failed += count
            self._unreported_failed += count
        self._last_error = why
        self._report()

    def _report(self, *, force: bool = False) -> None:
        """One warning per ``warn_interval_s`` at most, summing the losses since the last."""
        if not (self._unreported_dropped or self._unreported_failed):
            return
        now = self.clock()
        if (
            not force
            and self._warned_at is not None
            and now - self._warned_at < self.warn_interval_s
        ):
            return
        logger.warning(
            "records: %d call records dropped and %d failed (%s); lost in all: %d",
            self._unreported_dropped,
            self._unreported_failed,
            self._last_error,
            self._dropped + self._failed,
        )
        self._warned_at = now
        self._unreported_dropped = self._unreported_failed = 0
