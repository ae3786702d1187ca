"""Objects shaped exactly as Stripe's published fixtures (stripe/openapi fixtures3.json, current
"basil" layout) map without losing the fields the canonical model needs."""

from __future__ import annotations

import copy

import pytest

from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.stripe_connector import mapping as m
from recovery_pipeline.stripe_connector.store import build_rows, ingest_events
from recovery_pipeline_tests import stripe_testkit as k

pytestmark = pytest.mark.skipif(
    not k.fixtures_present(),
    reason=f"Stripe's published fixtures are read from {k.FIXTURES} (the shared folder beside the clone), "
           "which is absent here")


def _ev(etype, obj, created, eid):
    return {**k.fixture("event"), "id": eid, "type": etype, "created": created, "data": {"object": obj}}


def test_fixture_invoice_maps_every_canonical_field():
    inv = k.fixture("invoice")
    row = m.invoice_row(inv, inv["created"])
    assert row["invoice_id"] == inv["id"] and row["customer_id"] == inv["customer"]
    # basil: the subscription lives under parent.subscription_details
    assert row["subscription_id"] == inv["parent"]["subscription_details"]["subscription"]
    assert (row["amount_minor"], row["currency"]) == (inv["amount_due"], inv["currency"].upper())
    assert row["status"] == "open" and inv["status"] == "draft"
    assert row["attempt_count"] == inv["attempt_count"]
    assert row["created_at"].timestamp() == inv["created"]
    assert row["due_at"].timestamp() == inv["due_date"]


def test_fixture_charge_maps_card_and_amount_fields():
    ch = k.fixture("charge")
    row = m.charge_transaction_row(ch, invoice_id="in_x", attempt_number=1)
    card = ch["payment_method_details"]["card"]
    assert (row["card_brand"], row["card_country"], row["card_fingerprint"]) == (
        card["brand"], card["country"], card["fingerprint"])
    assert (row["amount_minor"], row["currency"], row["status"]) == (ch["amount"], "USD", "succeeded")
    assert row["payment_method_type"] == "card" and row["payment_method_token"] == ch["payment_method"]
    assert row["decline_code"] is None and row["gateway_transaction_id"] == ch["id"]


def test_fixture_failed_charge_takes_decline_code_from_outcome():
    ch = copy.deepcopy(k.fixture("charge"))
    ch.update(status="failed", paid=False, failure_code="card_declined", failure_message="declined")
    ch["outcome"].update(network_status="declined_by_network", reason="do_not_honor", type="issuer_declined")
    row = m.charge_transaction_row(ch, invoice_id="in_x", attempt_number=1)
    assert (row["status"], row["decline_code"], row["gateway_status"]) == (
        "failed", "do_not_honor", "declined_by_network")


def test_fixture_subscription_maps_plan_amount_and_period():
    sub = k.fixture("subscription")
    row = m.subscription_row(sub, sub["created"])
    price = sub["items"]["data"][0]["price"]
    assert row["plan_id"] == price["id"] and row["amount_minor"] == price["unit_amount"]
    assert (row["billing_period"], row["billing_period_unit"]) == (1, "month")
    assert row["customer_id"] == sub["customer"] and row["currency"] == "USD"
    assert row["activated_at"].timestamp() == sub["start_date"]
    assert row["canceled_at"].timestamp() == sub["canceled_at"]
    assert row["status"] == "paused"  # active with pause_collection set: collection is paused


def test_fixture_event_of_unused_type_is_skipped_with_reason():
    plan = m.plan_event(k.fixture("event"))
    assert plan.skipped and "plan.created" in plan.skip_reason


def test_basil_charge_links_to_invoice_through_invoice_payment(tmp_path):
    eng = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(eng)
    inv = copy.deepcopy(k.fixture("invoice"))
    inv.update(status="open", attempt_count=1)
    ch = copy.deepcopy(k.fixture("charge"))
    ch.update(status="failed", paid=False, failure_code="expired_card", payment_intent="pi_basil",
              customer=inv["customer"], created=inv["created"] + 5)
    assert "invoice" not in ch  # basil charges do not name their invoice
    ip = copy.deepcopy(k.fixture("invoice_payment"))
    ip.update(invoice=inv["id"], payment={"type": "payment_intent", "payment_intent": "pi_basil"})
    t = inv["created"]
    ingest_events(eng, [_ev("charge.failed", ch, t + 5, "evt_c"), _ev("invoice.payment_failed", inv, t + 6, "evt_i"),
                        _ev("invoice_payment.paid", ip, t + 6, "evt_p")])
    rows = build_rows(eng)
    (tx,) = rows.transactions
    assert (tx["transaction_id"], tx["invoice_id"], tx["decline_code"]) == (ch["id"], inv["id"], "expired_card")
    assert tx["subscription_id"] == inv["parent"]["subscription_details"]["subscription"]
    assert rows.unlinked_charges == []
