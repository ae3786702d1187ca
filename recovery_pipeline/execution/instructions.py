"""Provider decisions, normalised: one ``Instruction`` per stored event or polled action.

Pure functions: a stored inbox row (provider, raw body, headers) or a polled recovery action goes in,
an ``Instruction`` comes out. Nothing is looked up here (a Revtain transaction id is resolved to an
invoice by the executor through the ops store ``handoffs`` table).

Kinds (the business action each instruction asks for):
``retry_now``, ``request_payment_method_update``, ``pause_collection``, ``complete_dunning``,
``mark_paid``, ``forward_card_update_link``, ``route_to_review``, ``noop`` (recorded, nothing to do,
e.g. Revtain "wait" or ``card.updated``) and ``skip`` (not an instruction we act on: unknown
suggestion or event type, Stripe billing data). Unknown values never raise: they become ``skip``
with the raw type kept for the audit trail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

RETRY_NOW = "retry_now"
REQUEST_PM_UPDATE = "request_payment_method_update"
PAUSE_COLLECTION = "pause_collection"
COMPLETE_DUNNING = "complete_dunning"
MARK_PAID = "mark_paid"
FORWARD_CARD_UPDATE_LINK = "forward_card_update_link"
ROUTE_TO_REVIEW = "route_to_review"
NOOP = "noop"
SKIP = "skip"

BUSINESS_ACTIONS = (RETRY_NOW, REQUEST_PM_UPDATE, PAUSE_COLLECTION, COMPLETE_DUNNING, MARK_PAID,
                    FORWARD_CARD_UPDATE_LINK)
KINDS = (*BUSINESS_ACTIONS, ROUTE_TO_REVIEW, NOOP, SKIP)
# Draining a backlog: money first (mark paid, retry), then state updates, oldest first.
FINANCIAL_KINDS = frozenset({MARK_PAID, RETRY_NOW})

SLICKER_SUGGESTIONS = {
    "ACTION_SUGGESTION_RETRY": RETRY_NOW,
    "ACTION_SUGGESTION_CARD_CHANGE": REQUEST_PM_UPDATE,
}


class InstructionError(ValueError):
    """The stored payload cannot be read as an instruction at all (not JSON, not an object)."""


@dataclass(frozen=True)
class Instruction:
    provider: str
    source: str  # webhook | poll
    source_event_id: str
    kind: str
    invoice_id: str | None = None
    subscription_id: str | None = None
    transaction_id: str | None = None  # the provider's transaction id (Revtain) or ours (Slicker)
    ideal_retry_time: datetime | None = None
    card_update_url: str | None = None
    recommended_action: str | None = None
    raw_type: str | None = None  # the provider's event type / suggestion, as received
    received_at: datetime | None = None
    customer_id: str | None = None
    detail: str | None = field(default=None, compare=False)
    # the webhook delivery's own event id when ``source_event_id`` is the provider's decision id
    delivery_id: str | None = None

    @property
    def is_financial(self) -> bool:
        return self.kind in FINANCIAL_KINDS

    @property
    def idempotency_key(self) -> str:
        """Stable across retried executions of the same source event."""
        return f"{self.provider}:{self.source_event_id}"

    def is_due(self, now: datetime) -> bool:
        """A retry waits until its ideal time; everything else is due at once."""
        if self.kind != RETRY_NOW or self.ideal_retry_time is None:
            return True
        return self.ideal_retry_time <= now

    def sort_key(self) -> tuple:
        received = self.received_at or datetime.min.replace(tzinfo=UTC)
        return (0 if self.is_financial else 1, received)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("ideal_retry_time", "received_at"):
            if d[k] is not None:
                d[k] = d[k].isoformat()
        return d


# --- small helpers --------------------------------------------------------------------------------
def parse_time(value: Any) -> datetime | None:
    """ISO-8601 string (``Z`` allowed), unix seconds, or datetime -> aware UTC datetime (or None)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", s):
            return datetime.fromtimestamp(float(s), tz=UTC)
        try:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            return None
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return None


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def pick(obj: Mapping[str, Any] | None, *names: str) -> Any:
    """First non-empty value among ``names``, matching camelCase / snake_case / kebab alike."""
    if not isinstance(obj, Mapping):
        return None
    by_norm = {_norm(k): v for k, v in obj.items()}
    for name in names:
        v = by_norm.get(_norm(name))
        if v not in (None, ""):
            return v
    return None


def _str(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def load_body(body: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(body, Mapping):
        return dict(body)
    try:
        parsed = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise InstructionError(f"payload is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InstructionError(f"payload is a JSON {type(parsed).__name__}, expected an object")
    return parsed


def _headers(headers: Mapping[str, Any] | str | None) -> dict[str, str]:
    if headers is None:
        return {}
    if isinstance(headers, str):
        try:
            headers = json.loads(headers) if headers else {}
        except ValueError:
            return {}
    return {str(k).lower(): str(v) for k, v in dict(headers).items()}


def _data(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    if isinstance(data, Mapping):
        obj = data.get("object")
        return dict(obj) if isinstance(obj, Mapping) and len(data) == 1 else dict(data)
    return body


def _common(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "invoice_id": _str(pick(data, "invoiceId", "invoice_id", "invoice")),
        "subscription_id": _str(pick(data, "subscriptionId", "subscription_id", "subscription")),
        "customer_id": _str(pick(data, "customerId", "customer_id", "customer")),
    }


# --- Slicker ------------------------------------------------------------------------------------
def slicker_suggestion_kind(suggestion: str | None) -> str:
    return SLICKER_SUGGESTIONS.get((suggestion or "").strip().upper(), SKIP)


def _slicker(body: dict[str, Any], event_type: str | None) -> dict[str, Any]:
    etype = _str(body.get("type")) or event_type
    data = _data(body)
    out = _common(data)
    out["transaction_id"] = _str(pick(data, "transactionId", "transaction_id"))
    # The recovery action's own id (the polled list's requestId) when the webhook carries it: the
    # decision's identity on both paths, so a hybrid integration acts once per decision.
    out["decision_id"] = _str(pick(data, "requestId", "actionId", "recoveryActionId"))
    t = (etype or "").strip().lower()
    if t == "recovery_action":
        suggestion = _str(pick(data, "actionSuggestion", "action_suggestion"))
        out.update(kind=slicker_suggestion_kind(suggestion), raw_type=suggestion or etype,
                   ideal_retry_time=parse_time(pick(data, "idealRetryTime", "ideal_retry_time")))
        if out["kind"] == SKIP:
            out["detail"] = f"unknown or unspecified action suggestion {suggestion!r}: stored, skipped"
    elif t in ("pause_collection", "pause_invoice"):
        out.update(kind=PAUSE_COLLECTION, raw_type=etype)
    elif t == "complete_dunning":
        out.update(kind=COMPLETE_DUNNING, raw_type=etype)
    else:
        out.update(kind=SKIP, raw_type=etype, detail=f"unknown Slicker event type {etype!r}")
    return out


def instruction_from_polled_action(action: Mapping[str, Any], *, provider: str = "slicker",
                                   received_at: datetime | None = None) -> Instruction:
    """A polled recovery action (the provider's list item, or a ``recovery_actions`` row)."""
    suggestion = _str(pick(action, "actionSuggestion", "action_suggestion"))
    kind = slicker_suggestion_kind(suggestion)
    atype = (_str(pick(action, "type")) or "").strip().lower()
    if atype in ("pause_collection", "pause_invoice"):
        kind, suggestion = PAUSE_COLLECTION, atype
    elif atype == "complete_dunning":
        kind, suggestion = COMPLETE_DUNNING, atype
    action_id = _str(pick(action, "action_id", "requestId", "id"))
    if not action_id:
        raise InstructionError("polled recovery action without an id (requestId)")
    return Instruction(
        provider=provider,
        source="poll",
        source_event_id=action_id,
        kind=kind,
        invoice_id=_str(pick(action, "invoiceId", "invoice_id")),
        subscription_id=_str(pick(action, "subscriptionId", "subscription_id")),
        transaction_id=_str(pick(action, "transactionId", "transaction_id")),
        ideal_retry_time=parse_time(pick(action, "idealRetryTime", "ideal_retry_time")),
        raw_type=suggestion,
        received_at=parse_time(received_at) or parse_time(pick(action, "polled_at", "createdAt", "created_at")),
        detail=None if kind != SKIP else f"unknown or unspecified action suggestion {suggestion!r}: stored, skipped",
    )


# --- Revtain ------------------------------------------------------------------------------------
def revtain_recommended_kind(recommended: str | None) -> str:
    """``wait`` -> noop, a card update -> request one, account review -> review; else skip."""
    r = _norm(recommended or "")
    if not r:
        return SKIP
    if "review" in r:
        return ROUTE_TO_REVIEW
    if "card" in r or "paymentmethod" in r:
        return REQUEST_PM_UPDATE
    if "wait" in r or "none" == r:
        return NOOP
    return SKIP


def _revtain(body: dict[str, Any], event_type: str | None) -> dict[str, Any]:
    etype = _str(pick(body, "type", "event")) or event_type
    data = _data(body)
    out = _common(data)
    out["transaction_id"] = _str(pick(data, "revtainTransactionId", "transactionId", "transaction_id"))
    if not out["invoice_id"]:  # the hand-off's idempotency key is the invoice id
        out["invoice_id"] = _str(pick(data, "idempotencyKey", "idempotency_key"))
    out["card_update_url"] = _str(pick(data, "cardUpdateUrl", "card_update_url", "updateUrl"))
    recommended = _str(pick(data, "recommendedAction", "recommended_action"))
    out["recommended_action"] = recommended
    out["raw_type"] = etype
    t = (etype or "").strip().lower()
    if t == "recovery.success":
        out["kind"] = MARK_PAID
    elif t in ("recovery.failed", "recovery.blocked"):
        out["kind"] = revtain_recommended_kind(recommended)
        if out["kind"] == NOOP:
            out["detail"] = f"{t}: provider recommends waiting"
        elif out["kind"] == SKIP:
            out["detail"] = f"{t}: unknown recommendedAction {recommended!r}: stored, skipped"
        elif out["kind"] == ROUTE_TO_REVIEW:
            out["detail"] = f"{t}: provider recommends reviewing the account"
    elif t == "card.updated":
        out.update(kind=NOOP, detail="card updated at the provider: recorded")
    elif t == "card.expiring_soon":
        out["kind"] = FORWARD_CARD_UPDATE_LINK
    else:
        out.update(kind=SKIP, detail=f"unknown Revtain event type {etype!r}: stored, skipped")
    return out


# --- Butter -------------------------------------------------------------------------------------
def _butter(body: dict[str, Any], event_type: str | None, headers: dict[str, str]) -> dict[str, Any]:
    etype = event_type or headers.get("x-butter-webhook-type") or _str(body.get("type"))
    data = _data(body)
    out = _common(data)
    out["raw_type"] = etype
    t = _norm(etype or "")
    recovered = pick(data, "recovered")
    if (not t or "dunning" in t) and recovered is not None and out["invoice_id"]:
        is_recovered = recovered is True or str(recovered).strip().lower() in ("true", "1", "yes")
        out["kind"] = MARK_PAID if is_recovered else COMPLETE_DUNNING
        out["detail"] = "end of dunning: recovered" if is_recovered else "end of dunning: not recovered"
    else:
        out.update(kind=SKIP, detail=f"Butter event {etype!r} is not an end-of-dunning instruction")
    return out


# --- Standard Webhooks (generic, configurable) --------------------------------------------------
DEFAULT_STANDARD_TYPE_MAP = {
    "recovery_action": None,  # read actionSuggestion like Slicker
    "retry": RETRY_NOW,
    "retry_now": RETRY_NOW,
    "payment.retry": RETRY_NOW,
    "request_payment_method_update": REQUEST_PM_UPDATE,
    "card_change": REQUEST_PM_UPDATE,
    "pause_collection": PAUSE_COLLECTION,
    "pause_invoice": PAUSE_COLLECTION,
    "complete_dunning": COMPLETE_DUNNING,
    "mark_paid": MARK_PAID,
    "recovery.success": MARK_PAID,
    "forward_card_update_link": FORWARD_CARD_UPDATE_LINK,
    "card.expiring_soon": FORWARD_CARD_UPDATE_LINK,
    "review": ROUTE_TO_REVIEW,
}


def _standard(body: dict[str, Any], event_type: str | None,
              type_map: Mapping[str, str | None] | None) -> dict[str, Any]:
    etype = _str(body.get("type")) or event_type
    data = _data(body)
    out = _common(data)
    out["transaction_id"] = _str(pick(data, "transactionId", "transaction_id"))
    out["card_update_url"] = _str(pick(data, "cardUpdateUrl", "card_update_url"))
    out["ideal_retry_time"] = parse_time(pick(data, "idealRetryTime", "ideal_retry_time", "retry_at"))
    out["raw_type"] = etype
    mapping = dict(DEFAULT_STANDARD_TYPE_MAP)
    mapping.update(type_map or {})
    key = (etype or "").strip()
    if key in mapping and mapping[key] is None:
        suggestion = _str(pick(data, "actionSuggestion", "action_suggestion"))
        out["kind"] = slicker_suggestion_kind(suggestion)
        out["raw_type"] = suggestion or etype
    elif key in mapping and mapping[key] in KINDS:
        out["kind"] = mapping[key]
    else:
        out.update(kind=SKIP, detail=f"event type {etype!r} is not mapped to an action: stored, skipped")
    return out


# --- entry point --------------------------------------------------------------------------------
def instruction_from_inbox(
    provider: str,
    event_id: str,
    body: str | bytes | Mapping[str, Any],
    *,
    headers: Mapping[str, Any] | str | None = None,
    event_type: str | None = None,
    received_at: datetime | None = None,
    standard_type_map: Mapping[str, str | None] | None = None,
) -> Instruction:
    """One stored webhook (``webhook_inbox`` row) -> one ``Instruction``.

    Raises ``InstructionError`` only when the payload is not a JSON object; every unknown type or
    value becomes ``kind == "skip"``. Stripe events are billing data, not instructions: ``skip``.
    """
    provider = (provider or "").strip().lower()
    base = {"provider": provider, "source": "webhook", "source_event_id": str(event_id),
            "received_at": parse_time(received_at)}
    if provider == "stripe":
        return Instruction(**base, kind=SKIP, raw_type=event_type,
                           detail="Stripe events are billing data, handled by the Stripe connector")
    body_obj = load_body(body)
    hdrs = _headers(headers)
    if provider == "slicker":
        fields = _slicker(body_obj, event_type)
        decision_id = fields.pop("decision_id", None)
        if decision_id and decision_id != base["source_event_id"]:
            base.update(source_event_id=decision_id, delivery_id=str(event_id))
    elif provider == "revtain":
        fields = _revtain(body_obj, event_type)
    elif provider == "butter":
        fields = _butter(body_obj, event_type, hdrs)
    elif provider == "standard":
        fields = _standard(body_obj, event_type, standard_type_map)
    else:
        return Instruction(**base, kind=SKIP, raw_type=event_type,
                           detail=f"no instruction mapping for provider {provider!r}")
    return Instruction(**base, **fields)
