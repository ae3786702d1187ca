"""Runner for ``dbt_like_sql/``: discover SQL models, parse their dependencies, materialize a month.

* A model is ``dbt_like_sql/<schema>/<name>.sql``: one SELECT, lowercase, CTEs, bound parameters
  (``$month``, ``$as_of``; never formatted into the text).
* Dependencies are the ``schema.table`` references found by sqlglot (CTE names and the seeded
  ``reference`` schema excluded) -> Dagster asset keys ``[schema, table]``.
* Materializing a partition range (``$month_from``..``$month_to``; a single month is a range of
  one): ``delete from <schema>.<name> where month between ...`` then one ``insert ... select``
  over the range, in one transaction; so re-running a month is idempotent and a 12-month
  backfill is one set-based pass per model. Models bound to ``$month`` alone still run per month.
* SQL is written in DuckDB's dialect; on a PostgreSQL warehouse it is transpiled with sqlglot
  (``json_object`` -> ``json_build_object``; ``$name`` -> ``%(name)s`` for psycopg).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlglot
from sqlglot import exp

from recovery_pipeline.ingest.contract import raw_columns
from recovery_pipeline.settings import REPO_ROOT
from recovery_pipeline.sqlmodels.reference import reference_rows

SQL_ROOT = REPO_ROOT / "dbt_like_sql"
SEED_SCHEMAS = {"reference"}
RAW_SCHEMA = "billing_raw"
RAW_TABLES = ("customers", "subscriptions", "invoices", "transactions")


@dataclass(frozen=True)
class SqlModel:
    schema: str
    name: str
    path: Path
    sql: str
    deps: tuple[tuple[str, str], ...]
    params: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.name)

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def description(self) -> str:
        """The leading ``--`` comment block of the file (the business docstring)."""
        lines = []
        for line in self.sql.splitlines():
            if not line.startswith("--"):
                break
            lines.append(line[2:].strip())
        return "\n".join(lines)


def parse_model(path: Path, schema: str | None = None) -> SqlModel:
    path = Path(path)
    sql = path.read_text()
    tree = sqlglot.parse_one(sql, read="duckdb")
    if not isinstance(tree, exp.Select | exp.Union | exp.Query):
        raise ValueError(f"{path}: a model must be one SELECT")
    schema = schema or path.parent.name
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    deps: list[tuple[str, str]] = []
    for t in tree.find_all(exp.Table):
        if not t.db or t.name in ctes and not t.db:
            continue
        key = (t.db, t.name)
        if t.db in SEED_SCHEMAS or key == (schema, path.stem) or key in deps:
            continue
        deps.append(key)
    params = sorted({p.name for p in tree.find_all(exp.Placeholder) if p.name})
    return SqlModel(schema, path.stem, path, sql, tuple(sorted(deps)), tuple(params))


_PARSED: dict[tuple[str, int, int], SqlModel] = {}


def _parse_cached(path: Path) -> SqlModel:
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _PARSED:
        _PARSED[key] = parse_model(path)
    return _PARSED[key]


def discover(root: Path = SQL_ROOT, schema: str | None = None) -> list[SqlModel]:
    """All models under ``root`` (optionally one schema), in dependency order.

    Parsing is cached per file (path, mtime, size): a backfill does not re-parse every month."""
    folders = [root / schema] if schema else sorted(p for p in Path(root).iterdir() if p.is_dir())
    models = [_parse_cached(p) for folder in folders for p in sorted(folder.glob("*.sql"))]
    return topo_sort(models)


def topo_sort(models: list[SqlModel]) -> list[SqlModel]:
    by_key = {m.key: m for m in models}
    done: list[SqlModel] = []
    state: dict[tuple[str, str], str] = {}

    def visit(m: SqlModel) -> None:
        if state.get(m.key) == "done":
            return
        if state.get(m.key) == "visiting":
            raise ValueError(f"dependency cycle through {m.table}")
        state[m.key] = "visiting"
        for d in m.deps:
            if d in by_key:
                visit(by_key[d])
        state[m.key] = "done"
        done.append(m)

    for m in sorted(models, key=lambda m: m.key):
        visit(m)
    return done


def to_postgres(sql: str) -> str:
    """Transpile a DuckDB-dialect model to PostgreSQL (psycopg ``%(name)s`` parameters)."""
    tree = sqlglot.parse_one(sql, read="duckdb")

    def _json(node):
        if isinstance(node, exp.JSONObject):
            args = []
            for kv in node.expressions:
                args.extend([kv.this, kv.expression])
            return exp.Anonymous(this="json_build_object", expressions=args)
        return node

    return tree.transform(_json).sql(dialect="postgres")


# --- warehouses ---------------------------------------------------------------------------------

class Warehouse:
    dialect = "duckdb"

    def execute(self, sql: str, params: dict | None = None) -> None: ...
    def fetchall(self, sql: str, params: dict | None = None) -> list[tuple]: ...
    def columns(self, schema: str, name: str) -> list[str]: ...
    def transaction(self): ...
    def close(self) -> None: ...

    def render(self, sql: str) -> str:
        return sql


def _used(sql: str, params: dict | None) -> dict:
    """DuckDB refuses unused named parameters: keep those the statement uses."""
    if not params:
        return {}
    code = re.sub(r"--[^\n]*", "", sql)
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", code)}


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"

    def __init__(self, path: str | Path, read_only: bool = False, retries: int = 60):
        import duckdb

        last = None
        for _ in range(retries):  # a single-writer file: wait for a concurrent writer to finish
            try:
                self.con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as exc:  # "Could not set lock on file"
                last = exc
                time.sleep(0.5)
        else:
            raise last  # type: ignore[misc]
        self.con.execute("SET TimeZone = 'UTC'")
        # one checkpoint when the connection closes, not one per commit of a month's rows
        self.con.execute("SET checkpoint_threshold = '1GB'")
        # set-based model passes do not need the input order kept (lets DuckDB parallelise more)
        self.con.execute("SET preserve_insertion_order = false")

    def execute(self, sql, params=None):
        self.con.execute(sql, _used(sql, params))

    def fetchall(self, sql, params=None):
        return self.con.execute(sql, _used(sql, params)).fetchall()

    def columns(self, schema, name):
        rows = self.con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, name]).fetchall()
        return [r[0] for r in rows]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("begin")
        try:
            yield
        except BaseException:
            self.con.execute("rollback")
            raise
        self.con.execute("commit")

    def close(self):
        self.con.close()


class PostgresWarehouse(Warehouse):
    dialect = "postgres"

    def __init__(self, url: str):
        import sqlalchemy as sa

        self.engine = sa.create_engine(url)
        self.conn = self.engine.connect()
        self._in_tx = False

    def render(self, sql: str) -> str:
        return to_postgres(sql)

    def _exec(self, sql, params):
        pg = to_postgres(sql) if "$" in sql or "json_object" in sql else sql
        return self.conn.exec_driver_sql(pg, _used(sql, params) or None)

    def execute(self, sql, params=None):
        self._exec(sql, params)
        if not self._in_tx:
            self.conn.commit()

    def fetchall(self, sql, params=None):
        rows = [tuple(r) for r in self._exec(sql, params).fetchall()]
        if not self._in_tx:
            self.conn.commit()
        return rows

    def columns(self, schema, name):
        rows = self.conn.exec_driver_sql(
            "select column_name from information_schema.columns "
            "where table_schema = %(s)s and table_name = %(n)s order by ordinal_position",
            {"s": schema, "n": name}).fetchall()
        self.conn.commit()
        return [r[0] for r in rows]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._in_tx = True
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            self._in_tx = False
        self.conn.commit()

    def close(self):
        self.conn.close()
        self.engine.dispose()


def open_warehouse(target: str) -> Warehouse:
    if target.startswith("postgresql"):
        return PostgresWarehouse(target)
    return DuckDBWarehouse(target)


@contextlib.contextmanager
def warehouse(target: str) -> Iterator[Warehouse]:
    wh = open_warehouse(target)
    try:
        yield wh
    finally:
        wh.close()


# --- preparation --------------------------------------------------------------------------------

_PG_TYPES = {"VARCHAR": "text", "TIMESTAMPTZ": "timestamptz", "BIGINT": "bigint",
             "INTEGER": "integer", "BOOLEAN": "boolean"}


def prepare(wh: Warehouse) -> None:
    """Seed ``reference.*`` and make sure every ``billing_raw`` table exists (empty if never loaded),
    so a model can run before its source has delivered anything."""
    wh.execute("create schema if not exists reference")
    for name, (cols, rows) in reference_rows().items():
        present = wh.fetchall(f"select count(*) from information_schema.tables "
                              f"where table_schema = 'reference' and table_name = '{name}'")[0][0]
        if present:
            if wh.fetchall(f"select count(*) from reference.{name}")[0][0] == len(rows):
                continue
            wh.execute(f"drop table reference.{name}")
        col_sql = ", ".join(f"{c} {'integer' if c == 'minor_units' else 'varchar'}" for c in cols)
        wh.execute(f"create table reference.{name} ({col_sql})")
        values = ", ".join(
            "(" + ", ".join(str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"
                            for v in row) + ")" for row in rows)
        wh.execute(f"insert into reference.{name} values {values}")  # static reference data
    wh.execute(f"create schema if not exists {RAW_SCHEMA}")
    for table in RAW_TABLES:
        if wh.columns(RAW_SCHEMA, table):
            continue
        cols = raw_columns(table)
        if wh.dialect == "postgres":
            col_sql = ", ".join(f"{n} {_PG_TYPES[t]}" for n, t in cols)
        else:
            col_sql = ", ".join(f"{n} {t}" for n, t in cols)
        wh.execute(f"create table if not exists {RAW_SCHEMA}.{table} ({col_sql})")


# --- materialization ----------------------------------------------------------------------------

@dataclass
class ModelResult:
    model: str
    month: str
    rows: int
    deleted: int
    seconds: float
    extra: dict = field(default_factory=dict)


# Months outside a run's range whose rows depend on the range's rows, per model: re-materialized
# with the range. A retry landing in month M+1 for an invoice of month M changes M's outcome, so a
# (sensor-triggered) run over M+1 also refreshes M's invoice_outcomes.
DEPENDENT_MONTHS_SQL: dict[str, str] = {
    "canonical.invoice_outcomes": (
        "select distinct i.month from canonical.transactions as t "
        "join canonical.invoices as i on i.invoice_id = t.invoice_id "
        "where t.month between $month_from and $month_to "
        "and (i.month < $month_from or i.month > $month_to) order by 1"
    ),
}


def contiguous_ranges(months: list[str]) -> list[tuple[str, str]]:
    """``["2025-01", "2025-02", "2025-04"]`` -> ``[("2025-01", "2025-02"), ("2025-04", "2025-04")]``."""
    def index(m: str) -> int:
        return int(m[:4]) * 12 + int(m[5:7]) - 1

    out: list[list[str]] = []
    for m in sorted(set(months)):
        if out and index(m) == index(out[-1][1]) + 1:
            out[-1][1] = m
        else:
            out.append([m, m])
    return [(a, b) for a, b in out]


def _ensure_table(wh: Warehouse, model: SqlModel, params: dict) -> list[str]:
    wh.execute(f"create schema if not exists {model.schema}")
    cols = wh.columns(model.schema, model.name)
    if not cols:
        body = model.sql.strip().rstrip(";")
        wh.execute(f"create table {model.table} as select * from ({body}) as q where 1 = 0", params)
        cols = wh.columns(model.schema, model.name)
    return cols


def _replace_range(wh: Warehouse, model: SqlModel, month_from: str, month_to: str,
                   as_of: datetime) -> dict[str, tuple[int, int]]:
    """One set-based pass: delete the range's rows, insert the model's SELECT over the range, in one
    transaction. Returns {month: (rows, deleted)}."""
    params = {"month_from": month_from, "month_to": month_to, "as_of": as_of}
    body = model.sql.strip().rstrip(";")
    cols = _ensure_table(wh, model, params)
    col_list = ", ".join(cols)
    where = "month between $month_from and $month_to"
    count = f"select month, count(*) from {model.table} where {where} group by month"
    with wh.transaction():
        before = dict(wh.fetchall(count, params))
        wh.execute(f"delete from {model.table} where {where}", params)
        wh.execute(f"insert into {model.table} ({col_list}) select {col_list} from ({body}) as q",
                   params)
        after = dict(wh.fetchall(count, params))
    return {str(m): (int(after.get(m, 0)), int(before.get(m, 0))) for m in set(before) | set(after)}


def materialize_range(wh: Warehouse, model: SqlModel, months: list[str],
                      as_of: datetime | None = None,
                      refresh_dependents: bool = True) -> list[ModelResult]:
    """Replace ``months``' rows of ``model`` with its SELECT: one delete + one ``insert ... select``
    per contiguous range of months (what a single-run backfill over a partition range does), then
    the months outside the range that depend on it (``DEPENDENT_MONTHS_SQL``). One ModelResult per
    month (``extra["dependent"]`` marks a month refreshed because of the range)."""
    as_of = as_of or datetime.now(UTC)
    wanted = sorted(set(months))
    if not wanted:
        return []
    if "month_from" not in model.params:  # a model written for one month at a time ($month)
        return [_materialize_one(wh, model, m, as_of) for m in wanted]
    results: list[ModelResult] = []
    for month_from, month_to in contiguous_ranges(wanted):
        started = time.perf_counter()
        counts = _replace_range(wh, model, month_from, month_to, as_of)
        seconds = (time.perf_counter() - started) / max(1, len(counts))
        results += [ModelResult(model.table, m, *counts.get(m, (0, 0)), seconds)
                    for m in wanted if month_from <= m <= month_to]
    dependent_sql = DEPENDENT_MONTHS_SQL.get(model.table)
    if refresh_dependents and dependent_sql:
        extra: set[str] = set()
        for month_from, month_to in contiguous_ranges(wanted):
            extra |= {str(r[0]) for r in wh.fetchall(
                dependent_sql, {"month_from": month_from, "month_to": month_to})}
        for month_from, month_to in contiguous_ranges(sorted(extra - set(wanted))):
            started = time.perf_counter()
            counts = _replace_range(wh, model, month_from, month_to, as_of)
            seconds = (time.perf_counter() - started) / max(1, len(counts))
            results += [ModelResult(model.table, m, rows, deleted, seconds, {"dependent": True})
                        for m, (rows, deleted) in sorted(counts.items())]
    return results


def _materialize_one(wh: Warehouse, model: SqlModel, month: str, as_of: datetime) -> ModelResult:
    started = time.perf_counter()
    params = {"month": month, "as_of": as_of}
    body = model.sql.strip().rstrip(";")
    cols = _ensure_table(wh, model, params)
    col_list = ", ".join(cols)
    with wh.transaction():
        deleted = wh.fetchall(f"select count(*) from {model.table} where month = $month", params)[0][0]
        wh.execute(f"delete from {model.table} where month = $month", params)
        wh.execute(f"insert into {model.table} ({col_list}) select {col_list} from ({body}) as q",
                   params)
        rows = wh.fetchall(f"select count(*) from {model.table} where month = $month", params)[0][0]
    return ModelResult(model.table, month, int(rows), int(deleted), time.perf_counter() - started)


def materialize_partition(wh: Warehouse, model: SqlModel, month: str,
                          as_of: datetime | None = None) -> ModelResult:
    """Replace ``month``'s rows of ``model`` with the model's SELECT for that month (dependent
    months, see ``materialize_range``, are refreshed too; the result is ``month``'s)."""
    results = materialize_range(wh, model, [month], as_of)
    return next(r for r in results if r.month == month)


def run_month(target: str, month: str, models: list[SqlModel] | None = None,
              as_of: datetime | None = None) -> list[ModelResult]:
    """Materialize every model (dependency order) for one month."""
    models = models if models is not None else discover(schema="canonical")
    as_of = as_of or datetime.now(UTC)
    with warehouse(target) as wh:
        prepare(wh)
        return [materialize_partition(wh, m, month, as_of) for m in models]


def run_months(target: str, months: list[str], models: list[SqlModel] | None = None,
               as_of: datetime | None = None) -> list[ModelResult]:
    """Materialize every model for every month on one connection, model by model (dependency
    order), one set-based pass over the month range per model: what a single-run Dagster
    backfill does. One ModelResult per (model, month)."""
    models = models if models is not None else discover(schema="canonical")
    as_of = as_of or datetime.now(UTC)
    with warehouse(target) as wh:
        prepare(wh)
        return [r for m in models for r in materialize_range(wh, m, months, as_of)]


def markdown_preview(wh: Warehouse, table: str, month: str, columns: list[str] | None = None,
                     limit: int = 5, order_by: str | None = None,
                     month_column: str = "month") -> str:
    """A small markdown table of a month's rows (for asset metadata)."""
    schema, name = table.split(".")
    cols = columns or wh.columns(schema, name)[:8]
    order = f" order by {order_by}" if order_by else ""
    rows = wh.fetchall(f"select {', '.join(cols)} from {table} where {month_column} = $month{order} "
                       f"limit {int(limit)}", {"month": month})
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join("" if v is None else str(v).replace("|", "/") for v in r)
                   + " |\n" for r in rows)
    return head + body
