"""The billing-system interface the executor acts through, and its HTTP implementation.

``BillingSystem`` is what a real billing system's adapter implements. Every action takes an
idempotency key (``"{provider}:{source_event_id}"``): the billing system returns the first result
for a repeated key without acting again, so a retried execution never double-acts.

``HttpBillingSystem`` speaks the demo billing engine HTTP API (ARCHITECTURE.md, "Demo billing engine
HTTP API") through ``billing_engine.client.BillingEngineClient``: ``X-API-Key`` header,
``Idempotency-Key`` header on every action, JSON in and out. Transient failures (connection
errors, timeouts, 5xx, 429) are retried with exponential backoff and jitter (tenacity); what still fails raises ``BillingUnavailable`` and the
executor counts an attempt against ``max_receive_count``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter


class BillingError(Exception):
    """Base class: the billing system did not do what was asked."""


class BillingNotFound(BillingError):
    """The invoice does not exist in the billing system."""


class BillingConflict(BillingError):
    """409: the invoice is not in a state for this action, or the idempotency key collided."""


class BillingRejected(BillingError):
    """Another 4xx: a permanent refusal (bad request, auth)."""


class BillingUnavailable(BillingError):
    """Network failure, timeout, 5xx or 429 after retries: try again later."""


class _Transient(Exception):
    pass


@runtime_checkable
class BillingSystem(Protocol):
    """What the executor needs from a billing system.

    Contract: a repeated ``idempotency_key`` returns the first result without acting again; an
    action the invoice's state does not allow (e.g. retrying a paid invoice) is refused with
    ``BillingStateConflict`` (HTTP 409), a reused key with other parameters with
    ``BillingConflict``, an unknown invoice with ``BillingNotFound`` (``get_invoice`` -> None).
    """

    def get_invoice(self, invoice_id: str) -> dict[str, Any] | None:
        """The invoice row (with ``transactions``; ``customer`` / ``subscription`` when known), or None."""

    def retry_invoice(self, invoice_id: str, *, idempotency_key: str) -> dict[str, Any]: ...

    def request_payment_method_update(self, invoice_id: str, *, idempotency_key: str,
                                      card_update_url: str | None = None) -> dict[str, Any]: ...

    def pause_collection(self, invoice_id: str, *, idempotency_key: str) -> dict[str, Any]: ...

    def complete_dunning(self, invoice_id: str, *, idempotency_key: str) -> dict[str, Any]: ...

    def mark_paid(self, invoice_id: str, *, idempotency_key: str,
                  external_transaction_id: str | None = None) -> dict[str, Any]: ...

    def forward_card_update_link(self, invoice_id: str, card_update_url: str, *,
                                 idempotency_key: str) -> dict[str, Any]: ...


class BillingStateConflict(BillingConflict):
    """409 invoice_state_conflict: the invoice is no longer in a state for this action."""


_TRANSIENT_HTTP = (429, 500, 502, 503, 504)


class HttpBillingSystem:
    """``BillingSystem`` over the demo billing engine HTTP API, wrapping ``BillingEngineClient``.

    ``context_lookup`` (optional) adds cohort attributes the HTTP API does not return (customer
    country, plan): a callable ``invoice_dict -> dict`` merged into the invoice as ``customer`` /
    ``subscription`` (see ``billing_db_context_lookup``).
    """

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 10.0,
                 attempts: int = 3, transport: httpx.BaseTransport | None = None,
                 context_lookup: Any = None):
        from recovery_pipeline.billing_engine.client import BillingEngineClient

        self._client = BillingEngineClient(base_url, api_key or "", timeout=timeout, transport=transport)
        self._attempts = attempts
        self._context_lookup = context_lookup

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpBillingSystem:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, what: str, fn, *args, **kwargs) -> dict[str, Any]:
        from recovery_pipeline.billing_engine.client import BillingEngineError

        @retry(retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(self._attempts),
               wait=wait_exponential_jitter(initial=0.2, max=5), reraise=True)
        def _once():
            try:
                return fn(*args, **kwargs)
            except httpx.HTTPError as exc:
                raise _Transient(f"{what}: {type(exc).__name__}: {exc}") from exc
            except BillingEngineError as exc:
                if exc.status_code in _TRANSIENT_HTTP:
                    raise _Transient(f"{what}: {exc}") from exc
                raise

        try:
            return _once()
        except _Transient as exc:
            raise BillingUnavailable(str(exc)) from exc
        except BillingEngineError as exc:
            if exc.status_code == 404:
                raise BillingNotFound(f"{what}: {exc.message}") from exc
            if exc.code == "idempotency_key_reused":
                raise BillingConflict(f"{what}: {exc.message}") from exc
            if exc.status_code == 409:
                raise BillingStateConflict(f"{what}: {exc.message}") from exc
            raise BillingRejected(f"{what}: {exc}") from exc

    def get_invoice(self, invoice_id: str) -> dict[str, Any] | None:
        try:
            data = self._call(f"get invoice {invoice_id}", self._client.get_invoice, invoice_id)
        except BillingNotFound:
            return None
        inv = normalize_invoice(data)
        if self._context_lookup is not None:
            for k, v in (self._context_lookup(inv) or {}).items():
                inv.setdefault(k, v)
        return inv

    def retry_invoice(self, invoice_id: str, *, idempotency_key: str) -> dict[str, Any]:
        return self._call(f"retry {invoice_id}", self._client.retry, invoice_id, idempotency_key)

    def request_payment_method_update(self, invoice_id: str, *, idempotency_key: str,
                                      card_update_url: str | None = None) -> dict[str, Any]:
        return self._call(f"request payment-method update {invoice_id}",
                          self._client.request_payment_method_update, invoice_id, idempotency_key,
                          card_update_url=card_update_url)

    def pause_collection(self, invoice_id: str, *, idempotency_key: str) -> dict[str, Any]:
        return self._call(f"pause collection {invoice_id}", self._client.pause_collection, invoice_id,
                          idempotency_key)

    def complete_dunning(self, invoice_id: str, *, idempotency_key: str) -> dict[str, Any]:
        return self._call(f"complete dunning {invoice_id}", self._client.complete_dunning, invoice_id,
                          idempotency_key)

    def mark_paid(self, invoice_id: str, *, idempotency_key: str,
                  external_transaction_id: str | None = None) -> dict[str, Any]:
        return self._call(f"mark paid {invoice_id}", self._client.mark_paid, invoice_id,
                          (external_transaction_id or idempotency_key)[:64], idempotency_key)

    def forward_card_update_link(self, invoice_id: str, card_update_url: str, *,
                                 idempotency_key: str) -> dict[str, Any]:
        return self._call(f"forward card-update link {invoice_id}",
                          self._client.request_payment_method_update, invoice_id, idempotency_key,
                          card_update_url=card_update_url)


def billing_db_context_lookup(engine: Any):
    """Cohort attributes from the billing database (``billing_engine.schema`` tables)."""
    import sqlalchemy as sa

    from recovery_pipeline.billing_engine.schema import customers, subscriptions

    def lookup(invoice: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            return _lookup(invoice, out)
        except sa.exc.SQLAlchemyError:  # no such tables / unreachable: the cohort sees no attributes
            return out

    def _lookup(invoice: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        with engine.connect() as conn:
            if invoice.get("customer_id"):
                row = conn.execute(sa.select(customers.c.customer_id, customers.c.country)
                                   .where(customers.c.customer_id == invoice["customer_id"])).first()
                if row is not None:
                    out["customer"] = {"customer_id": row.customer_id, "country": row.country}
            if invoice.get("subscription_id"):
                row = conn.execute(sa.select(subscriptions.c.plan_id, subscriptions.c.business_entity)
                                   .where(subscriptions.c.subscription_id == invoice["subscription_id"])).first()
                if row is not None:
                    out["subscription"] = {"plan_id": row.plan_id, "business_entity": row.business_entity}
        return out

    return lookup


def normalize_invoice(data: dict[str, Any]) -> dict[str, Any]:
    """Accept ``{invoice: {...}, transactions: [...]}`` or a flat invoice row with ``transactions``."""
    if isinstance(data.get("invoice"), dict):
        inv = dict(data["invoice"])
        for extra in ("transactions", "customer", "subscription"):
            if extra in data and extra not in inv:
                inv[extra] = data[extra]
    else:
        inv = dict(data)
    inv.setdefault("transactions", [])
    return inv


def invoice_context(invoice: dict[str, Any]) -> dict[str, Any]:
    """The attributes a cohort rule looks at, from an invoice as returned by ``get_invoice``."""
    customer = invoice.get("customer") if isinstance(invoice.get("customer"), dict) else {}
    sub = invoice.get("subscription") if isinstance(invoice.get("subscription"), dict) else {}
    return {
        "customer_id": invoice.get("customer_id") or customer.get("customer_id"),
        "customer_country": invoice.get("customer_country") or customer.get("country"),
        "plan_id": invoice.get("plan_id") or sub.get("plan_id"),
        "currency": invoice.get("currency"),
        "business_entity": invoice.get("business_entity") or sub.get("business_entity"),
    }


def last_decline_code(invoice: dict[str, Any]) -> str | None:
    txs = [t for t in invoice.get("transactions") or [] if isinstance(t, dict)]
    if not txs:
        return None
    txs.sort(key=lambda t: (t.get("attempt_number") or 0, str(t.get("created_at") or "")))
    last = txs[-1]
    return last.get("decline_code") if last.get("status") == "failed" else None
