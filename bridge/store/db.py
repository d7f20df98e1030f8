"""The records database: schema, engine, migrations, queries and retention.

Owns the connection side of call records: the async engine for a SQLite file (default)
or PostgreSQL, running the Alembic migration history in ``bridge/store/migrations``
(by ``migrate``, on start-up; never by hand), the queries and the retention purge. The
tables and the row mapping are ``bridge.store.schema``.

It must not be called from the audio path: calls hand records to
``bridge.store.writer.RecordWriter``, which alone writes. It knows nothing of the Call.

URLs (``database_url``): a plain path or ``sqlite:///path`` becomes
``sqlite+aiosqlite:///path``; ``postgresql://`` (or ``postgres://``) becomes
``postgresql+asyncpg://``. Passwords never reach the log (``RecordStore.url``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bridge.errors import ConfigError
from bridge.store.records import CallRecord, Turn
from bridge.store.schema import (
    VERSION_TABLE,
    call_row,
    calls,
    record_from_row,
    turn_from_row,
    turn_row,
    turns,
)

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Several workers may start at once: on PostgreSQL they queue for this lock to migrate.
_MIGRATE_LOCK_KEY = 0x6272_6964_6765  # "bridge"
MAX_PAGE = 500


def database_url(value: str) -> str:
    """The async SQLAlchemy URL for a SQLite path or URL, or a PostgreSQL URL."""
    value = value.strip()
    if not value:
        raise ConfigError("the records database is empty: give a SQLite path or a URL")
    if "://" not in value:
        return f"sqlite+aiosqlite:///{Path(value).expanduser().resolve()}"
    scheme, rest = value.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    raise ConfigError(
        f"DATABASE_URL scheme {scheme!r} is not supported: use a SQLite path or postgresql://"
    )


class RecordStore:
    """Call records in one database. ``open_store`` makes one; ``close`` disposes it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name  # "sqlite" or "postgresql"

    @property
    def url(self) -> str:
        """The URL with its password hidden: safe to log."""
        return self.engine.url.render_as_string(hide_password=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.engine.dispose()

    # ------------------------------------------------------------------ schema

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (creating it in an empty database).

        One transaction, serialised across processes: PostgreSQL takes an advisory lock,
        SQLite a write lock (``BEGIN IMMEDIATE``), so concurrent workers cannot both apply it.
        """
        async with self._writing() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATE_LOCK_KEY)))
            before = await conn.run_sync(_current_revision)
            await conn.run_sync(_upgrade)
            after = await conn.run_sync(_current_revision)
        if after != before:
            logger.info("records: schema migrated from %s to %s", before or "nothing", after)

    async def schema_revision(self) -> str | None:
        """The applied migration revision, or None for a database never migrated."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    # ------------------------------------------------------------------ writes

    async def save(self, record: CallRecord) -> None:
        """Store ``record``, replacing any earlier version of it (a retry is harmless)."""
        async with self._writing() as conn:
            await conn.execute(turns.delete().where(turns.c.call_id == record.id))
            await conn.execute(calls.delete().where(calls.c.id == record.id))
            await conn.execute(calls.insert().values(call_row(record)))
            if record.turns:
                await conn.execute(
                    turns.insert(),
                    [turn_row(record.id, seq, turn) for seq, turn in enumerate(record.turns)],
                )

    async def purge_older_than(self, days: float, *, now: datetime | None = None) -> int:
        """Delete the calls that started more than ``days`` ago; say how many."""
        if days <= 0:
            raise ValueError("retention must be a positive number of days")
        cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
        old = sa.select(calls.c.id).where(calls.c.started_at < cutoff)
        async with self._writing() as conn:
            await conn.execute(turns.delete().where(turns.c.call_id.in_(old)))
            result = await conn.execute(calls.delete().where(calls.c.started_at < cutoff))
        count = int(result.rowcount)
        if count:
            logger.info("records: purged %d calls older than %s days", count, days)
        return count

    # ------------------------------------------------------------------ reads

    async def get(self, call_id: str) -> CallRecord | None:
        """One call with its turns, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(calls.select().where(calls.c.id == call_id))).first()
            if row is None:
                return None
            by_call = await _turns_of(conn, [call_id])
        return record_from_row(row._mapping, by_call.get(call_id, ()))

    async def list_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agent: str | None = None,
        leg: str | None = None,
        end_reason: str | None = None,
        limit: int = 50,
        offset: int = 0,
        with_turns: bool = False,
    ) -> list[CallRecord]:
        """Calls that started in ``[since, until)``, newest first, one page of them.

        The other filters match exactly. Records come without their turns (``turns``
        is empty) unless ``with_turns``; ``get`` gives one call in full.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be within 1..{MAX_PAGE}")
        if offset < 0:
            raise ValueError("offset must not be negative")
        where = _filters(since, until, agent, leg, end_reason)
        query = (
            calls.select()
            .where(*where)
            .order_by(calls.c.started_at.desc(), calls.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.engine.connect() as conn:
            rows = [row._mapping for row in await conn.execute(query)]
            by_call = await _turns_of(conn, [r["id"] for r in rows]) if with_turns else {}
        return [record_from_row(row, by_call.get(row["id"], ())) for row in rows]

    async def count_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agent: str | None = None,
        leg: str | None = None,
        end_reason: str | None = None,
    ) -> int:
        """How many calls ``list_calls`` pages through with the same filters."""
        where = _filters(since, until, agent, leg, end_reason)
        query = sa.select(sa.func.count()).select_from(calls).where(*where)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def latest_turns(self, *, id_prefix: str, leg: str, limit: int) -> list[Turn]:
        """The latest ``limit`` turns of the calls of ``leg`` whose id starts with
        ``id_prefix`` (one conversation over several calls), oldest first."""
        if limit <= 0:
            return []
        query = (
            turns.select()
            .join(calls, calls.c.id == turns.c.call_id)
            .where(calls.c.leg == leg, calls.c.id.startswith(id_prefix, autoescape=True))
            .order_by(calls.c.started_at.desc(), turns.c.seq.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = [turn_from_row(row._mapping) for row in await conn.execute(query)]
        return rows[::-1]

    async def page_calls(
        self,
        *,
        before: tuple[datetime, str] | None = None,
        agent: str | None = None,
        leg: str | None = None,
        limit: int = 50,
    ) -> list[CallRecord]:
        """Up to ``limit`` calls older than ``before`` (``(started_at, id)`` of the last
        call of the previous page), newest first, without their turns.

        Keyset paging: a page stays right while new calls are being written.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be within 1..{MAX_PAGE}")
        where = _filters(None, None, agent, leg, None)
        if before is not None:
            at, call_id = before
            where.append(
                sa.or_(
                    calls.c.started_at < at,
                    sa.and_(calls.c.started_at == at, calls.c.id < call_id),
                )
            )
        query = (
            calls.select()
            .where(*where)
            .order_by(calls.c.started_at.desc(), calls.c.id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = [row._mapping for row in await conn.execute(query)]
        return [record_from_row(row, ()) for row in rows]

    async def turn_counts(self, call_ids: Sequence[str]) -> dict[str, int]:
        """How many turns each of ``call_ids`` has (calls with none are left out)."""
        if not call_ids:
            return {}
        query = (
            sa.select(turns.c.call_id, sa.func.count())
            .where(turns.c.call_id.in_(call_ids))
            .group_by(turns.c.call_id)
        )
        async with self.engine.connect() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

    # ------------------------------------------------------------------ internals

    def _writing(self) -> _Writing:
        return _Writing(self.engine)


class _Writing:
    """A write transaction; on SQLite it takes the write lock up front (no upgrade races)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncConnection:
        conn = self._conn = await self._engine.connect()
        try:
            if self._engine.dialect.name == "sqlite":
                await conn.execution_options(bridge_begin="BEGIN IMMEDIATE")
            await conn.begin()
        except BaseException:
            await conn.close()
            raise
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        try:
            if exc_type is None:
                await self._conn.commit()
            else:
                await self._conn.rollback()
        finally:
            await self._conn.close()


async def open_store(
    url: str,
    *,
    migrate: bool = True,
    connect_timeout_s: float = 5.0,
    statement_timeout_s: float = 10.0,
) -> RecordStore:
    """A store on ``url`` (a SQLite path or a URL, see ``database_url``), migrated.

    A SQLite file and its directory are created. The timeouts bound how long a down or
    slow server can hold a connection attempt or a statement.
    """
    full = make_url(database_url(url))
    kwargs: dict[str, Any] = {}
    if full.get_backend_name() == "sqlite":
        if full.database and full.database != ":memory:":
            Path(full.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": statement_timeout_s}
    else:
        kwargs.update(
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=4,
            pool_timeout=connect_timeout_s,
            connect_args={"timeout": connect_timeout_s, "command_timeout": statement_timeout_s},
        )
    engine = create_async_engine(full, **kwargs)
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine, busy_ms=int(statement_timeout_s * 1000))
    store = RecordStore(engine)
    if migrate:
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
        logger.info("records: %s at schema %s", store.url, await store.schema_revision())
    return store


# ---------------------------------------------------------------------- helpers


def _sqlite_transactions(engine: AsyncEngine, *, busy_ms: int) -> None:
    """Real transactions on SQLite (transactional DDL, BEGIN IMMEDIATE for writes).

    The recipe from SQLAlchemy's SQLite dialect docs ("Serializable isolation /
    Savepoints / Transactional DDL"): the driver stops emitting BEGIN; we emit it.
    WAL lets the admin API read while the writer writes.
    """

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            f"busy_timeout={busy_ms}",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("bridge_begin", "BEGIN"))


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _filters(
    since: datetime | None,
    until: datetime | None,
    agent: str | None,
    leg: str | None,
    end_reason: str | None,
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if since is not None:
        where.append(calls.c.started_at >= since)
    if until is not None:
        where.append(calls.c.started_at < until)
    if agent is not None:
        where.append(calls.c.agent == agent)
    if leg is not None:
        where.append(calls.c.leg == leg)
    if end_reason is not None:
        where.append(calls.c.end_reason == end_reason)
    return where


async def _turns_of(conn: AsyncConnection, call_ids: Sequence[str]) -> dict[str, list[Turn]]:
    if not call_ids:
        return {}
    query = (
        turns.select().where(turns.c.call_id.in_(call_ids)).order_by(turns.c.call_id, turns.c.seq)
    )
    by_call: dict[str, list[Turn]] = {}
    for row in await conn.execute(query):
        by_call.setdefault(row.call_id, []).append(turn_from_row(row._mapping))
    return by_call
