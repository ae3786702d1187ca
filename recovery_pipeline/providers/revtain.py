"""Revtain Recovery API: failures are executed one by one (``/api/recovery/execute``, idempotency
key = the invoice id); successful organic charges go to ``/api/recovery/pulse`` (one per request).
Subscriptions and invoices are not sent."""

from __future__ import annotations

from typing import Any

from recovery_pipeline.providers.base import ProviderAdapter, drop_none, iso_utc, minor


class RevtainAdapter(ProviderAdapter):
    name = "revtain"
    default_batch_limit = 1
    default_requests_per_second = 1.0  # 60 per minute per key
    handoff_mode = "execute"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"X-API-KEY": api_key}

    def ingest_path(self, entity: str) -> str | None:
        return "/api/recovery/pulse" if entity == "transactions" else None

    def include(self, entity: str, row: dict[str, Any]) -> bool:
        return entity == "transactions" and row.get("status") == "succeeded"

    def to_wire(self, entity: str, row: dict[str, Any]) -> dict[str, Any]:
        return drop_none({
            "transactionId": row["transaction_id"], "invoiceId": row["invoice_id"],
            "customerId": row["customer_id"], "subscriptionId": row.get("subscription_id"),
            "amount": minor(row["amount_minor"]), "currency": row.get("currency"),
            "paymentMethodToken": row.get("payment_method_token"),
            "binPrefix": row.get("card_bin"), "customerCountry": row.get("customer_country"),
            "createdAt": iso_utc(row["created_at"]),
        })

    def wire_record_id(self, entity: str, item: dict[str, Any]) -> str:
        return str(item["transactionId"])

    def batch_body(self, entity: str, items: list[dict[str, Any]]) -> Any:
        return items[0] if len(items) == 1 else {"pulses": items}

    def batch_items(self, entity: str, body: Any) -> list[dict[str, Any]]:
        return body["pulses"] if isinstance(body, dict) and "pulses" in body else [body]

    def execute_path(self) -> str | None:
        return "/api/recovery/execute"

    def execute_body(self, txn: dict[str, Any]) -> dict[str, Any]:
        return drop_none({
            "paymentMethodToken": txn.get("payment_method_token") or f"fp_{txn.get('card_fingerprint')}",
            "amount": minor(txn["amount_minor"]), "currency": txn.get("currency"),
            "originalDeclineCode": txn.get("decline_code") or "generic_decline",
            "idempotencyKey": str(txn["invoice_id"])[:128],  # stable across retries and re-runs
            "customerPresent": False, "isTrialConversion": False,
            "binPrefix": txn.get("card_bin"),
            "metadata": {"invoiceId": txn["invoice_id"], "transactionId": txn["transaction_id"],
                         "customerId": txn.get("customer_id")},
        })
