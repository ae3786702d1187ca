"""The dlt source over the Stripe object store (via raw_load) loads billing_raw with the raw contract."""

from __future__ import annotations

import json

import duckdb

from recovery_pipeline.billing_engine import schema as bs
from recovery_pipeline.ingest.contract import LINEAGE_COLUMNS
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.stripe_connector.raw_load import load_stripe_raw
from recovery_pipeline.webhooks.inbox import inbox_row
from recovery_pipeline_tests import stripe_testkit as k


def test_stored_events_load_into_billing_raw_with_schema_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    eng = create_ops_engine(url)
    init_ops_store(eng)
    events = k.failed_then_paid_events() + [k.event("customer.subscription.created", k.subscription(), k.T0 - 9)]
    with eng.begin() as c:  # pending rows as the receiver leaves them
        for ev in events:
            c.execute(webhook_inbox.insert().values(**inbox_row("stripe", ev["id"], ev["type"], "{}",
                                                                json.dumps(ev).encode())))
    wh = str(tmp_path / "wh.duckdb")
    summary = load_stripe_raw(warehouse=wh, data_dir=tmp_path / "data", ops_store_url=url)
    assert summary.rows["invoices"] == 1 and summary.rows["transactions"] == 2
    load_stripe_raw(warehouse=wh, data_dir=tmp_path / "data", ops_store_url=url)  # a rerun merges
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        assert con.execute("select invoice_id, status from billing_raw.invoices").fetchall() == [("in_1", "paid")]
        assert con.execute("select status from billing_raw.transactions order by attempt_number").fetchall() == [
            ("failed",), ("succeeded",)]
        cols = {r[0] for r in con.execute(
            "select column_name from information_schema.columns where table_schema='billing_raw' "
            "and table_name='transactions' and column_name not like '\\_dlt%' escape '\\'").fetchall()}
        assert cols == {c.name for c in bs.transactions.columns} | set(LINEAGE_COLUMNS)
        assert con.execute("select distinct _source from billing_raw.invoices").fetchall() == [("stripe_events",)]
        assert con.execute("select count(*) from billing_raw.customers").fetchone() == (1,)
    finally:
        con.close()


def test_later_loads_carry_only_the_rows_new_events_touch(tmp_path, monkeypatch):
    from datetime import timedelta

    from recovery_pipeline.stripe_connector import events_source
    from recovery_pipeline.stripe_connector.store import ingest_events

    monkeypatch.setattr(events_source, "STORED_AT_LAG", timedelta(0))
    url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    eng = create_ops_engine(url)
    init_ops_store(eng)
    ingest_events(eng, [k.event("invoice.paid", k.invoice(f"in_{n}", status="paid", attempt_count=1), k.T0 + n)
                        for n in range(30)])
    wh = str(tmp_path / "wh.duckdb")
    first = load_stripe_raw(warehouse=wh, data_dir=tmp_path / "data", ops_store_url=url)
    ingest_events(eng, [k.event("invoice.payment_failed", k.invoice("in_new", attempt_count=1), k.T0 + 100)])
    second = load_stripe_raw(warehouse=wh, data_dir=tmp_path / "data", ops_store_url=url)
    assert first.rows["invoices"] == 30
    assert second.rows["invoices"] <= 2  # the new invoice (and the newest one of the previous run)
    con = duckdb.connect(wh, read_only=True)
    try:
        assert con.execute("select count(*) from billing_raw.invoices").fetchone() == (31,)
        assert con.execute("select status from billing_raw.transactions "
                           "where invoice_id = 'in_new'").fetchall() == [("failed",)]
    finally:
        con.close()
