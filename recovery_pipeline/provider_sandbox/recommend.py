"""Deterministic recovery recommendations from a decline code and the invoice's failure history.

Pure: the same decline code, number of failed attempts and failure time always give the same
recommendation, so tests and demos are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Never retry: the card is compromised or the issuer said stop.
HARD_DECLINES = frozenset({
    "fraudulent", "lost_card", "stolen_card", "pickup_card", "restricted_card",
    "security_violation", "revocation_of_authorization", "revocation_of_all_authorizations",
    "stop_payment_order",
})
# Revtain refuses to execute these at all (403).
REVTAIN_BLOCKED = frozenset({
    "fraudulent", "lost_card", "stolen_card", "pickup_card", "authentication_required",
})
# The customer can fix these by updating or confirming their card.
CUSTOMER_FIXABLE = frozenset({
    "expired_card", "incorrect_cvc", "invalid_cvc", "incorrect_number", "invalid_number",
    "invalid_expiry_month", "invalid_expiry_year", "card_declined", "card_not_supported",
    "authentication_required", "incorrect_zip",
})
# Soft declines best retried after money arrives (payday-ish).
WAIT_FOR_FUNDS = frozenset({
    "insufficient_funds", "card_velocity_exceeded", "withdrawal_count_limit_exceeded",
})

ACTION_RETRY = "ACTION_SUGGESTION_RETRY"
ACTION_CARD_CHANGE = "ACTION_SUGGESTION_CARD_CHANGE"
ACTION_UNSPECIFIED = "ACTION_SUGGESTION_UNSPECIFIED"


@dataclass(frozen=True)
class Recommendation:
    kind: str  # retry | card_change | pause_collection | complete_dunning
    action_suggestion: str  # Slicker actionSuggestion
    ideal_retry_time: datetime | None
    slicker_type: str  # Slicker webhook type: recovery_action | pause_collection | complete_dunning
    revtain_action: str  # Revtain recommendedAction: wait | request_card_update | review_account


def next_payday(after: datetime) -> datetime:
    """The first 1st or 15th of a month at 09:00 UTC that is at least 3 days after ``after``."""
    earliest = after + timedelta(days=3)
    day = earliest.replace(hour=9, minute=0, second=0, microsecond=0)
    if day < earliest:
        day += timedelta(days=1)
    while day.day not in (1, 15):
        day += timedelta(days=1)
    return day


def recommend(decline_code: str | None, failed_attempts: int, failed_at: datetime, *,
              pause_after: int = 3, dunning_after: int = 5) -> Recommendation:
    """Recommendation after the ``failed_attempts``-th failure of an invoice (1 = first failure)."""
    code = (decline_code or "generic_decline").lower()
    if code in HARD_DECLINES or failed_attempts >= dunning_after:
        return Recommendation("complete_dunning", ACTION_UNSPECIFIED, None, "complete_dunning",
                              "review_account")
    if failed_attempts >= pause_after:
        return Recommendation("pause_collection", ACTION_UNSPECIFIED, None, "pause_collection",
                              "wait")
    if code in CUSTOMER_FIXABLE:
        return Recommendation("card_change", ACTION_CARD_CHANGE, None, "recovery_action",
                              "request_card_update")
    if code in WAIT_FOR_FUNDS:
        return Recommendation("retry", ACTION_RETRY, next_payday(failed_at), "recovery_action",
                              "wait")
    retry_at = (failed_at + timedelta(days=1)).replace(microsecond=0)
    return Recommendation("retry", ACTION_RETRY, retry_at, "recovery_action", "wait")
