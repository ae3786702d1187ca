"""One connection shape for reconciliation on either warehouse: DuckDB or PostgreSQL.

Reconciliation code is written against the small subset of a DuckDB connection it uses
(``execute(sql, params).df() / .fetchone() / .fetchall()``, ``register`` / ``unregister`` of a
pandas frame). :func:`connect` returns a real DuckDB connection for a DuckDB file, and for a
``postgresql://`` URL a :class:`PostgresCon` built on the canonical runner's
:class:`~recovery_pipeline.sqlmodels.runner.PostgresWarehouse`, whose statements are transpiled
from DuckDB SQL with sqlglot by the runner's :func:`~recovery_pipeline.sqlmodels.runner.to_postgres`
(``$name`` -> ``%(name)s``). Differences handled here, not in the SQL files:

- ``create or replace table t as ...`` -> ``drop table if exists t`` + ``create table t as ...``
  (PostgreSQL has no ``or replace`` for tables), in one transaction;
- a registered frame becomes a temporary table of the same name (typed from the frame's dtypes);
- ``numeric`` results come back as ints when integral (``sum``), else floats (``round``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from decimal import Decimal

import pandas as pd
import sqlglot
from sqlglot import exp


def is_postgres(target: str) -> bool:
    return str(target).startswith("postgresql")


@contextlib.contextmanager
def connect(target: str, read_only: bool = False) -> Iterator:
    """A DuckDB connection (file path) or a :class:`PostgresCon` (``postgresql://`` URL)."""
    if is_postgres(target):
        from recovery_pipeline.sqlmodels.runner import PostgresWarehouse

        wh = PostgresWarehouse(target)
        try:
            yield PostgresCon(wh)
        finally:
            wh.close()
    else:
        import duckdb

        con = duckdb.connect(str(target), read_only=read_only)
        try:
            yield con
        finally:
            con.close()


@functools.lru_cache(maxsize=256)
def _render(sql: str) -> tuple[str | None, str]:
    """(table to drop first or None, the PostgreSQL statement) for a DuckDB statement."""
    from recovery_pipeline.sqlmodels.runner import to_postgres

    tree = sqlglot.parse_one(sql, read="duckdb")
    drop = None
    if isinstance(tree, exp.Create) and tree.args.get("replace"):
        tree.set("replace", False)
        drop = tree.this.sql(dialect="postgres")
    return drop, to_postgres(tree.sql(dialect="duckdb"))


def _py(value):
    if value is None or (not isinstance(value, str | bytes) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def _pg_type(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double precision"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamptz"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "timestamp"
    return "text"


def _number(value):
    """``numeric`` -> int when integral (``sum`` of counts), else float (``round(...)``), as DuckDB."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class _Result:
    def __init__(self, columns: list[str], rows: list[tuple]):
        self.columns = columns
        self.rows = [tuple(_number(v) for v in r) for r in rows]

    def fetchall(self) -> list[tuple]:
        return self.rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def df(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)


class PostgresCon:
    """The DuckDB-connection subset reconciliation uses, on a PostgreSQL warehouse."""

    def __init__(self, wh):
        self.wh = wh
        self.conn = wh.conn

    def execute(self, sql: str, params=None) -> _Result:
        drop, pg = _render(sql)
        if isinstance(params, list | tuple):
            bound = tuple(params)
        else:
            from recovery_pipeline.sqlmodels.runner import _used

            bound = _used(sql, params) or None
        try:
            if drop:
                self.conn.exec_driver_sql(f"drop table if exists {drop}")
            result = self.conn.exec_driver_sql(pg, bound)
            out = (_Result(list(result.keys()), [tuple(r) for r in result.fetchall()])
                   if result.returns_rows else _Result([], []))
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()
        return out

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """``frame`` as the temporary table ``name`` (replaced if present)."""
        cols = ", ".join(f'"{c}" {_pg_type(t)}' for c, t in frame.dtypes.items())
        self.conn.exec_driver_sql(f'drop table if exists "{name}"')
        self.conn.exec_driver_sql(f'create temporary table "{name}" ({cols})')
        if len(frame):
            marks = ", ".join(["%s"] * len(frame.columns))
            rows = [tuple(_py(v) for v in r) for r in frame.itertuples(index=False, name=None)]
            self.conn.exec_driver_sql(f'insert into "{name}" values ({marks})', rows)
        self.conn.commit()

    def unregister(self, name: str) -> None:
        self.conn.exec_driver_sql(f'drop table if exists "{name}"')
        self.conn.commit()

    def close(self) -> None:
        self.wh.close()
