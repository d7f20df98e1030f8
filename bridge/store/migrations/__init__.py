"""Alembic migration history of the call-records schema (run by ``RecordStore.migrate``)."""
