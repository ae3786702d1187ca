"""With ``source.kind: stripe`` the Dagster backfill builds canonical tables from Stripe events."""

from __future__ import annotations

from datetime import UTC, datetime

from recovery_pipeline.commands.backfill import backfill_window, run_backfill
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.stripe_connector.store import ingest_events
from recovery_pipeline_tests import stripe_testkit as k
from recovery_pipeline_tests.ingest_fixtures import query


def test_stripe_source_kind_backfills_a_paid_after_failure_invoice(data_env, monkeypatch):
    monkeypatch.setenv("RECOVERY_SOURCE_KIND", "stripe")
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)  # events only: no internet
    month = backfill_window(1)[0]
    t0 = int(datetime.strptime(month + "-10", "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
    events = [
        k.event("customer.subscription.created", k.subscription(created=t0 - 60), t0 - 60),
        k.event("invoice.finalized", k.invoice(status="open", created=t0), t0),
        k.event("invoice.payment_failed", k.invoice(status="open", attempt_count=1, created=t0,
                                                    next_payment_attempt=t0 + 86400), t0 + 10),
        k.event("invoice.paid", k.invoice(status="paid", attempt_count=2, created=t0,
                                          paid_at=t0 + 86400), t0 + 86400),
    ]
    engine = create_ops_engine(data_env.ops_store_url)
    init_ops_store(engine)
    ingest_events(engine, events)

    run_backfill([month], show_progress=False)

    assert query(data_env, "select invoice_id, status from canonical.invoices") == [("in_1", "paid")]
    assert query(data_env, "select status from canonical.transactions order by attempt_number") == [
        ("failed",), ("succeeded",)]
    assert query(data_env, "select outcome from canonical.invoice_outcomes") == [("paid_after_failure",)]
