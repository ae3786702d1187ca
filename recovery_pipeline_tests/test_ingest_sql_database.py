"""SQL billing database -> billing_raw: incremental on updated_at, merge on the primary key."""

from __future__ import annotations

import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema
from recovery_pipeline.ingest.sql_database import changed_months_sql
from recovery_pipeline_tests.ingest_fixtures import World, later, load_and_model, query, ts

M = "2025-03"


def _paid_after_failure_world():
    w = World()
    w.good_month(M, 2)
    c = w.customer(M)
    s = w.subscription(M, c)
    inv = w.invoice(M, s, status="open", paid_at=None)
    w.transaction(M, inv, "failed", 1)
    return w, inv


def test_invoice_paid_after_failure_is_updated_not_duplicated(data_env):
    w, inv = _paid_after_failure_world()
    engine = w.write_sql(data_env.billing_db_url)
    load_and_model(data_env, [M], kind="sql_database")
    # later: the retry succeeds; the billing system updates the invoice and adds a transaction
    paid_at = later(ts(M), 3)
    with engine.begin() as conn:
        conn.execute(sa.update(schema.invoices).where(
            schema.invoices.c.invoice_id == inv["invoice_id"]).values(
            status="paid", paid_at=paid_at, attempt_count=2, updated_at=paid_at))
    w2 = World()
    w2._n = 5000
    w2.transaction(M, inv, "succeeded", 2, day=8)
    w2.write_sql(data_env.billing_db_url)
    summary, _ = load_and_model(data_env, [M], kind="sql_database")
    assert summary.rows["invoices"] == 1  # only the changed invoice was read again
    raw = query(data_env, "select count(*), max(status) from billing_raw.invoices "
                          "where invoice_id = $id", {"id": inv["invoice_id"]})
    assert raw == [(1, "paid")]
    out = query(data_env, "select status, outcome, attempts from canonical.invoice_outcomes "
                          "where invoice_id = $id", {"id": inv["invoice_id"]})
    assert out == [("paid", "paid_after_failure", 2)]


def test_unchanged_database_loads_nothing_on_the_next_run(data_env):
    w, _ = _paid_after_failure_world()
    w.write_sql(data_env.billing_db_url)
    first, _ = load_and_model(data_env, [M], kind="sql_database")
    second, _ = load_and_model(data_env, [M], kind="sql_database")
    assert first.rows["invoices"] == 3
    assert second.total_rows == 0


def test_changed_months_query_finds_only_the_changed_month(data_env):
    w = World()
    w.good_month("2025-02", 1)
    w.good_month("2025-03", 1)
    engine = w.write_sql(data_env.billing_db_url)
    since = ts("2025-04", 1)
    assert changed_months_sql(data_env.billing_db_url, since) == {}
    bump = ts("2025-04", 2)
    feb_invoice = w.rows["invoices"][0]["invoice_id"]
    with engine.begin() as conn:
        conn.execute(sa.update(schema.invoices).where(
            schema.invoices.c.invoice_id == feb_invoice).values(status="refunded", updated_at=bump))
    changes = changed_months_sql(data_env.billing_db_url, since)
    assert list(changes) == ["2025-02"]
    assert changes["2025-02"]["rows"] == 1 and changes["2025-02"]["max_updated_at"] == bump


def test_a_future_dated_row_does_not_freeze_the_cursor(data_env):
    from datetime import UTC, datetime

    w = World()
    w.good_month(M, 2)
    engine = w.write_sql(data_env.billing_db_url)
    future = datetime(2031, 1, 1, tzinfo=UTC)
    bad, good = w.rows["invoices"][0]["invoice_id"], w.rows["invoices"][1]["invoice_id"]
    with engine.begin() as conn:
        conn.execute(sa.update(schema.invoices).where(schema.invoices.c.invoice_id == bad)
                     .values(updated_at=future))
    load_and_model(data_env, [M], kind="sql_database")
    assert ("future_timestamp",) in query(
        data_env, "select reason from canonical.quarantine where record_id = $id", {"id": bad})
    assert list(changed_months_sql(data_env.billing_db_url, ts("2025-04", 1))) == []

    bump = ts("2025-04", 2)  # a real change after the bad row was seen
    with engine.begin() as conn:
        conn.execute(sa.update(schema.invoices).where(schema.invoices.c.invoice_id == good)
                     .values(status="refunded", updated_at=bump))
    load_and_model(data_env, [M], kind="sql_database")
    assert query(data_env, "select status from canonical.invoices where invoice_id = $id",
                 {"id": good}) == [("refunded",)]
