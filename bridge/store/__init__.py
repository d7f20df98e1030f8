"""Call records: what each call was, stored in SQLite (default) or PostgreSQL.

- ``records``: the record types (sans-I/O);
- ``recorder``: ``CallRecorder``, a Call observer that builds the record (sans-I/O);
- ``schema``: the tables, and records to rows and back;
- ``db``: engine, Alembic migrations (``migrations/``), queries and retention
  (``open_store``, ``RecordStore``);
- ``writer``: ``RecordWriter``, the bounded background task that alone writes records, so
  a slow or dead database loses records (counted) and never delays a call.

This file imports nothing, so that ``bridge.store.records`` stays free of SQL and asyncio.
The app creates the store and the writer in its lifespan and attaches a recorder per call.
"""
