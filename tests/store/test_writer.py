"""The record writer: writes beside the calls, and loses records (counted) rather than wait."""

from __future__ import annotations

import asyncio
import inspect
import logging
from datetime import UTC, datetime, timedelta

import pytest

from bridge.store.db import open_store
from bridge.store.records import CallRecord
from bridge.store.writer import RecordWriter, WriterStats
from tests.store.conftest import free_port
from tests.store.helpers import eventually

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def record(i: int) -> CallRecord:
    return CallRecord(
        id=f"call-{i}", leg="phone", direction="inbound", agent="a", from_="-", to="-",
        started_at=NOW + timedelta(seconds=i), end_reason="caller hung up",
    )  # fmt: skip


class FakeSink:
    """A database that can hang (``gate`` closed) or fail its first ``failures`` writes."""

    def __init__(self, *, failures: int = 0) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = failures
        self.saving = 0  # writes started
        self.saved: list[str] = []
        self.purges: list[float] = []

    async def save(self, record: CallRecord) -> None:
        self.saving += 1
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        self.saved.append(record.id)

    async def purge_older_than(self, days: float) -> int:
        self.purges.append(days)
        return 0


def test_submit_is_synchronous_so_it_cannot_wait():
    assert not inspect.iscoroutinefunction(RecordWriter.submit)


def test_records_reach_the_database(db_url):
    async def main() -> None:
        async with await open_store(db_url) as store:
            async with RecordWriter(store) as writer:
                assert all(writer.submit(record(i)) for i in range(20))
                await eventually(lambda: writer.stats.written == 20)
            assert writer.stats == WriterStats(submitted=20, written=20)
            assert await store.count_calls() == 20

    asyncio.run(main())


def test_a_full_queue_drops_and_counts():
    async def main() -> None:
        sink = FakeSink()
        sink.gate.clear()  # the database hangs
        writer = RecordWriter(sink, max_queue=2, write_timeout_s=60)
        writer.start()
        assert writer.submit(record(0))
        await eventually(lambda: sink.saving == 1)  # the writer holds record 0
        accepted = [writer.submit(record(i)) for i in range(1, 6)]
        assert accepted == [True, True, False, False, False]
        assert writer.stats == WriterStats(submitted=6, dropped=3, queued=2)
        sink.gate.set()  # the database recovers
        await eventually(lambda: writer.stats.written == 3)
        await writer.close()
        assert sink.saved == ["call-0", "call-1", "call-2"]
        assert writer.stats == WriterStats(submitted=6, written=3, dropped=3)

    asyncio.run(main())


def test_a_failed_write_is_retried_a_bounded_number_of_times():
    async def main() -> None:
        sink = FakeSink(failures=2)
        async with RecordWriter(sink, attempts=3, backoff_s=0) as writer:
            writer.submit(record(0))
            await eventually(lambda: writer.stats.written == 1)
            assert writer.stats.retried == 2
            sink.failures = 10
            writer.submit(record(1))
            await eventually(lambda: writer.stats.failed == 1)
            # The database is now taken to be down: one try per record until one succeeds.
            writer.submit(record(2))
            await eventually(lambda: writer.stats.failed == 2)
            assert sink.saving == 3 + 3 + 1
            sink.failures = 0
            writer.submit(record(3))
            await eventually(lambda: writer.stats.written == 2)
        assert writer.stats == WriterStats(submitted=4, written=2, failed=2, retried=4)

    asyncio.run(main())


def test_a_slow_database_times_out_and_counts():
    async def main() -> None:
        sink = FakeSink()
        sink.gate.clear()  # never answers
        async with RecordWriter(sink, attempts=2, write_timeout_s=0.05, backoff_s=0) as writer:
            writer.submit(record(0))
            await eventually(lambda: writer.stats.failed == 1)
        assert writer.stats == WriterStats(submitted=1, failed=1, retried=1)

    asyncio.run(main())


def test_a_database_that_is_down_loses_records_without_disturbing_submit(caplog):
    """A PostgreSQL URL whose port nobody listens on: every write is refused."""

    async def main() -> None:
        store = await open_store(
            f"postgresql://postgres@127.0.0.1:{free_port()}/calls",
            migrate=False,
            connect_timeout_s=2,
        )
        async with store:
            writer = RecordWriter(store, max_queue=5, attempts=2, backoff_s=0.01)
            writer.start()
            results = [writer.submit(record(i)) for i in range(50)]
            assert results == [True] * 5 + [False] * 45  # nothing was written meanwhile
            await eventually(lambda: writer.stats.failed == 5)
            await writer.close()
        assert writer.stats == WriterStats(submitted=50, dropped=45, failed=5, retried=1)

    with caplog.at_level(logging.WARNING, logger="bridge.store.writer"):
        asyncio.run(main())
    warnings = [r for r in caplog.records if r.name == "bridge.store.writer"]
    # Rate-limited: one at the first loss, one summary at close; not one per record.
    assert 1 <= len(warnings) <= 2
    assert "lost in all: 50" in warnings[-1].getMessage()


def test_warnings_are_rate_limited(caplog):
    async def main() -> None:
        clock = [0.0]
        writer = RecordWriter(FakeSink(), max_queue=1, warn_interval_s=30, clock=lambda: clock[0])
        with caplog.at_level(logging.WARNING, logger="bridge.store.writer"):
            for _ in range(100):  # not started: every record is dropped
                writer.submit(record(0))
            assert len(caplog.records) == 1
            clock[0] = 31.0
            writer.submit(record(0))
            assert len(caplog.records) == 2
            assert "100 call records dropped" in caplog.records[1].getMessage()
        assert writer.stats.dropped == 101

    asyncio.run(main())


def test_close_drains_within_its_timeout_and_counts_the_rest():
    async def main() -> None:
        sink = FakeSink()
        writer = RecordWriter(sink, write_timeout_s=60)
        writer.start()
        for i in range(3):
            writer.submit(record(i))
        await eventually(lambda: len(sink.saved) == 3)
        sink.gate.clear()  # now the database hangs
        for i in range(3, 6):
            writer.submit(record(i))
        await eventually(lambda: sink.saving == 4)
        await writer.close(timeout_s=0.05)
        assert writer.stats == WriterStats(submitted=6, written=3, dropped=3)
        assert not writer.submit(record(9))  # closed: dropped, not raised
        assert writer.stats.dropped == 4

    asyncio.run(main())


def test_submit_never_raises_even_on_a_misuse():
    writer = RecordWriter(FakeSink())
    assert not writer.submit(record(0))  # never started, and no event loop at all
    assert writer.stats.dropped == 1


def test_retention_purges_at_start():
    async def main() -> None:
        sink = FakeSink()
        async with RecordWriter(sink, retention_days=30):
            await eventually(lambda: sink.purges == [30])

    asyncio.run(main())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        RecordWriter(FakeSink(), max_queue=0)
    with pytest.raises(ValueError):
        RecordWriter(FakeSink(), retention_days=0)
