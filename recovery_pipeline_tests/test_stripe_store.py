"""Stripe events -> object store -> billing rows: ordering, dedupe, skips, end of dunning."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema as billing_schema
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.stripe_connector.models import stripe_objects
from recovery_pipeline.stripe_connector.store import build_rows, ingest_events, process_inbox, rows_for_entity
from recovery_pipeline.webhooks.inbox import inbox_row
from recovery_pipeline.webhooks.signing import SignatureError, sign_stripe, verify_stripe
from recovery_pipeline_tests import stripe_testkit as k


def _engine(url):
    eng = create_ops_engine(url)
    init_ops_store(eng)
    return eng


def _sqlite(tmp_path, name="ops.sqlite"):
    return _engine(f"sqlite:///{tmp_path / name}")


def _by_id(rows, key):
    return {r[key]: r for r in rows}


def test_payment_failed_then_paid_gives_paid_invoice_with_failed_and_succeeded_transactions(tmp_path):
    eng = _sqlite(tmp_path)
    ingest_events(eng, k.failed_then_paid_events())
    rows = build_rows(eng)
    inv = _by_id(rows.invoices, "invoice_id")["in_1"]
    assert inv["status"] == "paid" and inv["attempt_count"] == 2
    txs = sorted(rows.transactions, key=lambda t: t["attempt_number"])
    assert [(t["attempt_number"], t["status"]) for t in txs] == [(1, "failed"), (2, "succeeded")]
    assert all(t["invoice_id"] == "in_1" and t["amount_minor"] == 2500 and t["currency"] == "EUR" for t in txs)


def test_charge_events_with_invoice_events_give_one_transaction_per_charge(tmp_path):
    eng = _sqlite(tmp_path)
    events = k.failed_then_paid_events() + [
        k.event("charge.failed", k.charge("ch_1", status="failed", created=k.T0 + 5), k.T0 + 6),
        k.event("charge.succeeded", k.charge("ch_2", status="succeeded", created=k.T0 + 3 * 86400 - 2),
                k.T0 + 3 * 86400 - 1),
    ]
    ingest_events(eng, events)
    txs = sorted(build_rows(eng).transactions, key=lambda t: t["attempt_number"])
    assert [(t["transaction_id"], t["status"], t["attempt_number"]) for t in txs] == [
        ("ch_1", "failed", 1), ("ch_2", "succeeded", 2)]
    failed = txs[0]
    assert failed["decline_code"] == "insufficient_funds"
    assert (failed["card_brand"], failed["card_country"], failed["card_fingerprint"]) == ("visa", "FR", "fp_abc123")
    assert failed["created_at"].timestamp() == k.T0 + 5 and failed["updated_at"].timestamp() == k.T0 + 6


def test_reverse_order_delivery_yields_the_same_final_state(tmp_path):
    events = k.failed_then_paid_events() + [
        k.event("customer.subscription.created", k.subscription(), k.T0 - 86400),
        k.event("customer.subscription.updated", k.subscription(status="past_due"), k.T0 + 10),
        k.event("customer.subscription.updated", k.subscription(status="active"), k.T0 + 3 * 86400),
        k.event("charge.failed", k.charge("ch_1", created=k.T0 + 5), k.T0 + 6),
    ]
    forward, backward = _sqlite(tmp_path, "a.sqlite"), _sqlite(tmp_path, "b.sqlite")
    ingest_events(forward, events)
    ingest_events(backward, list(reversed(events)))

    def state(eng):
        with eng.connect() as c:
            return sorted(c.execute(sa.select(stripe_objects.c.object_type, stripe_objects.c.object_id,
                                              stripe_objects.c.event_id, stripe_objects.c.data_json)).all())

    assert state(forward) == state(backward)
    a, b = build_rows(forward), build_rows(backward)
    for entity in billing_schema.ENTITIES:
        assert a.entity(entity) == b.entity(entity), entity
    assert _by_id(a.subscriptions, "subscription_id")["sub_1"]["status"] == "active"


def test_an_older_event_never_overwrites_a_newer_state(tmp_path):
    eng = _sqlite(tmp_path)
    paid, failed = k.failed_then_paid_events()[2], k.failed_then_paid_events()[1]
    ingest_events(eng, [paid])
    results = ingest_events(eng, [failed])
    assert "invoice in_1: stale" in results[0].objects
    assert _by_id(build_rows(eng).invoices, "invoice_id")["in_1"]["status"] == "paid"


def test_same_second_events_order_by_lifecycle_rank(tmp_path):
    eng = _sqlite(tmp_path)
    open_ev = k.event("invoice.updated", k.invoice(status="open", attempt_count=1), k.T0 + 50, eid="evt_z")
    paid_ev = k.event("invoice.paid", k.invoice(status="paid", attempt_count=1), k.T0 + 50, eid="evt_a")
    ingest_events(eng, [paid_ev, open_ev])
    assert _by_id(build_rows(eng).invoices, "invoice_id")["in_1"]["status"] == "paid"


def test_duplicate_event_is_stored_once(tmp_path):
    eng = _sqlite(tmp_path)
    ev = k.failed_then_paid_events()[1]
    first, second = ingest_events(eng, [ev, json.loads(json.dumps(ev))])
    assert (first.status, second.status) == ("stored", "duplicate")
    with eng.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(webhook_inbox)
                         .where(webhook_inbox.c.event_id == ev["id"])).scalar_one() == 1
    assert len(build_rows(eng).transactions) == 1


def test_unknown_event_type_is_stored_raw_and_skipped_with_reason(tmp_path):
    eng = _sqlite(tmp_path)
    ev = k.event("plan.created", {"id": "plan_1", "object": "plan"}, k.T0)
    (res,) = ingest_events(eng, [ev])
    assert res.status == "skipped" and "plan.created" in res.reason
    with eng.connect() as c:
        status, body = c.execute(sa.select(webhook_inbox.c.status, webhook_inbox.c.body)
                                 .where(webhook_inbox.c.event_id == ev["id"])).one()
    assert status == "skipped" and json.loads(body)["data"]["object"]["id"] == "plan_1"


def test_malformed_event_is_kept_as_failed_and_the_rest_go_on(tmp_path):
    eng = _sqlite(tmp_path)
    bad = {"id": "evt_bad", "object": "event", "type": "invoice.paid", "created": k.T0,
           "data": {"object": {"object": "charge", "id": "ch_x"}}}
    good = k.failed_then_paid_events()[0]
    res = ingest_events(eng, [bad, good])
    assert [r.status for r in res] == ["rejected", "stored"] and "expected 'invoice'" in res[0].reason
    with eng.connect() as c:
        assert c.execute(sa.select(webhook_inbox.c.status)
                         .where(webhook_inbox.c.event_id == "evt_bad")).scalar_one() == "failed"


def test_refunded_charge_adds_a_refunded_transaction_and_refunds_the_invoice(tmp_path):
    eng = _sqlite(tmp_path)
    ingest_events(eng, [
        k.event("invoice.paid", k.invoice(status="paid", attempt_count=1, charge="ch_1"), k.T0 + 5),
        k.event("charge.succeeded", k.charge("ch_1", status="succeeded", created=k.T0 + 4), k.T0 + 5),
        k.event("charge.refunded", k.charge("ch_1", status="succeeded", created=k.T0 + 4, refunded=True),
                k.T0 + 900),
    ])
    rows = build_rows(eng)
    assert sorted((t["transaction_id"], t["status"], t["attempt_number"]) for t in rows.transactions) == [
        ("ch_1", "succeeded", 1), ("ch_1_refund", "refunded", 1)]  # the engine's convention: charge stays
    assert rows.invoices[0]["status"] == "refunded"


def test_butter_dunning_metadata_stamps_subscription_and_its_open_invoices(tmp_path):
    eng = _sqlite(tmp_path)
    done = k.T0 + 30 * 86400
    ingest_events(eng, [
        k.event("invoice.payment_failed", k.invoice(status="open", attempt_count=1), k.T0 + 10),
        k.event("invoice.paid", k.invoice("in_0", status="paid", attempt_count=1, created=k.T0 - 40 * 86400),
                k.T0 - 40 * 86400),
        k.event("customer.subscription.updated",
                k.subscription(status="past_due", metadata={"butter_dunning_complete": str(done)}), done),
    ])
    rows = build_rows(eng)
    assert rows.subscriptions[0]["dunning_complete_at"].timestamp() == done
    invs = _by_id(rows.invoices, "invoice_id")
    assert invs["in_1"]["dunning_complete_at"].timestamp() == done
    assert invs["in_0"]["dunning_complete_at"] is None  # paid invoices are not unrecovered


def test_cancellation_for_failed_payment_is_end_of_dunning(tmp_path):
    eng = _sqlite(tmp_path)
    end = k.T0 + 20 * 86400
    sub = k.subscription(status="canceled", canceled_at=None)
    sub.update(canceled_at=end, ended_at=end, cancellation_details={"reason": "payment_failed"})
    ingest_events(eng, [k.event("customer.subscription.deleted", sub, end),
                        k.event("invoice.payment_failed", k.invoice(attempt_count=3), k.T0 + 10)])
    rows = build_rows(eng)
    assert rows.subscriptions[0]["status"] == "canceled"
    assert rows.invoices[0]["dunning_complete_at"].timestamp() == end


def test_rows_for_entity_has_exactly_the_billing_schema_columns(tmp_path):
    eng = _sqlite(tmp_path)
    ingest_events(eng, k.failed_then_paid_events() + [
        k.event("customer.created", k.customer(), k.T0 - 86400),
        k.event("customer.subscription.created", k.subscription(), k.T0 - 86400)])
    for entity, table in billing_schema.ENTITIES.items():
        tbl = rows_for_entity(eng, entity)
        assert tbl.column_names == [c.name for c in table.columns]
        assert tbl.num_rows >= 1
    assert rows_for_entity(eng, "customers").to_pylist()[0]["country"] == "DE"


def test_signed_event_verified_stored_and_mapped_from_receiver_inbox(tmp_path):
    eng = _sqlite(tmp_path)
    secret = "whsec_test_connector"
    ev = k.failed_then_paid_events()[1]
    body = json.dumps(ev).encode()
    now = int(time.time())
    headers = {"Stripe-Signature": sign_stripe(secret, body, now)}
    verify_stripe(headers, body, secret)  # accepted
    for bad_headers, bad_body in (({"Stripe-Signature": sign_stripe(secret, body, now)}, body + b" "),
                                  ({"Stripe-Signature": sign_stripe(secret, body, now - 3600)}, body),
                                  ({}, body)):
        try:
            verify_stripe(bad_headers, bad_body, secret)
        except SignatureError:
            pass
        else:
            raise AssertionError("tampered/expired/unsigned delivery accepted")
    with eng.begin() as c:  # what the receiver stores after verifying
        c.execute(webhook_inbox.insert().values(
            **inbox_row("stripe", ev["id"], ev["type"], json.dumps({"stripe-signature": "[redacted]"}), body)))
    (res,) = process_inbox(eng)
    assert res.status == "stored"
    assert build_rows(eng).transactions[0]["status"] == "failed"
    assert process_inbox(eng) == []  # processed once


def test_guarded_upsert_keeps_newest_on_postgres(pg_url):
    eng = _engine(pg_url)
    events = k.failed_then_paid_events()
    ingest_events(eng, list(reversed(events)))
    rows = build_rows(eng)
    assert rows.invoices[0]["status"] == "paid"
    assert sorted(t["status"] for t in rows.transactions) == ["failed", "succeeded"]
    eng.dispose()


def test_payment_intent_failure_gives_decline_and_card_to_an_attempt_without_charge_event(tmp_path):
    eng = _sqlite(tmp_path)
    intent = {"id": "pi_1", "object": "payment_intent", "invoice": "in_1", "created": k.T0,
              "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "do_not_honor",
                                     "message": "Your card was declined.", "charge": "ch_9",
                                     "payment_method": {"id": "pm_9", "object": "payment_method", "type": "card",
                                                        "card": {"brand": "mastercard", "country": "GB",
                                                                 "fingerprint": "fp_9"}}}}
    ingest_events(eng, [k.event("invoice.payment_failed", k.invoice(attempt_count=1), k.T0 + 10),
                        k.event("payment_intent.payment_failed", intent, k.T0 + 10)])
    (tx,) = build_rows(eng).transactions
    assert (tx["status"], tx["decline_code"], tx["card_brand"], tx["card_country"], tx["payment_method_token"]) == (
        "failed", "do_not_honor", "mastercard", "GB", "pm_9")


def test_card_expiring_event_is_stored_without_rows(tmp_path):
    eng = _sqlite(tmp_path)
    card = {"id": "card_1", "object": "card", "customer": "cus_1", "exp_month": 12, "exp_year": 2025,
            "brand": "Visa", "last4": "4242"}
    (res,) = ingest_events(eng, [k.event("customer.source.expiring", card, k.T0)])
    assert res.status == "stored" and res.objects == ["source card_1: inserted"]
    rows = build_rows(eng)
    assert rows.invoices == [] and rows.transactions == []


def test_event_with_a_card_number_is_masked_and_not_applied(tmp_path):
    eng = _sqlite(tmp_path)
    inv = k.invoice()
    inv["metadata"] = {"note": "card 4242 4242 4242 4242"}
    from_file = k.event("invoice.finalized", inv, k.T0, eid="evt_file")
    from_receiver = k.event("invoice.finalized", inv, k.T0, eid="evt_recv")
    with eng.begin() as c:
        c.execute(webhook_inbox.insert().values(**inbox_row("stripe", "evt_recv", "invoice.finalized", "{}",
                                                            json.dumps(from_receiver).encode())))
    (a,) = ingest_events(eng, [from_file])
    (b,) = process_inbox(eng)
    assert a.status == b.status == "rejected" and "card-number-like" in a.reason
    with eng.connect() as c:
        bodies = c.execute(sa.select(webhook_inbox.c.body, webhook_inbox.c.status)).all()
    assert all("4242 4242 4242 4242" not in body and "************4242" in body for body, _ in bodies)
    assert {status for _, status in bodies} == {"failed"}
    assert build_rows(eng).invoices == []


def test_incremental_build_emits_the_rows_a_change_touches_and_only_those(tmp_path):
    from recovery_pipeline.opsstore.store import utcnow

    eng = _sqlite(tmp_path)
    ingest_events(eng, [
        k.event("customer.created", k.customer(), k.T0 - 86400),
        k.event("customer.subscription.created", k.subscription(), k.T0 - 86400),
        k.event("customer.subscription.created", k.subscription("sub_2", "cus_2", status="past_due"), k.T0 - 86400),
        k.event("invoice.payment_failed", k.invoice(attempt_count=1), k.T0 + 10),
        k.event("charge.failed", k.charge("ch_1", created=k.T0 + 5), k.T0 + 6),
        k.event("invoice.payment_failed", k.invoice("in_2", sid="sub_2", cid="cus_2", attempt_count=1), k.T0 + 20),
        k.event("invoice.paid", k.invoice("in_3", status="paid", attempt_count=1), k.T0 + 30),
    ])
    since = utcnow()
    ingest_events(eng, [  # a retry pays in_1; sub_2's dunning ends
        k.event("charge.succeeded", k.charge("ch_2", status="succeeded", created=k.T0 + 900), k.T0 + 901),
        k.event("invoice.paid", k.invoice(status="paid", attempt_count=2), k.T0 + 902),
        k.event("customer.subscription.updated", k.subscription(
            "sub_2", "cus_2", status="past_due", metadata={"butter_dunning_complete": str(k.T0 + 999)}), k.T0 + 999),
    ])
    inc, full = build_rows(eng, since=since), build_rows(eng)
    assert {r["invoice_id"] for r in inc.invoices} == {"in_1", "in_2"}  # not the untouched in_3
    assert {r["subscription_id"] for r in inc.subscriptions} == {"sub_2"}
    assert {r["transaction_id"] for r in inc.transactions} == {"ch_1", "ch_2", "in_2_attempt_1"}
    for entity, key in (("customers", "customer_id"), ("subscriptions", "subscription_id"),
                        ("invoices", "invoice_id"), ("transactions", "transaction_id")):
        whole = _by_id(full.entity(entity), key)
        for row in inc.entity(entity):  # every re-emitted row is exactly the full build's row
            assert row == whole[row[key]], (entity, row[key])
    assert _by_id(inc.invoices, "invoice_id")["in_2"]["dunning_complete_at"].timestamp() == k.T0 + 999
