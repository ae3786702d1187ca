"""The operational store: webhook inbox, push ledger, request log, dead letters, audit trail,
poll cursors, control flags and alert incidents. SQLAlchemy; SQLite (WAL) by default, Postgres by URL."""

from recovery_pipeline.opsstore.models import metadata
from recovery_pipeline.opsstore.store import create_ops_engine, init_ops_store, insert_or_ignore

__all__ = ["metadata", "create_ops_engine", "init_ops_store", "insert_or_ignore"]
