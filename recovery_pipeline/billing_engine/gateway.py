"""A deterministic payment gateway simulation.

The outcome of a charge is a pure function of ``(seed, invoice_id, attempt_number)`` and what the
gateway already knows about the invoice (the previous decline code, whether the customer has put a
new payment method on file). Decline codes are Stripe's. Three classes:

* **soft** declines (``insufficient_funds``, ``do_not_honor``, ``processing_error``, ...) may succeed
  on a later retry, with a per-code probability;
* **customer-action** declines (``expired_card``, ``incorrect_cvc``, ``authentication_required``,
  ...) never succeed on the same payment method; after the customer updates it they usually do;
* **hard** declines (``fraudulent``, ``lost_card``, ``stolen_card``, ``pickup_card``,
  ``restricted_card``) never succeed, whatever happens.

The vectorised history generator (``generator.py``) draws from the same tables, so a retry the
engine performs later behaves like the retries already in the history.

Payment methods are gateway tokens (``pm_<hex>``) and card BINs (first 6 digits); this module never
sees or produces a card number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SOFT, CUSTOMER_ACTION, HARD = "soft", "customer_action", "hard"

# code -> (class, weight among first failures, retry success probability, message)
# Messages are short paraphrases of Stripe's documented meanings.
DECLINE_CODES: dict[str, tuple[str, float, float, str]] = {
    "insufficient_funds": (SOFT, 0.36, 0.30, "The card has insufficient funds to complete the purchase."),
    "generic_decline": (SOFT, 0.13, 0.22, "The card was declined for an unknown reason."),
    "do_not_honor": (SOFT, 0.10, 0.18, "The card was declined for an unknown reason (do not honor)."),
    "card_declined": (SOFT, 0.05, 0.20, "The card was declined."),
    "try_again_later": (SOFT, 0.03, 0.55, "The card was declined for an unknown reason; try again later."),
    "processing_error": (SOFT, 0.03, 0.60, "An error occurred while processing the card."),
    "card_velocity_exceeded": (SOFT, 0.02, 0.30, "The balance or credit limit on the card was exceeded."),
    "withdrawal_count_limit_exceeded": (SOFT, 0.01, 0.30, "The card's withdrawal count limit was exceeded."),
    "expired_card": (CUSTOMER_ACTION, 0.10, 0.0, "The card has expired."),
    "incorrect_cvc": (CUSTOMER_ACTION, 0.02, 0.0, "The CVC number is incorrect."),
    "incorrect_number": (CUSTOMER_ACTION, 0.01, 0.0, "The card number is incorrect."),
    "authentication_required": (CUSTOMER_ACTION, 0.04, 0.0, "The card requires authentication."),
    "card_not_supported": (CUSTOMER_ACTION, 0.005, 0.0, "The card does not support this type of purchase."),
    "fraudulent": (HARD, 0.02, 0.0, "The payment was declined because it was identified as potentially fraudulent."),
    "lost_card": (HARD, 0.012, 0.0, "The payment was declined because the card is reported lost."),
    "stolen_card": (HARD, 0.008, 0.0, "The payment was declined because the card is reported stolen."),
    "pickup_card": (HARD, 0.005, 0.0, "The card cannot be used to make this payment (it may be reported lost or stolen)."),
    "restricted_card": (HARD, 0.005, 0.0, "The card cannot be used to make this payment."),
}
HARD_DECLINES = frozenset(c for c, v in DECLINE_CODES.items() if v[0] == HARD)
SOFT_DECLINES = frozenset(c for c, v in DECLINE_CODES.items() if v[0] == SOFT)
CUSTOMER_ACTION_DECLINES = frozenset(c for c, v in DECLINE_CODES.items() if v[0] == CUSTOMER_ACTION)
# probability that a retry succeeds once the customer has put a new payment method on file
UPDATED_METHOD_SUCCESS = 0.85
# probability that a first attempt fails (the generator varies it by country around this value)
FIRST_ATTEMPT_FAILURE_RATE = 0.16


def decline_class(code: str | None) -> str | None:
    if code is None:
        return None
    return DECLINE_CODES.get(code, (SOFT,))[0]


def decline_message(code: str) -> str:
    return DECLINE_CODES.get(code, (SOFT, 0, 0, "The card was declined."))[3]


def retry_success_probability(code: str | None, payment_method_updated: bool = False) -> float:
    """Chance that a retry after a failure with ``code`` succeeds."""
    if code is None:
        return 1.0 - FIRST_ATTEMPT_FAILURE_RATE
    cls, _w, p, _m = DECLINE_CODES.get(code, (SOFT, 0.0, 0.2, ""))
    if cls == HARD:
        return 0.0
    if cls == CUSTOMER_ACTION:
        return UPDATED_METHOD_SUCCESS if payment_method_updated else 0.0
    return max(p, UPDATED_METHOD_SUCCESS) if payment_method_updated else p


def _uniform(*parts: object) -> float:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) * (1.0 / (1 << 53))


def _hex(*parts: object, n: int = 16) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=n // 2).hexdigest()


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    decline_code: str | None
    decline_message: str | None
    gateway_transaction_id: str
    gateway_status: str  # succeeded | declined

    @property
    def status(self) -> str:
        return "succeeded" if self.succeeded else "failed"


class Gateway:
    """Deterministic charges: same inputs, same outcome, in any process, on any day."""

    name = "stripe"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def charge(
        self,
        *,
        invoice_id: str,
        attempt_number: int,
        previous_decline_code: str | None = None,
        payment_method_updated: bool = False,
    ) -> ChargeResult:
        u = _uniform(self.seed, invoice_id, attempt_number, "charge")
        gw_id = "ch_" + _hex(self.seed, invoice_id, attempt_number, "ch", n=24)
        if previous_decline_code is None and attempt_number <= 1:
            if u >= FIRST_ATTEMPT_FAILURE_RATE:
                return ChargeResult(True, None, None, gw_id, "succeeded")
            code = self._draw_code(_uniform(self.seed, invoice_id, attempt_number, "code"))
            return ChargeResult(False, code, decline_message(code), gw_id, "declined")
        p = retry_success_probability(previous_decline_code, payment_method_updated)
        if u < p:
            return ChargeResult(True, None, None, gw_id, "succeeded")
        code = previous_decline_code or self._draw_code(
            _uniform(self.seed, invoice_id, attempt_number, "code"))
        if decline_class(code) == SOFT and _uniform(self.seed, invoice_id, attempt_number, "drift") < 0.2:
            code = ("insufficient_funds", "do_not_honor", "generic_decline")[
                int(_uniform(self.seed, invoice_id, attempt_number, "alt") * 3)]
        return ChargeResult(False, code, decline_message(code), gw_id, "declined")

    def customer_updates_payment_method(self, invoice_id: str) -> bool:
        """Whether the customer acts on a payment-method-update request (deterministic)."""
        return _uniform(self.seed, invoice_id, "pm-update") < 0.5

    def new_payment_method_token(self, invoice_id: str) -> str:
        return "pm_" + _hex(self.seed, invoice_id, "pm", n=24)

    @staticmethod
    def _draw_code(u: float) -> str:
        total = sum(v[1] for v in DECLINE_CODES.values())
        acc = 0.0
        for code, v in DECLINE_CODES.items():
            acc += v[1] / total
            if u < acc:
                return code
        return "generic_decline"
