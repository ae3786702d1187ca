"""The billing database: engine creation, tables, fast bulk writes of Arrow batches.

SQLite file by default (WAL, busy timeout, so the HTTP app and a sync can share it), PostgreSQL by
URL. Besides the export-contract tables of ``schema.py``, the engine keeps two operational tables
of its own here (not part of the export): ``idempotency_keys`` and ``billing_meta``.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from recovery_pipeline.billing_engine import schema

engine_metadata = sa.MetaData()

idempotency_keys = sa.Table(
    "idempotency_keys",
    engine_metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("invoice_id", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("response_json", sa.Text, nullable=False),
    sa.Column("created_at", schema.TS, nullable=False),
)

billing_meta = sa.Table(
    "billing_meta",
    engine_metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive (they are stored in UTC); make them aware."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_billing_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            # a bigger page cache (an upper bound, allocated lazily): bulk loads into tables keyed
            # by random ids otherwise thrash the default 2 MB cache
            cur.execute("PRAGMA cache_size=-262144")
            cur.close()
            # transactions are begun explicitly below (pysqlite's implicit BEGIN is turned off)
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):
            # writers queue on the busy timeout instead of failing on a read->write upgrade
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def init_billing_db(engine: sa.Engine, *, reset: bool = False) -> None:
    """Create the billing tables (idempotent). ``reset`` drops them first (a fresh generation)."""
    if reset:
        engine_metadata.drop_all(engine)
        schema.metadata.drop_all(engine)
    schema.metadata.create_all(engine)
    engine_metadata.create_all(engine)


def drop_entity_indexes(engine: sa.Engine) -> None:
    """Drop the secondary indexes of the export tables (before a bulk load into empty tables)."""
    for table in schema.ENTITIES.values():
        for index in table.indexes:
            index.drop(engine, checkfirst=True)


def create_entity_indexes(engine: sa.Engine) -> None:
    """(Re)create the secondary indexes of the export tables (after a bulk load)."""
    for table in schema.ENTITIES.values():
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def insert_or_ignore(table: sa.Table, conn) -> sa.Insert:
    mod = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    if mod is None:
        raise ValueError(f"unsupported billing database dialect: {conn.dialect.name}")
    return mod.insert(table).on_conflict_do_nothing()


def set_meta(engine: sa.Engine, key: str, value: str) -> None:
    mod = {"postgresql": postgresql, "sqlite": sqlite}[engine.dialect.name]
    stmt = mod.insert(billing_meta).values(key=key, value=value)
    stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value})
    with engine.begin() as conn:
        conn.execute(stmt)


def get_meta(engine: sa.Engine, key: str) -> str | None:
    """A value from ``billing_meta``; None when unset or when the table does not exist yet."""
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(billing_meta.c.value).where(billing_meta.c.key == key)).scalar_one_or_none()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return None


# --- bulk writes -------------------------------------------------------------------------------

def _sqlite_rows(batch: pa.Table) -> list[tuple]:
    cols = []
    for name in batch.column_names:
        col = batch.column(name)
        if pa.types.is_timestamp(col.type):
            # "YYYY-MM-DD HH:MM:SS.ffffff" in UTC: the format SQLAlchemy's SQLite DateTime
            # writes and reads back (a cast, much faster than pc.strftime)
            col = col.cast(pa.timestamp("us")).cast(pa.string())
        elif pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int8())
        cols.append(col.to_pylist())
    return list(zip(*cols, strict=True))


def _pg_copy(conn: sa.Connection, table_name: str, batch: pa.Table) -> None:
    buf = io.BytesIO()
    pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    buf.seek(0)
    dbapi = conn.connection.driver_connection
    cols = ", ".join(f'"{c}"' for c in batch.column_names)
    sql = f'COPY "{table_name}" ({cols}) FROM STDIN WITH (FORMAT csv)'
    with dbapi.cursor() as cur:
        if hasattr(cur, "copy_expert"):  # psycopg2
            cur.copy_expert(sql, buf)
        else:  # psycopg 3
            with cur.copy(sql) as copy:
                while chunk := buf.read(1 << 20):
                    copy.write(chunk)


def bulk_insert(engine: sa.Engine, table_name: str, batch: pa.Table) -> int:
    """Insert an Arrow table (columns of ``schema.py``) in one transaction; returns rows written.

    SQLite: one ``executemany`` of tuples; PostgreSQL: ``COPY ... FROM STDIN`` (CSV).
    """
    if batch.num_rows == 0:
        return 0
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            _pg_copy(conn, table_name, batch)
        else:
            cols = ", ".join(f'"{c}"' for c in batch.column_names)
            marks = ", ".join("?" for _ in batch.column_names)
            sql = f'INSERT INTO "{table_name}" ({cols}) VALUES ({marks})'
            for offset in range(0, batch.num_rows, 20_000):  # bounded Python tuples in memory
                conn.exec_driver_sql(sql, _sqlite_rows(batch.slice(offset, 20_000)))
    return batch.num_rows
