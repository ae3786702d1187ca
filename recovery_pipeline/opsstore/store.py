"""Engine creation and small helpers shared by every writer of the ops store."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from recovery_pipeline.opsstore.models import metadata, payloads


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_ops_engine(url: str, *, durable: bool = True) -> sa.Engine:
    """Create an engine for the ops store.

    SQLite gets WAL (concurrent readers with one writer at a time across processes), a busy
    timeout so concurrent writers wait instead of failing, and ``synchronous=FULL`` when an
    acknowledgement depends on the commit being on disk (``durable``).
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def init_ops_store(engine: sa.Engine) -> None:
    """Create every ops-store table that does not exist yet (idempotent)."""
    metadata.create_all(engine)


def insert_or_ignore(table: sa.Table, engine_or_conn) -> sa.Insert:
    """An INSERT that silently skips rows violating a unique constraint, for SQLite and Postgres."""
    dialect = engine_or_conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"unsupported ops store dialect: {dialect}")


def upsert(table: sa.Table, engine_or_conn, index_elements: list[str], update_columns: list[str]):
    """INSERT ... ON CONFLICT (index_elements) DO UPDATE SET update_columns = excluded.*."""
    dialect = engine_or_conn.dialect.name
    mod = {"postgresql": postgresql, "sqlite": sqlite}.get(dialect)
    if mod is None:
        raise ValueError(f"unsupported ops store dialect: {dialect}")
    stmt = mod.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=index_elements,
        set_={c: stmt.excluded[c] for c in update_columns},
    )


def store_payload(conn: sa.Connection, body: str) -> str:
    """Keep a payload once, addressed by its sha256; returns the reference."""
    ref = hashlib.sha256(body.encode()).hexdigest()
    conn.execute(insert_or_ignore(payloads, conn).values(ref=ref, body=body, created_at=utcnow()))
    return ref


def load_payload(conn: sa.Connection, ref: str) -> str | None:
    return conn.execute(sa.select(payloads.c.body).where(payloads.c.ref == ref)).scalar_one_or_none()


def try_insert(conn: sa.Connection, table: sa.Table, **values) -> bool:
    """Insert-or-ignore one row; True when it was inserted, False when a unique key already held it.

    Uses RETURNING, not ``rowcount``: psycopg 3 reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    """
    key = list(table.primary_key.columns)[0]
    stmt = insert_or_ignore(table, conn).values(**values).returning(key)
    return conn.execute(stmt).first() is not None
