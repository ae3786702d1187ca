"""Test doubles for the execution tests: an in-memory BillingSystem and ops-store row helpers."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

from recovery_pipeline.execution.billing import BillingConflict, BillingStateConflict, BillingUnavailable
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import recovery_actions, webhook_inbox
from recovery_pipeline.opsstore.store import utcnow

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def ops_engine(tmp_path):
    engine = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(engine)
    return engine


class FakeBilling:
    """Implements the BillingSystem protocol in memory, with idempotency keys like the real one."""

    def __init__(self, invoices: dict | None = None, *, fail_times: int = 0, conflict: bool = False,
                 retry_outcome: str = "succeeded"):
        self.invoices = invoices or {}
        self.calls: list[tuple[str, str, str]] = []  # (action, invoice_id, idempotency_key)
        self.keys: dict[str, dict] = {}
        self.fail_times = fail_times
        self.conflict = conflict
        self.retry_outcome = retry_outcome

    def get_invoice(self, invoice_id):
        inv = self.invoices.get(invoice_id)
        return copy.deepcopy(inv) if inv else None

    def _act(self, action, invoice_id, key, change):
        if self.fail_times > 0:
            self.fail_times -= 1
            raise BillingUnavailable("billing engine down (fake)")
        if self.conflict:
            raise BillingConflict("idempotency key reused with other parameters (fake)")
        if key in self.keys:
            return self.keys[key]
        inv = self.invoices[invoice_id]
        allowed = ("open", "uncollectible") if action == "mark_paid" else ("open",)
        if inv["status"] not in allowed:  # like the billing engine: 409 for a state it cannot act on
            raise BillingStateConflict(f"invoice {invoice_id} is {inv['status']}")
        self.calls.append((action, invoice_id, key))
        result = change(inv) or {}
        self.keys[key] = {"invoice": copy.deepcopy(inv), **result}
        return self.keys[key]

    def retry_invoice(self, invoice_id, *, idempotency_key):
        def change(inv):
            n = len(inv["transactions"]) + 1
            tx = {"transaction_id": f"{invoice_id}-t{n}", "status": self.retry_outcome,
                  "attempt_number": n, "decline_code": None if self.retry_outcome == "succeeded" else "insufficient_funds"}
            inv["transactions"].append(tx)
            if self.retry_outcome == "succeeded":
                inv["status"] = "paid"
            return {"transaction": tx}
        return self._act("retry", invoice_id, idempotency_key, change)

    def request_payment_method_update(self, invoice_id, *, idempotency_key, card_update_url=None):
        return self._act("request_payment_method_update", invoice_id, idempotency_key,
                         lambda inv: inv.update(payment_method_update_requested_at="now"))

    def pause_collection(self, invoice_id, *, idempotency_key):
        return self._act("pause_collection", invoice_id, idempotency_key,
                         lambda inv: inv.update(collection_paused=True))

    def complete_dunning(self, invoice_id, *, idempotency_key):
        return self._act("complete_dunning", invoice_id, idempotency_key,
                         lambda inv: inv.update(status="uncollectible", dunning_complete_at="now"))

    def mark_paid(self, invoice_id, *, idempotency_key, external_transaction_id=None):
        return self._act("mark_paid", invoice_id, idempotency_key, lambda inv: inv.update(status="paid"))

    def forward_card_update_link(self, invoice_id, card_update_url, *, idempotency_key):
        return self._act("forward_card_update_link", invoice_id, idempotency_key,
                         lambda inv: inv.update(card_update_url=card_update_url))


def invoice(invoice_id, *, status="open", customer_id="cus_1", country="US", currency="USD",
            plan_id="plan_basic", business_entity="acme-us", decline_code="insufficient_funds"):
    return {
        "invoice_id": invoice_id, "customer_id": customer_id, "subscription_id": f"sub_{invoice_id}",
        "status": status, "amount_minor": 1999, "currency": currency, "business_entity": business_entity,
        "collection_paused": False,
        "customer": {"customer_id": customer_id, "country": country, "email": f"{customer_id}@example.com"},
        "subscription": {"plan_id": plan_id},
        "transactions": [{"transaction_id": f"{invoice_id}-t1", "status": "failed", "attempt_number": 1,
                          "decline_code": decline_code}],
    }


def slicker_event(event_id, etype, invoice_id, suggestion=None, ideal=None):
    data = {"invoiceId": invoice_id, "subscriptionId": f"sub_{invoice_id}"}
    if suggestion:
        data["actionSuggestion"] = suggestion
    if ideal:
        data["idealRetryTime"] = ideal.isoformat()
    return {"id": event_id, "type": etype, "created": 1700000000, "data": data}


def add_inbox(engine, provider, event_id, body, *, event_type=None, received_at=None, headers=None):
    if event_type is None and isinstance(body, dict):
        event_type = body.get("type") or body.get("event")
    with engine.begin() as conn:
        conn.execute(webhook_inbox.insert().values(
            provider=provider, event_id=event_id, event_type=event_type,
            received_at=received_at or utcnow(), headers_json=json.dumps(headers or {}),
            body=body if isinstance(body, str) else json.dumps(body), status="pending", attempts=0))


def add_polled(engine, action_id, invoice_id, suggestion, *, ideal=None, polled_at=None):
    item = {"requestId": action_id, "invoiceId": invoice_id, "actionSuggestion": suggestion,
            "idealRetryTime": ideal.isoformat() if ideal else None}
    with engine.begin() as conn:
        conn.execute(recovery_actions.insert().values(
            provider="slicker", action_id=action_id, invoice_id=invoice_id, action_suggestion=suggestion,
            ideal_retry_time=ideal, polled_at=polled_at or utcnow(), body=json.dumps(item),
            status="pending", attempts=0))


def past(minutes=5):
    return utcnow() - timedelta(minutes=minutes)


def future(minutes=60):
    return utcnow() + timedelta(minutes=minutes)
