"""Stripe objects and events -> billing export rows (the columns of ``billing_engine/schema.py``).

Pure functions, no I/O. Two layers:

* ``plan_event(event)`` turns one Stripe event into the object versions to store
  (:class:`ObjectVersion`) or a skip reason. Known event types: ``invoice.*``, ``charge.*``,
  ``payment_intent.payment_failed``, ``customer.subscription.*``, ``customer.*``,
  ``customer.source.expiring``, ``invoice_payment.paid``. Anything else is skipped with a reason
  (the raw event stays in the inbox).
* ``customer_row``, ``subscription_row``, ``invoice_row``, ``charge_transaction_row``,
  ``attempt_transaction_row`` map one stored object to one row. Timestamps are the source's own
  (object ``created``, event ``created``), never the sync time; money stays in minor units with an
  upper-case ISO-4217 code.

Both API shapes are understood: before 2025-03-31 ("acacia": ``invoice.subscription``,
``invoice.charge``, ``invoice.payment_intent``, ``charge.invoice``) and from 2025-03-31
("basil": ``invoice.parent.subscription_details.subscription``, ``invoice.payments``,
``invoice_payment`` objects).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GATEWAY = "stripe"

# Stripe invoice status -> schema invoice status (``refunded`` is derived from charges).
INVOICE_STATUS = {"draft": "open", "open": "open", "paid": "paid", "void": "void",
                  "uncollectible": "uncollectible"}
# Stripe subscription status -> schema subscription status.
SUBSCRIPTION_STATUS = {"active": "active", "trialing": "trialing", "past_due": "past_due",
                       "unpaid": "past_due", "incomplete": "past_due", "paused": "paused",
                       "canceled": "canceled", "incomplete_expired": "expired"}
# Tie-break ranks inside one second: later lifecycle states outrank earlier ones.
_INVOICE_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
_CHARGE_RANK = {"pending": 0, "failed": 1, "succeeded": 1}
_SUB_RANK = {"incomplete": 0, "trialing": 1, "active": 2, "past_due": 3, "unpaid": 4, "paused": 4,
             "canceled": 5, "incomplete_expired": 5}

DUNNING_METADATA_KEY = "butter_dunning_complete"
# Failure codes that are themselves the decline reason (no ``card_declined`` + reason pair).
_CARD_DECLINED = "card_declined"

INVOICE_EVENTS_WITH_STATE = {
    "invoice.created", "invoice.updated", "invoice.finalized", "invoice.payment_failed",
    "invoice.paid", "invoice.payment_succeeded", "invoice.voided", "invoice.marked_uncollectible",
    "invoice.payment_action_required", "invoice.sent", "invoice.overdue", "invoice.will_be_due",
    "invoice.finalization_failed", "invoice.deleted",
}
_DELETED_RANK = 9999  # a deleted draft outranks every other state of that invoice
CHARGE_EVENTS = {"charge.failed", "charge.succeeded", "charge.refunded", "charge.captured",
                 "charge.updated", "charge.pending", "charge.expired"}
CUSTOMER_EVENTS = {"customer.created", "customer.updated", "customer.deleted"}


class MappingError(ValueError):
    """The event cannot be mapped (malformed); the reason is safe to show."""


@dataclass(frozen=True)
class ObjectVersion:
    object_type: str
    object_id: str
    version_ts: int
    version_rank: int
    event_id: str
    event_type: str
    data: dict[str, Any]

    def data_json(self) -> str:
        return json.dumps(self.data, separators=(",", ":"), sort_keys=True)


@dataclass
class EventPlan:
    event_id: str
    event_type: str
    created: int
    versions: list[ObjectVersion] = field(default_factory=list)
    skip_reason: str | None = None
    note: str | None = None

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None


# --- small helpers --------------------------------------------------------------------------------

def ts(value: Any) -> datetime | None:
    """Unix seconds (int/float/numeric string) or ISO string -> aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), UTC)
    text = str(value).strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ref_id(value: Any) -> str | None:
    """An id from either a plain id string or an expanded object ``{"id": ...}``."""
    if isinstance(value, dict):
        value = value.get("id")
    return str(value) if value not in (None, "") else None


def currency(value: Any) -> str | None:
    return str(value).upper() if value else None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


# --- links between objects (both API shapes) ------------------------------------------------------

def invoice_subscription_id(inv: dict) -> str | None:
    return (ref_id(inv.get("subscription"))
            or ref_id(_dig(inv, "parent", "subscription_details", "subscription"))
            or next((ref_id(line.get("subscription")) for line in _dig(inv, "lines", "data") or []
                     if isinstance(line, dict) and ref_id(line.get("subscription"))), None))


def invoice_payment_refs(inv: dict) -> tuple[set[str], set[str]]:
    """(charge ids, payment intent ids) an invoice names, in either API shape."""
    charges, intents = set(), set()
    if ref_id(inv.get("charge")):
        charges.add(ref_id(inv.get("charge")))
    if ref_id(inv.get("payment_intent")):
        intents.add(ref_id(inv.get("payment_intent")))
    for p in _dig(inv, "payments", "data") or []:
        payment = p.get("payment") if isinstance(p, dict) else None
        if isinstance(payment, dict):
            if ref_id(payment.get("charge")):
                charges.add(ref_id(payment.get("charge")))
            if ref_id(payment.get("payment_intent")):
                intents.add(ref_id(payment.get("payment_intent")))
    return charges, intents


def charge_invoice_id(ch: dict) -> str | None:
    return ref_id(ch.get("invoice")) or ref_id(_dig(ch, "payment_intent", "invoice"))


def decline_code(ch: dict) -> str | None:
    """The Stripe decline code of a failed charge: ``outcome.reason`` refines ``card_declined``;
    otherwise ``failure_code``; otherwise ``outcome.reason`` / ``outcome.network_status``."""
    if ch.get("status") != "failed" and not ch.get("failure_code"):
        return None
    failure = ch.get("failure_code")
    outcome = ch.get("outcome") or {}
    reason = outcome.get("reason")
    if failure == _CARD_DECLINED and reason:
        return str(reason)
    if failure:
        return str(failure)
    if reason:
        return str(reason)
    status = outcome.get("network_status")
    if status and status != "approved_by_network":
        return str(status)
    return None


def links(object_type: str, obj: dict) -> dict[str, str | None]:
    """The ids an object points at (``invoice_id, subscription_id, customer_id, payment_intent_id``),
    stored beside it so that an incremental read can find everything a change touches."""
    out: dict[str, str | None] = {"invoice_id": None, "subscription_id": None, "customer_id": None,
                                  "payment_intent_id": None}
    if object_type == "invoice":
        _, intents = invoice_payment_refs(obj)
        out.update(invoice_id=obj.get("id"), subscription_id=invoice_subscription_id(obj),
                   customer_id=ref_id(obj.get("customer")),
                   payment_intent_id=sorted(intents)[0] if intents else None)
    elif object_type == "invoice_attempt":
        out.update(invoice_id=obj.get("invoice_id"), subscription_id=obj.get("subscription_id"),
                   customer_id=obj.get("customer_id"), payment_intent_id=obj.get("payment_intent_id"))
    elif object_type == "charge":
        out.update(invoice_id=charge_invoice_id(obj), customer_id=ref_id(obj.get("customer")),
                   payment_intent_id=ref_id(obj.get("payment_intent")))
    elif object_type == "payment_intent":
        out.update(invoice_id=ref_id(obj.get("invoice")), customer_id=ref_id(obj.get("customer")),
                   payment_intent_id=obj.get("id"))
    elif object_type == "invoice_payment":
        payment = obj.get("payment") or {}
        out.update(invoice_id=ref_id(obj.get("invoice")), payment_intent_id=ref_id(payment.get("payment_intent")))
    elif object_type == "subscription":
        out.update(subscription_id=obj.get("id"), customer_id=ref_id(obj.get("customer")))
    elif object_type in ("customer", "source"):
        out.update(customer_id=obj.get("id") if object_type == "customer" else ref_id(obj.get("customer")))
    return {k: (str(v)[:255] if v else None) for k, v in out.items()}


# --- ordering -------------------------------------------------------------------------------------

def version_rank(object_type: str, obj: dict) -> int:
    if object_type == "invoice":
        return _INVOICE_RANK.get(obj.get("status"), 0) * 1000 + min(_int(obj.get("attempt_count")), 999)
    if object_type == "charge":
        refund = 2 if obj.get("refunded") else (1 if _int(obj.get("amount_refunded")) > 0 else 0)
        return _CHARGE_RANK.get(obj.get("status"), 0) * 10 + refund
    if object_type == "subscription":
        meta = obj.get("metadata") or {}
        return _SUB_RANK.get(obj.get("status"), 0) * 10 + (1 if meta.get(DUNNING_METADATA_KEY) else 0)
    return 0


# --- events -> object versions --------------------------------------------------------------------

def _version(event: dict, object_type: str, object_id: str, data: dict, rank: int | None = None):
    return ObjectVersion(
        object_type=object_type, object_id=object_id, version_ts=_int(event.get("created")),
        version_rank=version_rank(object_type, data) if rank is None else rank,
        event_id=str(event["id"]), event_type=str(event.get("type")), data=data)


def attempt_record(inv: dict, outcome: str, event_created: int) -> dict:
    """What one invoice payment attempt event says (kept apart from the invoice's latest state)."""
    charges, intents = invoice_payment_refs(inv)
    return {
        "invoice_id": inv["id"],
        "attempt_number": max(_int(inv.get("attempt_count")), 1),
        "outcome": outcome,  # failed | succeeded
        "customer_id": ref_id(inv.get("customer")),
        "subscription_id": invoice_subscription_id(inv),
        "amount_minor": _int(inv.get("amount_due")) if outcome == "failed"
        else _int(inv.get("amount_paid")) or _int(inv.get("amount_due")),
        "currency": inv.get("currency"),
        "charge_id": sorted(charges)[0] if len(charges) == 1 else None,
        "payment_intent_id": sorted(intents)[0] if len(intents) == 1 else None,
        "at": event_created,
    }


def plan_event(event: dict) -> EventPlan:
    """What to store for one Stripe event, or why it is skipped. Raises MappingError when malformed."""
    if not isinstance(event, dict):
        raise MappingError("event is not a JSON object")
    event_id, event_type = event.get("id"), event.get("type")
    if not event_id or not isinstance(event_id, str):
        raise MappingError("event has no id")
    if not event_type or not isinstance(event_type, str):
        raise MappingError(f"event {event_id} has no type")
    if event.get("object") not in (None, "event"):
        raise MappingError(f"{event_id} is a {event.get('object')!r}, not an event")
    created = _int(event.get("created"), -1)
    if created < 0:
        raise MappingError(f"event {event_id} has no created timestamp")
    obj = _dig(event, "data", "object")
    plan = EventPlan(event_id=event_id, event_type=event_type, created=created)
    if not isinstance(obj, dict):
        raise MappingError(f"event {event_id} has no data.object")
    kind = obj.get("object")
    oid = obj.get("id")

    def need(expected: str) -> None:
        if kind != expected:
            raise MappingError(f"{event_type} carries a {kind!r}, expected {expected!r}")
        if not oid:
            raise MappingError(f"{event_type} object has no id")

    if event_type in INVOICE_EVENTS_WITH_STATE:
        need("invoice")
        if event_type == "invoice.deleted":
            plan.versions.append(_version(event, "invoice", oid, {**obj, "deleted": True}, rank=_DELETED_RANK))
            plan.note = "draft invoice deleted: no billing row"
            return plan
        plan.versions.append(_version(event, "invoice", oid, obj))
        if event_type == "invoice.payment_failed":
            plan.versions.append(_version(event, "invoice_attempt", f"{oid}#{max(_int(obj.get('attempt_count')), 1)}",
                                          attempt_record(obj, "failed", created), rank=0))
        elif event_type in ("invoice.paid", "invoice.payment_succeeded"):
            paid_oob = bool(obj.get("paid_out_of_band"))
            if not paid_oob and _int(obj.get("attempt_count")) >= 1 and _int(obj.get("amount_paid")) > 0:
                plan.versions.append(_version(event, "invoice_attempt",
                                              f"{oid}#{max(_int(obj.get('attempt_count')), 1)}",
                                              attempt_record(obj, "succeeded", created), rank=1))
            else:
                plan.note = "paid without a charge (out of band or zero amount): no transaction"
        return plan
    if event_type == "invoice.upcoming":
        plan.skip_reason = "invoice.upcoming previews an invoice that does not exist yet"
        return plan
    if event_type in CHARGE_EVENTS:
        need("charge")
        plan.versions.append(_version(event, "charge", oid, obj))
        return plan
    if event_type == "payment_intent.payment_failed":
        need("payment_intent")
        plan.versions.append(_version(event, "payment_intent", oid, obj))
        return plan
    if event_type.startswith("customer.subscription."):
        need("subscription")
        plan.versions.append(_version(event, "subscription", oid, obj))
        return plan
    if event_type in CUSTOMER_EVENTS:
        need("customer")
        plan.versions.append(_version(event, "customer", oid, obj))
        return plan
    if event_type == "customer.source.expiring":
        if not oid:
            raise MappingError("customer.source.expiring object has no id")
        plan.versions.append(_version(event, "source", oid, obj))
        plan.note = "card expiry stored (no billing row carries it)"
        return plan
    if event_type == "invoice_payment.paid":
        need("invoice_payment")
        plan.versions.append(_version(event, "invoice_payment", oid, obj))
        return plan
    plan.skip_reason = f"event type {event_type} is not used by the canonical model"
    return plan


# --- objects -> rows ------------------------------------------------------------------------------

def customer_row(cus: dict, updated: int | None = None) -> dict:
    address = cus.get("address") or {}
    shipping_country = _dig(cus, "shipping", "address", "country")
    return {
        "customer_id": cus["id"],
        "email": cus.get("email"),
        "country": (address.get("country") or shipping_country or None),
        "created_at": ts(cus.get("created")),
        "updated_at": ts(updated if updated is not None else cus.get("created")),
    }


def customer_row_from_invoice(inv: dict, updated: int | None = None) -> dict:
    """A customer known only through an invoice (no ``customer.*`` events subscribed)."""
    return {
        "customer_id": ref_id(inv.get("customer")),
        "email": inv.get("customer_email"),
        "country": _dig(inv, "customer_address", "country") or _dig(inv, "customer_shipping", "address",
                                                                    "country"),
        "created_at": ts(inv.get("created")),
        "updated_at": ts(updated if updated is not None else inv.get("created")),
    }


def subscription_dunning_complete(sub: dict) -> datetime | None:
    """End of dunning: ``metadata.butter_dunning_complete`` (unix seconds), or the subscription was
    canceled because payment failed (Stripe's end-of-dunning cancellation)."""
    stamp = ts((sub.get("metadata") or {}).get(DUNNING_METADATA_KEY))
    if stamp:
        return stamp
    reason = _dig(sub, "cancellation_details", "reason")
    if sub.get("status") == "canceled" and reason == "payment_failed":
        return ts(sub.get("canceled_at") or sub.get("ended_at"))
    return None


def subscription_row(sub: dict, updated: int | None = None) -> dict:
    items = [i for i in (_dig(sub, "items", "data") or []) if isinstance(i, dict)]
    first = items[0] if items else {}
    price = first.get("price") or first.get("plan") or sub.get("plan") or {}
    recurring = price.get("recurring") or {}
    amount = 0
    for item in items:
        p = item.get("price") or item.get("plan") or {}
        unit = p.get("unit_amount", p.get("amount"))
        amount += _int(unit) * _int(item.get("quantity"), 1)
    status = SUBSCRIPTION_STATUS.get(sub.get("status"), "active")
    if status == "active" and sub.get("pause_collection"):
        status = "paused"
    meta = sub.get("metadata") or {}
    return {
        "subscription_id": sub["id"],
        "customer_id": ref_id(sub.get("customer")),
        "plan_id": ref_id(price) or "unknown",
        "status": status,
        "amount_minor": amount,
        "currency": currency(sub.get("currency") or price.get("currency")),
        "billing_period": _int(recurring.get("interval_count") or price.get("interval_count"), 1),
        "billing_period_unit": str(recurring.get("interval") or price.get("interval") or "month")[:8],
        "business_entity": meta.get("business_entity") or ref_id(sub.get("on_behalf_of")),
        "activated_at": ts(sub.get("start_date")),
        "canceled_at": ts(sub.get("canceled_at")),
        "expires_at": ts(sub.get("ended_at") or sub.get("cancel_at")),
        "dunning_complete_at": subscription_dunning_complete(sub),
        "created_at": ts(sub.get("created")),
        "updated_at": ts(updated if updated is not None else sub.get("created")),
    }


def invoice_updated_ts(inv: dict) -> int:
    """Latest timestamp the invoice itself carries (for objects read from the API, not events)."""
    st = inv.get("status_transitions") or {}
    values = [_int(inv.get("created"))] + [_int(st.get(k)) for k in
                                          ("finalized_at", "paid_at", "voided_at", "marked_uncollectible_at")]
    return max(values)


def invoice_row(inv: dict, updated: int | None = None, *, refunded: bool = False,
                collection_paused: bool = False, dunning_complete_at: datetime | None = None) -> dict:
    st = inv.get("status_transitions") or {}
    status = INVOICE_STATUS.get(inv.get("status"), "open")
    if refunded and status == "paid":
        status = "refunded"
    meta = inv.get("metadata") or {}
    own_dunning = ts(meta.get(DUNNING_METADATA_KEY))
    dunning = own_dunning or (dunning_complete_at if status in ("open", "uncollectible") else None)
    return {
        "invoice_id": inv["id"],
        "customer_id": ref_id(inv.get("customer")),
        "subscription_id": invoice_subscription_id(inv),
        "status": status,
        "amount_minor": _int(inv.get("amount_due", inv.get("total"))),
        "currency": currency(inv.get("currency")),
        "business_entity": meta.get("business_entity") or ref_id(inv.get("on_behalf_of")),
        "attempt_count": _int(inv.get("attempt_count")),
        "due_at": ts(inv.get("due_date") or st.get("finalized_at")),
        "paid_at": ts(st.get("paid_at")),
        "collection_paused": bool(collection_paused),
        "dunning_complete_at": dunning,
        "handed_off_at": None,
        "payment_method_update_requested_at": None,
        "created_at": ts(inv.get("created")),
        "updated_at": ts(updated if updated is not None else invoice_updated_ts(inv)),
    }


def _card(ch: dict) -> dict:
    return _dig(ch, "payment_method_details", "card") or {}


def charge_transaction_row(ch: dict, *, invoice_id: str, attempt_number: int,
                           customer_id: str | None = None, subscription_id: str | None = None,
                           updated: int | None = None, intent: dict | None = None) -> dict | None:
    """One payment attempt from a charge; ``None`` for a charge with no outcome yet (pending).
    A refunded charge stays ``succeeded``; its refund is a row of its own (:func:`refund_transaction_row`)."""
    status = ch.get("status")
    if status not in ("succeeded", "failed"):
        return None
    card = _card(ch)
    iin = str(card.get("iin") or "")
    outcome = ch.get("outcome") or {}
    code = decline_code(ch)
    if code is None and status == "failed" and intent:
        code = _dig(intent, "last_payment_error", "decline_code") or _dig(intent, "last_payment_error", "code")
    return {
        "transaction_id": ch["id"],
        "invoice_id": invoice_id,
        "customer_id": ref_id(ch.get("customer")) or customer_id,
        "subscription_id": subscription_id,
        "status": status,
        "amount_minor": _int(ch.get("amount")),
        "currency": currency(ch.get("currency")),
        "attempt_number": attempt_number,
        "gateway": GATEWAY,
        "gateway_transaction_id": ch["id"],
        "gateway_status": outcome.get("network_status") or status,
        "decline_code": code,
        "decline_message": (ch.get("failure_message") or (outcome.get("seller_message")
                                                           if status == "failed" else None)),
        "payment_method_type": _dig(ch, "payment_method_details", "type"),
        "payment_method_token": ref_id(ch.get("payment_method")),
        "card_brand": card.get("brand"),
        "card_bin": iin[:6] if iin.isdigit() and len(iin) >= 6 else None,
        "card_fingerprint": card.get("fingerprint"),
        "card_country": card.get("country"),
        "created_at": ts(ch.get("created")),
        "updated_at": ts(updated if updated is not None else ch.get("created")),
    }


def attempt_transaction_row(att: dict, *, intent: dict | None = None, charge: dict | None = None) -> dict:
    """One payment attempt known from an invoice event (no charge event for it in the store).

    ``charge`` (a charge matched to the attempt) and ``intent`` (its payment intent) add the decline
    code and card details when present."""
    failed = att["outcome"] == "failed"
    if charge is not None:
        row = charge_transaction_row(charge, invoice_id=att["invoice_id"],
                                     attempt_number=att["attempt_number"],
                                     customer_id=att.get("customer_id"),
                                     subscription_id=att.get("subscription_id"), updated=att["at"],
                                     intent=intent)
        if row is not None:
            return row
    tx_id = att.get("charge_id") or f"{att['invoice_id']}_attempt_{att['attempt_number']}"
    err = (intent or {}).get("last_payment_error") or {}
    pm = err.get("payment_method") if isinstance(err.get("payment_method"), dict) else {}
    card = (pm or {}).get("card") or {}
    return {
        "transaction_id": tx_id,
        "invoice_id": att["invoice_id"],
        "customer_id": att.get("customer_id"),
        "subscription_id": att.get("subscription_id"),
        "status": "failed" if failed else "succeeded",
        "amount_minor": _int(att.get("amount_minor")),
        "currency": currency(att.get("currency")),
        "attempt_number": att["attempt_number"],
        "gateway": GATEWAY,
        "gateway_transaction_id": att.get("charge_id") or att.get("payment_intent_id") or tx_id,
        "gateway_status": "failed" if failed else "succeeded",
        "decline_code": (err.get("decline_code") or err.get("code")) if failed else None,
        "decline_message": err.get("message") if failed else None,
        "payment_method_type": (pm or {}).get("type"),
        "payment_method_token": ref_id(pm) if pm else None,
        "card_brand": card.get("brand"),
        "card_bin": None,
        "card_fingerprint": card.get("fingerprint"),
        "card_country": card.get("country"),
        "created_at": ts(att["at"]),
        "updated_at": ts(att["at"]),
    }


def refund_transaction_row(ch: dict, charge_row: dict, updated: int | None = None) -> dict | None:
    """The refund of a charge as its own ``refunded`` transaction (the billing engine's convention:
    the succeeded charge stays, a refunded row with the same attempt number is added), or ``None``.
    Id: the (first) refund's ``re_...`` id when the charge lists it, else ``<charge id>_refund``."""
    refunded = _int(ch.get("amount_refunded"))
    if charge_row is None or charge_row["status"] != "succeeded" or (refunded <= 0 and not ch.get("refunded")):
        return None
    refunds = [r for r in (_dig(ch, "refunds", "data") or []) if isinstance(r, dict) and r.get("id")]
    refunds.sort(key=lambda r: (_int(r.get("created")), r["id"]))
    rid = refunds[0]["id"] if refunds else f"{ch['id']}_refund"
    at = max([_int(r.get("created")) for r in refunds] or [_int(updated if updated is not None else ch.get("created"))])
    return {**charge_row,
            "transaction_id": rid, "status": "refunded", "amount_minor": refunded or _int(ch.get("amount")),
            "gateway_transaction_id": rid, "gateway_status": "refunded", "decline_code": None,
            "decline_message": None, "created_at": ts(at), "updated_at": ts(updated if updated is not None else at)}
