"""Tiny billing histories for the ingestion / canonical tests (rows matching billing_engine/schema.py).

``World`` builds customers, subscriptions, invoices and transactions for a few months, with helpers
to add a paid-after-failure invoice, bad rows of each quarantine reason, and to write the export
drop folder (``<root>/<entity>/<YYYY-MM>.<fmt>``) or a SQL billing database.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema

CARD = "4242424242424242"  # a Luhn-valid test PAN


def _arrow_type(col: sa.Column) -> pa.DataType:
    t = col.type
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.BigInteger):
        return pa.int64()
    if isinstance(t, sa.Integer):
        return pa.int32()
    return pa.string()


def arrow_schema(entity: str) -> pa.Schema:
    return pa.schema([(c.name, _arrow_type(c)) for c in schema.ENTITIES[entity].columns])


def ts(month: str, day: int = 5, hour: int = 10) -> datetime:
    return datetime(int(month[:4]), int(month[5:7]), day, hour, tzinfo=UTC)


class World:
    def __init__(self):
        self.rows: dict[str, list[dict]] = {e: [] for e in schema.ENTITIES}
        self.month_of: dict[tuple[str, str], str] = {}  # (entity, id) -> export month
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n:05d}"

    def add(self, entity: str, month: str, **row) -> dict:
        full = {c.name: None for c in schema.ENTITIES[entity].columns}
        full.update(row)
        self.rows[entity].append(full)
        self.month_of[(entity, full[schema.PRIMARY_KEYS[entity]])] = month
        return full

    def customer(self, month: str, country: str = "GB") -> dict:
        t = ts(month, 1)
        return self.add("customers", month, customer_id=self._id("cus"), email="a@example.com",
                        country=country, created_at=t, updated_at=t)

    def subscription(self, month: str, customer: dict, currency: str = "GBP", **kw) -> dict:
        t = ts(month, 2)
        row = dict(subscription_id=self._id("sub"), customer_id=customer["customer_id"],
                   plan_id="plan_basic", status="active", amount_minor=1500, currency=currency,
                   billing_period=1, billing_period_unit="month", business_entity="uk_ltd",
                   activated_at=t, created_at=t, updated_at=t)
        row.update(kw)
        return self.add("subscriptions", month, **row)

    def invoice(self, month: str, sub: dict, status: str = "paid", **kw) -> dict:
        t = ts(month, 5)
        row = dict(invoice_id=self._id("in"), customer_id=sub["customer_id"],
                   subscription_id=sub["subscription_id"], status=status,
                   amount_minor=sub["amount_minor"], currency=sub["currency"],
                   business_entity="uk_ltd", attempt_count=1, due_at=t,
                   paid_at=t if status == "paid" else None, collection_paused=False,
                   created_at=t, updated_at=t)
        row.update(kw)
        return self.add("invoices", month, **row)

    def transaction(self, month: str, inv: dict, status: str = "succeeded", attempt: int = 1,
                    day: int = 5, **kw) -> dict:
        t = ts(month, day, 10 + attempt)
        row = dict(transaction_id=self._id("tx"), invoice_id=inv["invoice_id"],
                   customer_id=inv["customer_id"], subscription_id=inv["subscription_id"],
                   status=status, amount_minor=inv["amount_minor"], currency=inv["currency"],
                   attempt_number=attempt, gateway="stripe", gateway_transaction_id=self._id("ch"),
                   gateway_status=status, payment_method_type="card",
                   payment_method_token=self._id("pm"), card_brand="visa", card_bin="424242",
                   card_country="GB", created_at=t, updated_at=t,
                   decline_code="insufficient_funds" if status == "failed" else None,
                   decline_message="Your card has insufficient funds." if status == "failed" else None)
        row.update(kw)
        return self.add("transactions", month, **row)

    def good_month(self, month: str, n: int = 3) -> list[dict]:
        """``n`` customers, each with a subscription and a first-attempt-paid invoice."""
        out = []
        for _ in range(n):
            c = self.customer(month)
            s = self.subscription(month, c)
            inv = self.invoice(month, s)
            self.transaction(month, inv)
            out.append(inv)
        return out

    # --- writers -------------------------------------------------------------------------------

    def table(self, entity: str, month: str | None = None) -> pa.Table:
        pk = schema.PRIMARY_KEYS[entity]
        rows = [r for r in self.rows[entity]
                if month is None or self.month_of[(entity, r[pk])] == month]
        return pa.Table.from_pylist(rows, schema=arrow_schema(entity))

    def months(self) -> list[str]:
        return sorted(set(self.month_of.values()))

    def write_exports(self, root: Path, fmt: str = "parquet", months: list[str] | None = None,
                      suffix: str = "") -> list[Path]:
        written = []
        for entity in schema.ENTITIES:
            for month in months or self.months():
                t = self.table(entity, month)
                if t.num_rows == 0:
                    continue
                path = Path(root) / entity / f"{month}{suffix}.{fmt}"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_table(t, path, fmt)
                written.append(path)
        return written

    def write_sql(self, url: str) -> sa.Engine:
        engine = sa.create_engine(url)
        schema.metadata.create_all(engine)
        with engine.begin() as conn:
            for entity, table in schema.ENTITIES.items():
                pk = schema.PRIMARY_KEYS[entity]
                for r in self.rows[entity]:
                    conn.execute(sa.delete(table).where(table.c[pk] == r[pk]))
                    conn.execute(table.insert().values(**r))
        return engine


def write_table(t: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(t, path)
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(t.column_names)
            for row in t.to_pylist():
                w.writerow(["" if v is None else (v.isoformat() if isinstance(v, datetime) else v)
                            for v in row.values()])
    elif fmt == "jsonl":
        with open(path, "w") as f:
            for row in t.to_pylist():
                f.write(json.dumps({k: v.isoformat() if isinstance(v, datetime) else v
                                    for k, v in row.items()}) + "\n")
    else:
        raise ValueError(fmt)


def later(t: datetime, days: int = 3) -> datetime:
    return t + timedelta(days=days)


def load_and_model(settings, months: list[str], kind: str = "exports",
                   as_of: datetime | None = None):
    """Raw load + canonical models for ``months`` (pure functions, no Dagster)."""
    from recovery_pipeline.ingest.pipeline import load_raw
    from recovery_pipeline.sqlmodels.runner import run_month

    summary = load_raw(kind, months, warehouse=settings.warehouse, data_dir=settings.data_dir,
                       exports_dir=settings.exports_dir, billing_db_url=settings.billing_db_url)
    results = [r for m in months for r in run_month(settings.warehouse, m, as_of=as_of)]
    return summary, results


def query(settings, sql: str, params: dict | None = None) -> list[tuple]:
    from recovery_pipeline.sqlmodels.runner import warehouse

    with warehouse(settings.warehouse) as wh:
        return wh.fetchall(sql, params)
