"""dlt source over the SQL billing database (SQLAlchemy URL), incremental on ``updated_at``.

One resource per (entity, month): rows *created* in that month whose ``updated_at`` is at or after
the resource's cursor (a typed ``dlt.sources.incremental[datetime]`` with an explicit initial
value, kept in dlt state per month, so a month's re-sync reads only what changed since its last
run). ``write_disposition="merge"`` on the entity's canonical id: an invoice that changes state
later is updated in ``billing_raw``, not duplicated.

The reader is our own chunked SQLAlchemy -> Arrow reader (``yield_per`` chunks, one Arrow table
per chunk, conformed to the raw contract like the export path): no per-row dicts reach dlt.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import dlt
import pyarrow as pa
import sqlalchemy as sa

from recovery_pipeline.billing_engine.schema import ENTITIES, PRIMARY_KEYS
from recovery_pipeline.ingest.contract import conform_arrow
from recovery_pipeline.ingest.months import month_bounds, month_key

INITIAL_CURSOR = datetime(1970, 1, 1, tzinfo=UTC)
CHUNK_ROWS = 50_000
RAW_ENTITIES = ("customers", "subscriptions", "invoices", "transactions")


def _to_utc(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):  # pendulum & co.
        value = datetime.fromisoformat(str(value))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def bind_ts(engine_or_conn, value: datetime):
    """A UTC timestamp as the dialect compares it (SQLite stores naive UTC text)."""
    value = _to_utc(value)
    if engine_or_conn.dialect.name == "sqlite":
        return value.replace(tzinfo=None)
    return value


def _arrow_type(col: sa.Column) -> pa.DataType:
    t = col.type
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    return pa.string()


def rows_to_arrow(table: sa.Table, rows: list) -> pa.Table:
    arrays = {}
    for i, col in enumerate(table.columns):
        typ = _arrow_type(col)
        values = [r[i] for r in rows]
        if pa.types.is_timestamp(typ):
            values = [_to_utc(v) for v in values]
        arrays[col.name] = pa.array(values, typ)
    return pa.table(arrays)


def read_changed_rows(engine: sa.Engine, entity: str, month: str, since: datetime | None,
                      chunk_rows: int = CHUNK_ROWS, *, future: bool = False) -> Iterator[pa.Table]:
    """Rows of ``entity`` created in ``month`` with ``since <= updated_at <= now``, as Arrow chunks.

    ``future=True`` reads instead the rows whose ``updated_at`` lies in the future: they must not
    drive the cursor (it would jump past every real change to come), so they are read on every run
    (a handful of bad rows; merged on the key, so idempotent) and reach quarantine with a reason.
    """
    table = ENTITIES[entity]
    start, end = month_bounds(month)
    now = datetime.now(UTC)
    with engine.connect() as conn:
        conds = [table.c.created_at >= bind_ts(conn, start)]
        if future:
            conds.append(table.c.updated_at > bind_ts(conn, now))
        else:
            conds += [table.c.updated_at >= bind_ts(conn, since), table.c.updated_at <= bind_ts(conn, now)]
        if end <= now:
            conds.append(table.c.created_at < bind_ts(conn, end))
        # else: the current month also takes future-dated rows (the canonical layer quarantines them)
        stmt = sa.select(table).where(*conds).order_by(table.c.updated_at)
        result = conn.execution_options(yield_per=chunk_rows).execute(stmt)
        for rows in result.partitions(chunk_rows):
            yield rows_to_arrow(table, rows)


def _month_resource(engine: sa.Engine, entity: str, month: str, primary_key: str,
                    loaded_at: datetime):
    @dlt.resource(name=f"{entity}__{month.replace('-', '_')}", table_name=entity,
                  write_disposition="merge", primary_key=primary_key)
    def changed_rows(
        updated_at=dlt.sources.incremental[datetime]("updated_at", initial_value=INITIAL_CURSOR),
    ) -> Iterator[pa.Table]:
        for chunk in read_changed_rows(engine, entity, month, updated_at.start_value):
            yield conform_arrow(entity, chunk, source="sql", month=month, loaded_at=loaded_at)

    return changed_rows


def _future_resource(engine: sa.Engine, entity: str, month: str, primary_key: str,
                     loaded_at: datetime):
    @dlt.resource(name=f"{entity}__{month.replace('-', '_')}__future", table_name=entity,
                  write_disposition="merge", primary_key=primary_key)
    def future_rows() -> Iterator[pa.Table]:
        for chunk in read_changed_rows(engine, entity, month, None, future=True):
            yield conform_arrow(entity, chunk, source="sql", month=month, loaded_at=loaded_at)

    return future_rows


@dlt.source(name="billing_database", max_table_nesting=0)
def billing_database_source(url: str = dlt.config.value, months: list[str] | None = None,
                            entities: list[str] | tuple[str, ...] = RAW_ENTITIES,
                            primary_keys: dict[str, str] | None = None,
                            loaded_at: datetime | None = None):
    """Merge resources per (entity, month) over the billing database at ``url``."""
    if not months:
        raise ValueError("billing_database_source needs the months to sync (partition keys)")
    engine = sa.create_engine(url)
    keys = {**PRIMARY_KEYS, **(primary_keys or {})}
    loaded_at = loaded_at or datetime.now(UTC)
    return [make(engine, e, m, keys[e], loaded_at) for e in entities for m in months
            for make in (_month_resource, _future_resource)]


def changed_months_sql(url: str, since: datetime,
                       entities: tuple[str, ...] = RAW_ENTITIES) -> dict[str, dict]:
    """Months whose rows changed after ``since``: month -> {rows, max_updated_at} (one GROUP BY
    per entity on the ``updated_at`` index; cost grows with the change, not the history)."""
    engine = sa.create_engine(url)
    out: dict[str, dict] = {}
    try:
        with engine.connect() as conn:
            for e in entities:
                t = ENTITIES[e]
                if conn.dialect.name == "sqlite":
                    month_expr = sa.func.substr(t.c.created_at, 1, 7)
                else:
                    month_expr = sa.func.to_char(
                        sa.func.timezone("UTC", t.c.created_at), "YYYY-MM")
                stmt = (sa.select(month_expr.label("m"), sa.func.count().label("n"),
                                  sa.func.max(t.c.updated_at).label("mx"))
                        .where(t.c.updated_at > bind_ts(conn, since),
                               # a future-dated bad row would freeze the cursor past every change
                               t.c.updated_at <= bind_ts(conn, datetime.now(UTC)))
                        .group_by(month_expr))
                current = month_key(datetime.now(UTC))
                for m, n, mx in conn.execute(stmt):
                    m = min(m, current)  # future-dated rows travel with the current month
                    slot = out.setdefault(m, {"rows": 0, "max_updated_at": None})
                    slot["rows"] += n
                    mx = _to_utc(mx)
                    if slot["max_updated_at"] is None or mx > slot["max_updated_at"]:
                        slot["max_updated_at"] = mx
    finally:
        engine.dispose()
    return out
