"""Alembic's entry point for the call-records schema, driven by ``RecordStore.migrate``.

Runs online only, on the connection ``migrate`` hands over in ``config.attributes`` (inside
its transaction, holding its lock); there is no alembic.ini and no URL here. New revisions
are written by hand next to ``versions/v0001_create_call_records.py`` (ops in batch mode,
so SQLite can alter tables); ``tests/store`` checks the result matches ``schema.metadata``.
"""

from __future__ import annotations

from alembic import context


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("call-records migrations run through RecordStore.migrate()")
    context.configure(
        connection=connection,
        version_table=config.attributes.get("version_table", "call_records_version"),
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("call-records migrations have no offline (--sql) mode")
run_migrations_online()
