"""The raw-layer column contract: the export columns of ``billing_engine/schema.py`` plus lineage.

Every raw row, whatever its source, is conformed here in DuckDB (vectorised): each contract column
is ``try_cast`` to its type, so a value that does not parse never breaks a load; it becomes null and
the column is named in ``_invalid_columns`` (the canonical layer quarantines the row). Then card
numbers are masked (``cardscan``). Added columns:

``_source`` (file name or ``sql``), ``_month`` (the partition the row was loaded under: the export
file's month, or the month of ``created_at`` for the SQL source), ``_loaded_at`` (UTC),
``_invalid_columns`` and ``_card_like_columns`` (comma lists, null when clean).
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from recovery_pipeline.billing_engine.schema import ENTITIES
from recovery_pipeline.ingest.cardscan import CARD_SCAN_COLUMNS, mask_card_numbers_in_table

LINEAGE_COLUMNS = ("_source", "_month", "_loaded_at", "_invalid_columns", "_card_like_columns")


def duckdb_type(col: sa.Column) -> str:
    t = col.type
    if isinstance(t, sa.DateTime):
        return "TIMESTAMPTZ"
    if isinstance(t, sa.Boolean):
        return "BOOLEAN"
    if isinstance(t, sa.BigInteger):
        return "BIGINT"
    if isinstance(t, sa.Integer):
        return "INTEGER"
    return "VARCHAR"


def contract_columns(entity: str) -> list[tuple[str, str]]:
    """(name, duckdb type) of an entity's export columns, in schema order."""
    return [(c.name, duckdb_type(c)) for c in ENTITIES[entity].columns]


def raw_columns(entity: str) -> list[tuple[str, str]]:
    """Columns of ``billing_raw.<entity>``: the contract plus the lineage columns."""
    return contract_columns(entity) + [
        ("_source", "VARCHAR"), ("_month", "VARCHAR"), ("_loaded_at", "TIMESTAMPTZ"),
        ("_invalid_columns", "VARCHAR"), ("_card_like_columns", "VARCHAR"),
    ]


def new_duckdb() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def conform_sql(entity: str, relation: str, present: set[str]) -> str:
    """SELECT that conforms ``relation`` (a DuckDB relation/view name) to the raw contract.

    ``present``: the columns the input actually has (a missing column is null, not an error).
    Parameters: ``$source``, ``$month``, ``$loaded_at``.
    """
    selects, invalid = [], []
    for name, typ in contract_columns(entity):
        if name not in present:
            selects.append(f"cast(null as {typ}) as {name}")
            continue
        q = f'"{name}"'
        if typ == "VARCHAR":
            selects.append(f"cast({q} as varchar) as {name}")
            continue
        if typ == "TIMESTAMPTZ":
            # a naive timestamp is taken as UTC (exports and the billing DB store UTC)
            cast = f"try_cast({q} as timestamptz)"
        elif typ in ("BIGINT", "INTEGER"):
            # "1200" and 1200.0 parse; "12.5" or "abc" do not
            cast = (f"case when try_cast({q} as double) = floor(try_cast({q} as double)) "
                    f"then try_cast(try_cast({q} as double) as {typ}) end")
        else:
            cast = f"try_cast({q} as {typ})"
        selects.append(f"{cast} as {name}")
        invalid.append(f"case when {q} is not null and {cast} is null then '{name}' end")
    invalid_expr = (f"nullif(concat_ws(',', {', '.join(invalid)}), '')" if invalid
                    else "cast(null as varchar)")
    return (
        "select " + ", ".join(selects)
        + ", cast($source as varchar) as _source, cast($month as varchar) as _month"
        + ", cast($loaded_at as timestamptz) as _loaded_at"
        + f", {invalid_expr} as _invalid_columns"
        + f" from {relation}"
    )


def conform(con: duckdb.DuckDBPyConnection, entity: str, relation: str, *, source: str,
            month: str, loaded_at: datetime) -> pa.Table:
    """Conform a DuckDB relation (view/table name) to the raw contract; returns Arrow."""
    present = {r[0] for r in con.execute(f"describe {relation}").fetchall()}
    sql = conform_sql(entity, relation, present)
    table = con.sql(sql, params={"source": source, "month": month, "loaded_at": loaded_at}) \
        .to_arrow_table()
    return mask_card_numbers_in_table(table, CARD_SCAN_COLUMNS.get(entity, ()))


def contract_arrow_schema(entity: str) -> pa.Schema:
    types = {"VARCHAR": pa.string(), "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
             "BIGINT": pa.int64(), "INTEGER": pa.int32(), "BOOLEAN": pa.bool_()}
    return pa.schema([(n, types[t]) for n, t in contract_columns(entity)])


def conform_fast(entity: str, table: pa.Table, *, source: str, month: str,
                 loaded_at: datetime) -> pa.Table | None:
    """The volume path: a table already in the contract's types (a Parquet export written to the
    contract) only gets its lineage columns, no cast pass. None when it is not in contract types."""
    target = contract_arrow_schema(entity)
    if table.schema.names != target.names:
        return None
    for have, want in zip(table.schema, target, strict=True):
        if have.type != want.type and not (
                pa.types.is_timestamp(have.type) and pa.types.is_timestamp(want.type)
                and have.type.tz in ("UTC", "+00:00", "Etc/UTC")):
            return None
    table = table.cast(target)
    n = table.num_rows
    nulls = pa.nulls(n, pa.string())
    table = table.append_column("_source", pa.repeat(pa.scalar(source, pa.string()), n))
    table = table.append_column("_month", pa.repeat(pa.scalar(month, pa.string()), n))
    table = table.append_column("_loaded_at", pa.repeat(
        pa.scalar(loaded_at, pa.timestamp("us", tz="UTC")), n))
    table = table.append_column("_invalid_columns", nulls)
    return mask_card_numbers_in_table(table, CARD_SCAN_COLUMNS.get(entity, ()))


def conform_arrow(entity: str, table: pa.Table, *, source: str, month: str,
                  loaded_at: datetime) -> pa.Table:
    fast = conform_fast(entity, table, source=source, month=month, loaded_at=loaded_at)
    if fast is not None:
        return fast
    con = new_duckdb()
    try:
        con.register("incoming", table)
        return conform(con, entity, "incoming", source=source, month=month, loaded_at=loaded_at)
    finally:
        con.close()
