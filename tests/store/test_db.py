"""The records database, on SQLite and on a real PostgreSQL server (see conftest)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from bridge.errors import ConfigError
from bridge.store.db import RecordStore, database_url, open_store
from bridge.store.records import (
    BargeInRecord,
    CallRecord,
    DtmfPress,
    ModelReconnect,
    TokenUsage,
    ToolCallRecord,
    Turn,
)
from bridge.store.schema import VERSION_TABLE, metadata

NOW = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


def full_record(call_id: str = "CA" + "7" * 32, *, started_at: datetime = NOW) -> CallRecord:
    """A record with every field set, and text that SQL quoting could trip on."""
    t = started_at
    return CallRecord(
        id=call_id,
        leg="phone",
        direction="inbound",
        agent="support",
        from_="***1234",
        to="sip:***6543@example.sip.twilio.com",
        started_at=t,
        answered_at=t + timedelta(seconds=0.4),
        ended_at=t + timedelta(seconds=61.25),
        end_reason="caller hung up",
        turns=(
            Turn("assistant", "Hello! How can I help?", t + timedelta(seconds=0.9)),
            Turn(
                "user",
                "Qu'est-ce que c'est ? 100% \"sûr\"; DROP TABLE x; -- ☎",
                t + timedelta(seconds=3),
            ),
            Turn("assistant", "Our opening hours are", t + timedelta(seconds=4.5), True, 2000),
        ),
        barge_ins=(
            BargeInRecord(t + timedelta(seconds=6), "local", 2000),
            BargeInRecord(t + timedelta(seconds=9), "client", None),
        ),
        tool_calls=(
            ToolCallRecord("lookup_order", 182.5, "ok", t + timedelta(seconds=7)),
            ToolCallRecord("transfer_call", 12.0, "error"),
        ),
        dtmf="42#*",
        usage=TokenUsage(1234, 567, 1801),
        reconnects=2,
        dtmf_presses=tuple(
            DtmfPress(t + timedelta(seconds=10 + i), digit) for i, digit in enumerate("42#*")
        ),
        model_sessions=(
            ModelReconnect(
                t + timedelta(seconds=20), "session expired", t + timedelta(seconds=20.3), 2, 4, 260
            ),
            ModelReconnect(
                t + timedelta(seconds=40), "recycled", t + timedelta(seconds=40.1), 3, 9, 0
            ),
            ModelReconnect(t + timedelta(seconds=61), "the model socket is closing"),
        ),
    )


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def _schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
    )
    return list(compare_metadata(context, metadata))


def test_migrations_create_the_schema_in_an_empty_database(db_url, caplog):
    caplog.set_level(logging.INFO, logger="bridge.store")

    def migrated() -> list[str]:
        return [r.getMessage() for r in caplog.records if "schema migrated" in r.getMessage()]

    async def main() -> None:
        store = await open_store(db_url, migrate=False)
        async with store:
            assert await store.schema_revision() is None
            await store.migrate()
            assert await store.schema_revision() == "0003"
            assert migrated() == ["records: schema migrated from nothing to 0003"]
            await store.migrate()  # a second start-up changes nothing
            assert len(migrated()) == 1
            async with store.engine.connect() as conn:
                tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
                assert {"call_records", "call_turns", VERSION_TABLE} <= tables
                # The migrations build exactly the tables the queries use.
                assert await conn.run_sync(_schema_diff) == []

    run(main())


def test_workers_starting_together_migrate_once(db_url):
    async def main() -> None:
        stores = await asyncio.gather(*(open_store(db_url) for _ in range(3)))
        for store in stores:
            assert await store.schema_revision() == "0003"
            await store.close()

    run(main())


def test_a_record_round_trips_with_every_field(db_url):
    async def main() -> None:
        async with await open_store(db_url) as store:
            record = full_record()
            await store.save(record)
            assert await store.get(record.id) == record
            assert await store.get("CA-missing") is None
            # A retried write replaces, never duplicates.
            shorter = CallRecord(
                id=record.id, leg="phone", direction="inbound", agent="support",
                from_="-", to="-", started_at=NOW,
            )  # fmt: skip
            await store.save(shorter)
            assert await store.get(record.id) == shorter
            assert await store.count_calls() == 1

    run(main())


def test_times_come_back_in_utc_whatever_zone_they_went_in_with(db_url):
    async def main() -> None:
        async with await open_store(db_url) as store:
            paris = NOW.astimezone(ZoneInfo("Europe/Paris"))
            record = CallRecord(
                id="tz", leg="softphone", direction="outbound", agent="a",
                from_="-", to="-", started_at=paris,
            )  # fmt: skip
            await store.save(record)
            loaded = await store.get("tz")
            assert loaded is not None
            assert loaded.started_at == NOW and loaded.started_at.tzinfo == UTC

    run(main())


def test_list_filters_and_pages(db_url):
    async def main() -> None:
        async with await open_store(db_url) as store:
            for i in range(12):
                base = full_record(f"call-{i:02d}", started_at=NOW + timedelta(minutes=i))
                await store.save(_vary(base, i))
            newest_first = [r.id for r in await store.list_calls(limit=500)]
            assert newest_first == [f"call-{i:02d}" for i in reversed(range(12))]

            pages = [await store.list_calls(limit=5, offset=o) for o in (0, 5, 10, 15)]
            assert [len(p) for p in pages] == [5, 5, 2, 0]
            assert [r.id for p in pages for r in p] == newest_first
            assert all(r.turns == () for p in pages for r in p)  # a list leaves turns out
            with_turns = await store.list_calls(limit=2, with_turns=True)
            assert all(len(r.turns) == 3 for r in with_turns)

            since, until = NOW + timedelta(minutes=3), NOW + timedelta(minutes=7)
            assert [r.id for r in await store.list_calls(since=since, until=until)] == [
                "call-06", "call-05", "call-04", "call-03",
            ]  # fmt: skip
            assert await store.count_calls(since=since, until=until) == 4
            sales = await store.list_calls(agent="sales")
            assert [r.id for r in sales] == ["call-09", "call-06", "call-03", "call-00"]
            both = await store.list_calls(
                agent="sales", leg="softphone", end_reason="caller hung up"
            )
            assert [r.id for r in both] == ["call-09"]
            assert await store.count_calls(leg="phone") == 6
            assert await store.count_calls(end_reason="nope") == 0
            with pytest.raises(ValueError):
                await store.list_calls(limit=0)
            with pytest.raises(ValueError):
                await store.list_calls(offset=-1)

    run(main())


def _vary(record: CallRecord, i: int) -> CallRecord:
    return replace(
        record,
        agent="sales" if i % 3 == 0 else "support",
        leg="softphone" if i % 2 else "phone",
        end_reason="completed" if i < 6 else "caller hung up",
    )


def test_retention_purges_old_calls_and_their_turns(db_url):
    async def main() -> None:
        async with await open_store(db_url) as store:
            for days_ago in (40, 31, 29, 1):
                record = full_record(f"ago-{days_ago}", started_at=NOW - timedelta(days=days_ago))
                await store.save(record)
            assert await store.purge_older_than(30, now=NOW) == 2
            assert [r.id for r in await store.list_calls()] == ["ago-1", "ago-29"]
            assert await store.purge_older_than(30, now=NOW) == 0
            async with store.engine.connect() as conn:
                call_ids = await conn.execute(sa.text("SELECT DISTINCT call_id FROM call_turns"))
                assert {row[0] for row in call_ids} == {"ago-1", "ago-29"}
            with pytest.raises(ValueError):
                await store.purge_older_than(0)

    run(main())


def test_long_end_reasons_are_clipped_not_refused(db_url):
    async def main() -> None:
        async with await open_store(db_url) as store:
            record = CallRecord(
                id="long", leg="phone", direction="inbound", agent="a", from_="-", to="-",
                started_at=NOW, end_reason="internal error: " + "x" * 2000,
            )  # fmt: skip
            await store.save(record)
            loaded = await store.get("long")
            assert loaded is not None and loaded.end_reason is not None
            assert len(loaded.end_reason) == 500

    run(main())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/calls", "postgresql+asyncpg://u:p@db:5432/calls"),
        ("postgres://u@db/calls", "postgresql+asyncpg://u@db/calls"),
        ("postgresql+asyncpg://db/calls", "postgresql+asyncpg://db/calls"),
        ("sqlite:///var/lib/bridge/calls.db", "sqlite+aiosqlite:///var/lib/bridge/calls.db"),
        ("sqlite+aiosqlite:///calls.db", "sqlite+aiosqlite:///calls.db"),
        ("/srv/calls.db", "sqlite+aiosqlite:////srv/calls.db"),
    ],
)
def test_database_url(given, expected):
    assert database_url(given) == expected


def test_database_url_refuses_what_it_cannot_serve():
    for bad in ("", "mysql://db/calls"):
        with pytest.raises(ConfigError):
            database_url(bad)


def test_the_logged_url_hides_the_password():
    async def main() -> None:
        store = await open_store("postgresql://bridge:s3cret@127.0.0.1:1/calls", migrate=False)
        async with store:
            assert "s3cret" not in store.url and "bridge" in store.url
            assert isinstance(store, RecordStore)

    run(main())
