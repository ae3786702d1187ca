"""Deterministic canonical-shaped rows (the columns of billing_engine/schema.py + month +
customer_country) for tests and the push benchmark, without a billing engine or a warehouse."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

DECLINES = ("insufficient_funds", "do_not_honor", "generic_decline", "expired_card",
            "incorrect_cvc", "processing_error", "fraudulent", "lost_card", "card_declined")
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "CA")
CURRENCY = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "NL": "EUR", "CA": "CAD"}


def generate(invoices: int, *, seed: int = 7, start: datetime | None = None,
             failure_rate: float = 0.3) -> dict[str, list[dict[str, Any]]]:
    """``invoices`` invoices (one subscription per 3 invoices), 1-3 transactions per invoice."""
    rng = random.Random(seed)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    subs, invs, txns = [], [], []
    n_subs = max(1, invoices // 3)
    for s in range(n_subs):
        country = COUNTRIES[s % len(COUNTRIES)]
        created = start + timedelta(hours=s)
        subs.append({
            "subscription_id": f"sub_{s:07d}", "customer_id": f"cus_{s:07d}", "plan_id": "plan_m",
            "status": "active", "amount_minor": 1000 + 100 * (s % 7), "currency": CURRENCY[country],
            "billing_period": 1, "billing_period_unit": "month", "business_entity": "acme",
            "activated_at": created, "canceled_at": None, "expires_at": None,
            "dunning_complete_at": None, "created_at": created, "updated_at": created,
            "month": created.strftime("%Y-%m"), "customer_country": country})
    for i in range(invoices):
        sub = subs[i % n_subs]
        created = start + timedelta(days=30 * (i // n_subs), minutes=i)
        fails = 0
        if rng.random() < failure_rate:
            fails = rng.choice((1, 1, 2, 3))
        paid = fails == 0 or rng.random() < 0.5
        status = "paid" if paid else "open"
        inv = {
            "invoice_id": f"in_{i:08d}", "customer_id": sub["customer_id"],
            "subscription_id": sub["subscription_id"], "status": status,
            "amount_minor": sub["amount_minor"], "currency": sub["currency"],
            "business_entity": "acme", "attempt_count": fails + (1 if paid else 0),
            "due_at": created, "paid_at": created + timedelta(days=fails) if paid else None,
            "collection_paused": False, "dunning_complete_at": None, "handed_off_at": None,
            "payment_method_update_requested_at": None, "created_at": created,
            "updated_at": created + timedelta(days=fails), "month": created.strftime("%Y-%m"),
            "customer_country": sub["customer_country"]}
        invs.append(inv)
        for a in range(fails + (1 if paid else 0)):
            ok = paid and a == fails
            t_created = created + timedelta(days=a, seconds=1)
            code = None if ok else DECLINES[rng.randrange(len(DECLINES))]
            txns.append({
                "transaction_id": f"tx_{i:08d}_{a}", "invoice_id": inv["invoice_id"],
                "customer_id": inv["customer_id"], "subscription_id": inv["subscription_id"],
                "status": "succeeded" if ok else "failed", "amount_minor": inv["amount_minor"],
                "currency": inv["currency"], "attempt_number": a + 1, "gateway": "stripe",
                "gateway_transaction_id": f"ch_{i:08d}_{a}",
                "gateway_status": "succeeded" if ok else "declined", "decline_code": code,
                "decline_message": None if ok else code.replace("_", " "),
                "payment_method_type": "card", "payment_method_token": f"pm_{i % 997:05d}",
                "card_brand": "visa", "card_bin": "424242", "card_fingerprint": f"fp_{i % 997:05d}",
                "card_country": sub["customer_country"], "created_at": t_created,
                "updated_at": t_created, "month": t_created.strftime("%Y-%m"),
                "customer_country": sub["customer_country"],
                "invoice_created_at": created, "subscription_start": sub["activated_at"]})
    return {"subscriptions": subs, "invoices": invs, "transactions": txns}


def chunks(rows: list[dict[str, Any]], size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
