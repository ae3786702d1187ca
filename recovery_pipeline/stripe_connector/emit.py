"""Demo billing engine -> Stripe-shaped events (for the demo and tests: the Stripe path offline).

``emit_events(engine)`` reads a billing SQL database (``billing_engine/schema.py`` tables) and
returns the events Stripe would have sent for that history, oldest first: ``customer.created``,
``customer.subscription.created`` / ``.updated`` / ``.deleted``, ``invoice.finalized``,
``charge.failed`` + ``invoice.payment_failed`` per failed attempt, ``charge.succeeded`` +
``invoice.paid`` for the paying attempt, ``charge.refunded``, ``invoice.voided``,
``invoice.marked_uncollectible``. Objects use the 2024-06-20 layout (``invoice.subscription``,
``charge.invoice``). Event ids are deterministic, so emitting twice yields the same events.

``signed_deliveries`` signs each body with ``webhooks.signing.sign_stripe`` (a test secret), and
``deliver`` posts them to a receiver's ``POST /webhooks/stripe``.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime

import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema as bs

API_VERSION = "2024-06-20"
# Decline codes Stripe reports as the charge's own failure_code (the rest are card_declined + reason).
_FAILURE_CODES = {"expired_card", "incorrect_cvc", "incorrect_number", "processing_error",
                  "incorrect_zip", "invalid_expiry_year", "authentication_required"}
_SUB_STATUS = {"active": "active", "past_due": "past_due", "paused": "active", "canceled": "canceled",
               "expired": "incomplete_expired", "trialing": "trialing"}


def _unix(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _event(etype: str, obj: dict, created: int, seq: int) -> dict:
    digest = hashlib.sha1(f"{etype}:{obj['id']}:{seq}".encode()).hexdigest()[:24]
    return {"id": f"evt_{digest}", "object": "event", "api_version": API_VERSION, "created": created,
            "type": etype, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "data": {"object": obj}}


def stripe_customer(c: dict) -> dict:
    return {"id": c["customer_id"], "object": "customer", "email": c.get("email"),
            "created": _unix(c["created_at"]), "address": {"country": c.get("country")},
            "metadata": {}, "livemode": False}


def stripe_subscription(s: dict, status: str, *, final: bool) -> dict:
    created = _unix(s["created_at"])
    meta = {}
    if final and s.get("business_entity"):
        meta["business_entity"] = s["business_entity"]
    if final and s.get("dunning_complete_at") and s["status"] != "canceled":
        meta["butter_dunning_complete"] = str(_unix(s["dunning_complete_at"]))
    canceled = _unix(s.get("canceled_at")) if final else None
    return {
        "id": s["subscription_id"], "object": "subscription", "customer": s["customer_id"],
        "status": status, "created": created, "start_date": _unix(s.get("activated_at")) or created,
        "currency": (s.get("currency") or "usd").lower(), "canceled_at": canceled,
        "ended_at": canceled, "cancel_at": None, "metadata": meta,
        "pause_collection": {"behavior": "keep_as_draft", "resumes_at": None}
        if final and s["status"] == "paused" else None,
        "cancellation_details": {"reason": "payment_failed" if final and s.get("dunning_complete_at")
                                 and s["status"] == "canceled" else None},
        "items": {"object": "list", "data": [{
            "id": f"si_{s['subscription_id']}", "object": "subscription_item", "quantity": 1,
            "price": {"id": s["plan_id"], "object": "price", "unit_amount": s["amount_minor"],
                      "currency": (s.get("currency") or "usd").lower(),
                      "recurring": {"interval": s["billing_period_unit"],
                                    "interval_count": s["billing_period"]}}}]},
        "livemode": False,
    }


def stripe_invoice(i: dict, *, status: str, attempt_count: int, charge: str | None = None,
                   paid_at: int | None = None, voided_at: int | None = None,
                   uncollectible_at: int | None = None, next_payment_attempt: int | None = None) -> dict:
    created = _unix(i["created_at"])
    amount = i["amount_minor"]
    return {
        "id": i["invoice_id"], "object": "invoice", "customer": i["customer_id"],
        "subscription": i.get("subscription_id"), "status": status,
        "amount_due": amount, "amount_paid": amount if status == "paid" else 0,
        "amount_remaining": 0 if status == "paid" else amount, "total": amount,
        "currency": (i.get("currency") or "usd").lower(), "attempt_count": attempt_count,
        "attempted": attempt_count > 0, "created": created, "due_date": None,
        "charge": charge, "payment_intent": f"pi_{i['invoice_id']}", "paid_out_of_band": False,
        "next_payment_attempt": next_payment_attempt, "collection_method": "charge_automatically",
        "billing_reason": "subscription_cycle" if i.get("subscription_id") else "manual",
        "metadata": {"business_entity": i["business_entity"]} if i.get("business_entity") else {},
        "status_transitions": {"finalized_at": _unix(i.get("due_at")) or created, "paid_at": paid_at,
                               "voided_at": voided_at, "marked_uncollectible_at": uncollectible_at},
        "livemode": False,
    }


def stripe_charge(t: dict, *, refunded: bool = False, refund_id: str | None = None,
                  refunded_at: int | None = None, refund_amount: int | None = None) -> dict:
    failed = t["status"] == "failed"
    code = t.get("decline_code") or ("card_declined" if failed else None)
    if failed and code in _FAILURE_CODES:
        failure_code, reason = code, None
    elif failed:
        failure_code, reason = "card_declined", code
    else:
        failure_code = reason = None
    amount = t["amount_minor"]
    refund_amount = amount if refund_amount is None else refund_amount
    refunds = [{"id": refund_id or f"re_{t['transaction_id']}", "object": "refund", "amount": refund_amount,
                "charge": t["transaction_id"], "created": refunded_at, "status": "succeeded"}] if refunded else []
    return {
        "id": t["transaction_id"], "object": "charge", "amount": amount,
        "amount_refunded": refund_amount if refunded else 0,
        "refunds": {"object": "list", "data": refunds, "has_more": False},
        "currency": (t.get("currency") or "usd").lower(),
        "customer": t["customer_id"], "invoice": t["invoice_id"],
        "payment_intent": f"pi_{t['invoice_id']}", "created": _unix(t["created_at"]),
        "status": "failed" if failed else "succeeded", "paid": not failed, "captured": not failed,
        "refunded": refunded and refund_amount >= amount, "failure_code": failure_code,
        "failure_message": t.get("decline_message") if failed else None,
        "outcome": {"network_status": "declined_by_network" if failed else "approved_by_network",
                    "reason": reason, "type": "issuer_declined" if failed else "authorized",
                    "seller_message": "The bank declined the payment." if failed else "Payment complete."},
        "payment_method": t.get("payment_method_token"),
        "payment_method_details": {"type": t.get("payment_method_type") or "card", "card": {
            "brand": t.get("card_brand"), "country": t.get("card_country"),
            "fingerprint": t.get("card_fingerprint"), "iin": t.get("card_bin")}},
        "livemode": False,
    }


def _rows(conn, table: sa.Table, order_col: str) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c[order_col]))]


def emit_events(engine: sa.Engine) -> list[dict]:
    """Every Stripe event the billing database's history implies, oldest first."""
    with engine.connect() as conn:
        customers = _rows(conn, bs.customers, "customer_id")
        subs = _rows(conn, bs.subscriptions, "subscription_id")
        invoices = _rows(conn, bs.invoices, "invoice_id")
        txs = _rows(conn, bs.transactions, "transaction_id")
    out: list[tuple[int, int, dict]] = []
    seq = 0

    def add(etype: str, obj: dict, created: int) -> None:
        nonlocal seq
        seq += 1
        out.append((created, seq, _event(etype, obj, created, seq)))

    for c in customers:
        add("customer.created", stripe_customer(c), _unix(c["created_at"]))
    for s in subs:
        initial = "trialing" if s["status"] == "trialing" else "active"
        add("customer.subscription.created", stripe_subscription(s, initial, final=False),
            _unix(s["created_at"]))
        final_status = _SUB_STATUS.get(s["status"], "active")
        if (final_status, s["status"]) != (initial, initial) or s.get("dunning_complete_at"):
            etype = "customer.subscription.deleted" if final_status == "canceled" else "customer.subscription.updated"
            when = max(_unix(s["updated_at"]), _unix(s["created_at"]) + 1)
            add(etype, stripe_subscription(s, final_status, final=True), when)

    by_invoice: dict[str, list[dict]] = defaultdict(list)
    for t in txs:
        by_invoice[t["invoice_id"]].append(t)
    for i in invoices:
        created = _unix(i["created_at"])
        add("invoice.finalized", stripe_invoice(i, status="open", attempt_count=0), created)
        attempts = sorted(by_invoice.get(i["invoice_id"], []), key=lambda t: (t["attempt_number"],
                                                                             t["transaction_id"]))
        paid = False
        succeeded = {t["attempt_number"]: t for t in attempts if t["status"] == "succeeded"}
        for t in attempts:
            at = max(_unix(t["created_at"]), created)
            n = t["attempt_number"]
            if t["status"] == "failed":
                add("charge.failed", stripe_charge(t), at)
                add("invoice.payment_failed", stripe_invoice(i, status="open", attempt_count=n,
                                                             charge=t["transaction_id"]), at)
            elif t["status"] == "refunded" and (succeeded.get(n) or next(iter(succeeded.values()), None)):
                # the engine's convention: a refund row beside the succeeded charge -> charge.refunded
                charge_row = succeeded.get(n) or next(iter(succeeded.values()))
                rid = t["gateway_transaction_id"] if str(t["gateway_transaction_id"]).startswith("re_") \
                    else f"re_{t['transaction_id']}"
                when = max(_unix(t["created_at"]), _unix(charge_row["created_at"]) + 1)
                add("charge.refunded", stripe_charge(charge_row, refunded=True, refund_id=rid, refunded_at=when,
                                                     refund_amount=t["amount_minor"]), when)
            else:  # succeeded (or a refunded row standing for its own charge)
                paid = True
                add("charge.succeeded", stripe_charge(t), at)
                add("invoice.paid", stripe_invoice(i, status="paid", attempt_count=n,
                                                   charge=t["transaction_id"], paid_at=at), at)
                if t["status"] == "refunded":
                    when = max(_unix(t["updated_at"]), at + 1)
                    add("charge.refunded", stripe_charge(t, refunded=True, refunded_at=when), when)
        last_n = attempts[-1]["attempt_number"] if attempts else 0
        end = max(_unix(i["updated_at"]), created + 1)
        if i["status"] == "void":
            add("invoice.voided", stripe_invoice(i, status="void", attempt_count=last_n, voided_at=end), end)
        elif i["status"] == "uncollectible":
            add("invoice.marked_uncollectible",
                stripe_invoice(i, status="uncollectible", attempt_count=last_n, uncollectible_at=end), end)
        elif i["status"] in ("paid", "refunded") and not paid:  # paid outside a recorded attempt
            inv = stripe_invoice(i, status="paid", attempt_count=last_n, paid_at=_unix(i.get("paid_at")) or end)
            inv["paid_out_of_band"] = True
            add("invoice.paid", inv, end)
    out.sort(key=lambda x: (x[0], x[1]))
    return [e for _, _, e in out]


def signed_deliveries(events: list[dict], secret: str, timestamp: int | None = None) -> list[tuple[bytes, dict]]:
    """``(body, headers)`` per event, signed the way Stripe signs (``Stripe-Signature``)."""
    import time

    from recovery_pipeline.webhooks.signing import sign_stripe

    ts = int(time.time()) if timestamp is None else int(timestamp)
    out = []
    for ev in events:
        body = json.dumps(ev, separators=(",", ":")).encode()
        out.append((body, {"Content-Type": "application/json", "Stripe-Signature": sign_stripe(secret, body, ts)}))
    return out


def deliver(receiver_url: str, events: list[dict], secret: str, *, client=None) -> list[int]:
    """POST each signed event to ``{receiver_url}/webhooks/stripe``; returns the status codes."""
    import httpx

    own = client is None
    client = client or httpx.Client(timeout=10)
    try:
        return [client.post(f"{receiver_url.rstrip('/')}/webhooks/stripe", content=body, headers=headers).status_code
                for body, headers in signed_deliveries(events, secret)]
    finally:
        if own:
            client.close()
