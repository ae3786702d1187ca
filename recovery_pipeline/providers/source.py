"""Reading new failed transactions from the canonical tables for the hand-off (watermark, not a
rescan): ``(created_at, transaction_id)`` strictly after the cursor, failed, on open invoices."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

NEW_FAILURES_DUCKDB = """
with failed as (
    select t.*
    from canonical.transactions t
    join canonical.invoices i on i.invoice_id = t.invoice_id
    where t.status = 'failed' and i.status = 'open'
)
select * from failed
where created_at > $after_ts or (created_at = $after_ts and transaction_id > $after_id)
order by created_at, transaction_id
limit $max_rows
"""

NEW_FAILURES_SQL = """
with failed as (
    select t.*
    from canonical.transactions t
    join canonical.invoices i on i.invoice_id = t.invoice_id
    where t.status = 'failed' and i.status = 'open'
)
select * from failed
where created_at > :after_ts or (created_at = :after_ts and transaction_id > :after_id)
order by created_at, transaction_id
limit :max_rows
"""

FAILURES_BY_ID_DUCKDB = """
select t.*
from canonical.transactions t
where t.status = 'failed' and t.transaction_id in (select unnest($ids))
order by t.created_at, t.transaction_id
"""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _params(after_ts: str | None, after_id: str | None, max_rows: int) -> dict[str, Any]:
    ts = datetime.fromisoformat(after_ts) if after_ts else EPOCH
    return {"after_ts": ts, "after_id": after_id or "", "max_rows": int(max_rows)}


def new_failures_duckdb(con, after_ts: str | None, after_id: str | None,
                        max_rows: int = 500) -> list[dict[str, Any]]:
    rel = con.execute(NEW_FAILURES_DUCKDB, _params(after_ts, after_id, max_rows))
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def new_failures_sql(engine: sa.Engine, after_ts: str | None, after_id: str | None,
                     max_rows: int = 500) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(NEW_FAILURES_SQL),
                                              _params(after_ts, after_id, max_rows)).mappings()]


def failures_by_id_duckdb(con, ids: list[str]) -> list[dict[str, Any]]:
    rel = con.execute(FAILURES_BY_ID_DUCKDB, {"ids": list(ids)})
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def watermark(row: dict[str, Any]) -> dict[str, str]:
    ts = row["created_at"]
    if isinstance(ts, datetime):
        ts = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return {"created_at": str(ts), "transaction_id": str(row["transaction_id"])}
