"""Materialize one ``dbt_like_sql/<schema>/<name>.sql`` select as the table ``<schema>.<name>``.

A small stand-in with the same conventions as ``recovery_pipeline.sqlmodels`` (one select per
file, bound parameters as DuckDB ``$name``); reconciliation SQL also runs through it in the
benchmark so the timing is of exactly the SQL the assets run.
"""

from __future__ import annotations

from pathlib import Path

from recovery_pipeline.settings import REPO_ROOT

SQL_ROOT = REPO_ROOT / "dbt_like_sql"


def sql_path(schema: str, name: str) -> Path:
    return SQL_ROOT / schema / f"{name}.sql"


def read_sql(schema: str, name: str) -> str:
    return sql_path(schema, name).read_text()


def materialize(con, schema: str, name: str, params: dict | None = None) -> int:
    """``create or replace table schema.name as <select>``; returns the row count."""
    select = read_sql(schema, name).strip().rstrip(";")
    con.execute(f'create schema if not exists "{schema}"')
    # identifiers come from our own file layout, never from data; values are bound parameters
    ddl = f'create or replace table "{schema}"."{name}" as {select}'
    if params:
        con.execute(ddl, params)
    else:
        con.execute(ddl)
    return con.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[0]


def table_deps(schema: str, name: str) -> list[tuple[str, str]]:
    """``(schema, table)`` of every table the file reads, parsed with sqlglot by the canonical
    runner's ``parse_model`` (CTEs and seeded reference tables excluded)."""
    from recovery_pipeline.sqlmodels.runner import parse_model

    return list(parse_model(sql_path(schema, name), schema).deps)
