"""Provider adapters map canonical rows to each wire format; card numbers never leave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from recovery_pipeline.providers import get_adapter
from recovery_pipeline.providers.base import CardNumberRefused, wire
from recovery_pipeline.providers.synthetic import generate

DATA = generate(6, seed=3, failure_rate=1.0)


def _txn(status: str) -> dict:
    return next(t for t in DATA["transactions"] if t["status"] == status)


def test_slicker_transaction_uses_camel_case_enums_minor_units_and_source_timestamps():
    row = dict(_txn("failed"), created_at=datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2))))
    item = wire("transactions", get_adapter("slicker"), row)
    assert item["state"] == "TRANSACTION_STATE_FAILED"
    assert item["amount"] == row["amount_minor"] and isinstance(item["amount"], int)
    assert item["createdAt"] == "2026-03-04T03:06:07Z"
    assert item["paymentGatewayErrorCode"] == row["decline_code"]
    assert item["invoiceId"] == row["invoice_id"] and item["cardBin"] == "424242"
    assert "payment_method_token" not in item and "paymentMethodToken" not in item


def test_slicker_invoice_state_is_paid_or_unpaid():
    adapter = get_adapter("slicker")
    paid = next(i for i in DATA["invoices"] if i["status"] == "paid")
    assert wire("invoices", adapter, paid)["state"] == "INVOICE_STATE_PAID"
    assert wire("invoices", adapter, dict(paid, status="uncollectible"))["state"] == "INVOICE_STATE_UNPAID"
    assert wire("transactions", adapter, _txn("succeeded"))["state"] == "TRANSACTION_STATE_PAID"


def test_a_card_number_in_any_field_is_refused():
    row = dict(_txn("failed"), card_fingerprint="4242 4242 4242 4242",
               payment_method_token="4242424242424242")
    for provider in ("slicker", "butter"):
        with pytest.raises(CardNumberRefused) as exc:
            wire("transactions", get_adapter(provider), row)
        assert "4242" not in str(exc.value)


def test_revtain_execute_key_is_the_invoice_id_and_stable():
    adapter = get_adapter("revtain")
    txn = _txn("failed")
    body = adapter.execute_body(txn)
    assert body["idempotencyKey"] == txn["invoice_id"]
    assert body == adapter.execute_body(dict(txn))
    assert body["originalDeclineCode"] == txn["decline_code"] and body["amount"] == txn["amount_minor"]
    assert adapter.ingest_path("invoices") is None and not adapter.include("transactions", txn)


def test_butter_payment_carries_customer_subscription_invoice_and_transaction():
    item = wire("transactions", get_adapter("butter"), _txn("failed"))
    assert {"customer", "subscription", "invoice", "transactions"} <= set(item)
    t = item["transactions"][0]
    assert t["psp_transaction_id"].startswith("ch_") and t["outcome"]["status"] == "failed"
    assert t["psp_transaction_created_at"].endswith("Z")


def test_unknown_provider_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown provider"):
        get_adapter("nope")


def test_naive_timestamps_are_taken_as_utc():
    row = dict(_txn("succeeded"), created_at=datetime(2026, 1, 2, 3, 4, 5))
    assert wire("transactions", get_adapter("slicker"), row)["createdAt"] == "2026-01-02T03:04:05Z"
    assert datetime(2026, 1, 2, tzinfo=UTC)  # the generator's own timestamps are aware
