"""Demo billing database -> Stripe-shaped events -> the connector: the history survives the trip."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema as bs
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.stripe_connector.emit import emit_events, signed_deliveries
from recovery_pipeline.stripe_connector.store import build_rows, ingest_events
from recovery_pipeline.webhooks.signing import verify_stripe

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _billing_db(tmp_path) -> sa.Engine:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'billing.sqlite'}")
    bs.metadata.create_all(eng)
    day = timedelta(days=1)
    sub = dict(customer_id="cus_a", plan_id="plan_m", amount_minor=1999, currency="USD", billing_period=1,
               billing_period_unit="month", business_entity=None, activated_at=T - 60 * day, canceled_at=None,
               expires_at=None, dunning_complete_at=None, created_at=T - 60 * day)
    inv = dict(customer_id="cus_a", amount_minor=1999, currency="USD", business_entity=None, due_at=None,
               collection_paused=False, handed_off_at=None, payment_method_update_requested_at=None,
               dunning_complete_at=None)
    tx = dict(customer_id="cus_a", amount_minor=1999, currency="USD", gateway="stripe", gateway_status=None,
              decline_message=None, payment_method_type="card", payment_method_token="pm_1", card_brand="visa",
              card_bin="424242", card_fingerprint="fp_1", card_country="US")
    with eng.begin() as c:
        c.execute(bs.customers.insert(), [dict(customer_id="cus_a", email="a@example.test", country="US",
                                               created_at=T - 60 * day, updated_at=T - 60 * day)])
        c.execute(bs.subscriptions.insert(), [
            dict(sub, subscription_id="sub_ok", status="active", updated_at=T),
            dict(sub, subscription_id="sub_dun", status="past_due", dunning_complete_at=T + 30 * day,
                 updated_at=T + 30 * day)])
        c.execute(bs.invoices.insert(), [
            dict(inv, invoice_id="in_first", subscription_id="sub_ok", status="paid", attempt_count=1,
                 paid_at=T, created_at=T, updated_at=T),
            dict(inv, invoice_id="in_recovered", subscription_id="sub_ok", status="paid", attempt_count=2,
                 paid_at=T + 3 * day, created_at=T + day, updated_at=T + 3 * day),
            dict(inv, invoice_id="in_refund", subscription_id="sub_ok", status="refunded", attempt_count=1,
                 paid_at=T + 2 * day, created_at=T + 2 * day, updated_at=T + 4 * day),
            dict(inv, invoice_id="in_lost", subscription_id="sub_dun", status="open", attempt_count=1,
                 paid_at=None, created_at=T + 2 * day, updated_at=T + 2 * day)])
        c.execute(bs.transactions.insert(), [
            dict(tx, transaction_id="ch_f1", invoice_id="in_first", subscription_id="sub_ok", status="succeeded",
                 attempt_number=1, gateway_transaction_id="ch_f1", decline_code=None, created_at=T, updated_at=T),
            dict(tx, transaction_id="ch_r1", invoice_id="in_recovered", subscription_id="sub_ok", status="failed",
                 attempt_number=1, gateway_transaction_id="ch_r1", decline_code="insufficient_funds",
                 created_at=T + day, updated_at=T + day),
            dict(tx, transaction_id="ch_r2", invoice_id="in_recovered", subscription_id="sub_ok",
                 status="succeeded", attempt_number=2, gateway_transaction_id="ch_r2", decline_code=None,
                 created_at=T + 3 * day, updated_at=T + 3 * day),
            dict(tx, transaction_id="ch_x1", invoice_id="in_refund", subscription_id="sub_ok", status="succeeded",
                 attempt_number=1, gateway_transaction_id="ch_x1", decline_code=None, created_at=T + 2 * day,
                 updated_at=T + 2 * day),
            # the engine's refund convention: the charge stays, a refunded row is added
            dict(tx, transaction_id="txn_ref", invoice_id="in_refund", subscription_id="sub_ok", status="refunded",
                 attempt_number=1, gateway_transaction_id="re_x1", decline_code=None, created_at=T + 4 * day,
                 updated_at=T + 4 * day),
            dict(tx, transaction_id="ch_l1", invoice_id="in_lost", subscription_id="sub_dun", status="failed",
                 attempt_number=1, gateway_transaction_id="ch_l1", decline_code="expired_card",
                 created_at=T + 2 * day, updated_at=T + 2 * day)])
    return eng


def test_emitted_events_replay_into_the_same_billing_history(tmp_path):
    events = emit_events(_billing_db(tmp_path))
    assert [e["created"] for e in events] == sorted(e["created"] for e in events)
    ops = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(ops)
    results = ingest_events(ops, events)
    assert {r.status for r in results} == {"stored"}
    rows = build_rows(ops)
    inv = {r["invoice_id"]: r for r in rows.invoices}
    assert {k: v["status"] for k, v in inv.items()} == {
        "in_first": "paid", "in_recovered": "paid", "in_refund": "refunded", "in_lost": "open"}
    assert inv["in_lost"]["dunning_complete_at"] == T + timedelta(days=30)
    txs = {(t["transaction_id"], t["status"], t["attempt_number"], t["decline_code"]) for t in rows.transactions}
    assert txs == {("ch_f1", "succeeded", 1, None), ("ch_r1", "failed", 1, "insufficient_funds"),
                   ("ch_r2", "succeeded", 2, None), ("ch_x1", "succeeded", 1, None), ("re_x1", "refunded", 1, None),
                   ("ch_l1", "failed", 1, "expired_card")}
    assert {t["card_bin"] for t in rows.transactions} == {"424242"}
    assert {r["customer_id"]: r["country"] for r in rows.customers} == {"cus_a": "US"}
    refund = next(t for t in rows.transactions if t["status"] == "refunded")
    assert refund["created_at"] == T + timedelta(days=4)


def test_emitting_twice_gives_the_same_event_ids(tmp_path):
    eng = _billing_db(tmp_path)
    assert [e["id"] for e in emit_events(eng)] == [e["id"] for e in emit_events(eng)]


def test_signed_deliveries_verify_with_the_test_secret(tmp_path):
    events = emit_events(_billing_db(tmp_path))[:3]
    now = int(time.time())
    for body, headers in signed_deliveries(events, "whsec_demo_stripe_secret", timestamp=now):
        verify_stripe(headers, body, "whsec_demo_stripe_secret")
        assert json.loads(body)["object"] == "event"


def test_emitted_events_delivered_signed_to_the_receiver_are_verified_stored_once_and_mapped(tmp_path, capsys):
    from recovery_pipeline.cli import main
    from recovery_pipeline.httpserve import serve_in_thread
    from recovery_pipeline.stripe_connector.emit import deliver
    from recovery_pipeline.stripe_connector.store import process_inbox
    from recovery_pipeline.webhooks.app import ReceiverConfig, create_app

    secret = "whsec_e2e_test_secret"
    ops_url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    billing = _billing_db(tmp_path)
    events = emit_events(billing)
    app = create_app(ReceiverConfig(ops_store_url=ops_url, secrets={"stripe": secret}))
    with serve_in_thread(app) as url:
        assert set(deliver(url, events, secret)) == {200}
        assert set(deliver(url, events[:2], secret)) == {200}  # redelivery: acknowledged, stored once
        assert set(deliver(url, events[:1], "whsec_wrong")) == {401}
        out = tmp_path / "events.jsonl"
        assert main(["emit-stripe-events", "--billing-db-url", str(billing.url), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(events)
    ops = create_ops_engine(ops_url)
    results = process_inbox(ops)
    assert len(results) == len(events) and {r.status for r in results} == {"stored"}
    rows = build_rows(ops)
    assert {r["invoice_id"]: r["status"] for r in rows.invoices}["in_recovered"] == "paid"
    assert len(rows.transactions) == 6
