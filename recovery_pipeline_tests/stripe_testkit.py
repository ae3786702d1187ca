"""Small hand-built Stripe-shaped objects and events for the Stripe connector tests.

Only the fields the connector reads, in Stripe's own layout (pre-2025-03-31 links such as
``invoice.subscription`` / ``charge.invoice``; the basil layout is covered by the fixture tests).
"""

from __future__ import annotations

from pathlib import Path

from recovery_pipeline.settings import REPO_ROOT

FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "stripe-openapi" / "objects"
T0 = 1_760_000_000  # 2025-10-09T08:53:20Z


def customer(cid="cus_1", country="DE", created=T0 - 86400):
    return {"id": cid, "object": "customer", "email": f"{cid}@example.test", "created": created,
            "address": {"country": country}, "metadata": {}}


def subscription(sid="sub_1", cid="cus_1", status="active", created=T0 - 86400, metadata=None, **kw):
    return {"id": sid, "object": "subscription", "customer": cid, "status": status, "created": created,
            "start_date": created, "currency": "eur", "canceled_at": None, "ended_at": None,
            "cancel_at": None, "metadata": metadata or {}, "pause_collection": None,
            "items": {"object": "list", "data": [{
                "id": "si_1", "object": "subscription_item", "quantity": 1,
                "price": {"id": "price_pro", "object": "price", "unit_amount": 2500, "currency": "eur",
                          "recurring": {"interval": "month", "interval_count": 1}}}]}, **kw}


def invoice(iid="in_1", status="open", attempt_count=0, created=T0, sid="sub_1", cid="cus_1",
            amount=2500, charge=None, paid_at=None, next_payment_attempt=None, **kw):
    return {"id": iid, "object": "invoice", "customer": cid, "subscription": sid, "status": status,
            "amount_due": amount, "amount_paid": amount if status == "paid" else 0, "currency": "eur",
            "attempt_count": attempt_count, "attempted": attempt_count > 0, "created": created,
            "due_date": None, "charge": charge, "payment_intent": "pi_" + iid[3:], "paid_out_of_band": False,
            "next_payment_attempt": next_payment_attempt, "billing_reason": "subscription_cycle",
            "customer_email": f"{cid}@example.test", "customer_address": {"country": "DE"},
            "metadata": {}, "status_transitions": {"finalized_at": created, "paid_at": paid_at,
                                                   "voided_at": None, "marked_uncollectible_at": None},
            **kw}


def charge(chid="ch_1", iid="in_1", status="failed", created=T0 + 10, amount=2500, code="card_declined",
           reason="insufficient_funds", refunded=False, cid="cus_1"):
    failed = status == "failed"
    return {"id": chid, "object": "charge", "amount": amount, "amount_refunded": amount if refunded else 0,
            "currency": "eur", "customer": cid, "invoice": iid, "payment_intent": "pi_" + iid[3:],
            "created": created, "status": status, "paid": not failed, "refunded": refunded,
            "failure_code": code if failed else None,
            "failure_message": "Your card was declined." if failed else None,
            "outcome": {"network_status": "declined_by_network" if failed else "approved_by_network",
                        "reason": reason if failed else None, "type": "issuer_declined" if failed
                        else "authorized", "seller_message": "declined" if failed else "ok"},
            "payment_method": "pm_card_1",
            "payment_method_details": {"type": "card", "card": {
                "brand": "visa", "country": "FR", "fingerprint": "fp_abc123", "last4": "0002",
                "exp_month": 1, "exp_year": 2030}}}


_n = [0]


def event(etype, obj, created, eid=None):
    _n[0] += 1
    return {"id": eid or f"evt_{etype.replace('.', '_')}_{obj['id']}_{created}", "object": "event",
            "api_version": "2024-06-20", "created": created, "type": etype, "livemode": False,
            "pending_webhooks": 1, "data": {"object": obj}}


def fixture(name: str) -> dict:
    import json

    return json.loads((FIXTURES / f"{name}.json").read_text())


def fixtures_present() -> bool:
    return Path(FIXTURES).is_dir()


def failed_then_paid_events():
    """invoice.payment_failed (attempt 1) then invoice.paid (attempt 2), invoice events only."""
    return [
        event("invoice.finalized", invoice(status="open"), T0),
        event("invoice.payment_failed", invoice(status="open", attempt_count=1,
                                                next_payment_attempt=T0 + 3 * 86400), T0 + 10),
        event("invoice.paid", invoice(status="paid", attempt_count=2, paid_at=T0 + 3 * 86400),
              T0 + 3 * 86400),
    ]
