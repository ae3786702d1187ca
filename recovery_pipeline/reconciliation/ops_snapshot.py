"""Copy the ops-store tables reconciliation joins against into the warehouse (schema ``ops_snapshot``).

The ops store (SQLite/Postgres) is the system of record for actions and pushes; the warehouse
gets a read-only snapshot so the state-mismatch SQL can join them with the canonical tables.
Columns are explicit so an empty ops store still yields typed, joinable tables.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from recovery_pipeline.opsstore import models as m

# table -> (ops-store table, [(column, duckdb type)], extra where-clause builder)
SNAPSHOTS: dict[str, tuple[sa.Table, list[tuple[str, str]]]] = {
    "executed_actions": (m.executed_actions, [
        ("provider", "varchar"), ("source", "varchar"), ("source_event_id", "varchar"),
        ("invoice_id", "varchar"), ("instruction", "varchar"), ("business_action", "varchar"),
        ("mode", "varchar"), ("result", "varchar"), ("received_at", "timestamptz"),
        ("executed_at", "timestamptz")]),
    "recovery_actions": (m.recovery_actions, [
        ("provider", "varchar"), ("action_id", "varchar"), ("invoice_id", "varchar"),
        ("transaction_id", "varchar"), ("action_suggestion", "varchar"),
        ("ideal_retry_time", "timestamptz"), ("created_at", "timestamptz"),
        ("polled_at", "timestamptz"), ("status", "varchar")]),
    "push_ledger": (m.push_ledger, [
        ("provider", "varchar"), ("entity", "varchar"), ("record_id", "varchar"),
        ("month", "varchar"), ("pushed_at", "timestamptz")]),
}


def _frame(engine: sa.Engine, table: sa.Table, columns: list[tuple[str, str]]) -> pd.DataFrame:
    q = sa.select(*[table.c[name] for name, _ in columns])
    if table is m.push_ledger:
        q = q.where(table.c.entity == "invoices")
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(q).all(), columns=[name for name, _ in columns])
    for name, kind in columns:
        if kind == "timestamptz":
            frame[name] = pd.to_datetime(frame[name], utc=True)  # naive SQLite values are UTC
        else:
            frame[name] = frame[name].astype("object")
    return frame


def snapshot(engine: sa.Engine, con) -> dict[str, int]:
    """Replace ``ops_snapshot.<table>`` for every table in SNAPSHOTS; returns row counts."""
    con.execute("create schema if not exists ops_snapshot")
    counts = {}
    for name, (table, columns) in SNAPSHOTS.items():
        frame = _frame(engine, table, columns)
        select = ", ".join(f'cast("{c}" as {t}) as "{c}"' for c, t in columns)
        con.register("_ops_frame", frame)
        try:
            con.execute(f'create or replace table ops_snapshot."{name}" as select {select} from _ops_frame')
        finally:
            con.unregister("_ops_frame")
        counts[name] = len(frame)
    return counts
