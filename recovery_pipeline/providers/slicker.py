"""Slicker custom billing integration: ``/v1/subscriptions|invoices|transactions`` (Bearer)."""

from __future__ import annotations

from typing import Any

from recovery_pipeline.providers.base import ProviderAdapter, drop_none, iso_utc, minor

INVOICE_STATE = {"paid": "INVOICE_STATE_PAID", "refunded": "INVOICE_STATE_PAID"}
TRANSACTION_STATE = {"succeeded": "TRANSACTION_STATE_PAID", "refunded": "TRANSACTION_STATE_PAID",
                     "failed": "TRANSACTION_STATE_FAILED"}


class SlickerAdapter(ProviderAdapter):
    name = "slicker"
    default_batch_limit = 100
    default_requests_per_second = 5.0
    handoff_mode = "push"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def ingest_path(self, entity: str) -> str | None:
        return f"/v1/{entity}"

    def to_wire(self, entity: str, row: dict[str, Any]) -> dict[str, Any]:
        if entity == "subscriptions":
            return drop_none({
                "id": row["subscription_id"], "customerId": row["customer_id"],
                "state": f"SUBSCRIPTION_STATE_{str(row['status']).upper()}",
                "planId": row.get("plan_id"), "amount": minor(row["amount_minor"]),
                "currency": row.get("currency"), "activatedAt": iso_utc(row.get("activated_at")),
                "canceledAt": iso_utc(row.get("canceled_at")),
                "expiresAt": iso_utc(row.get("expires_at")),
                "billingPeriod": row.get("billing_period"),
                "billingPeriodUnit": row.get("billing_period_unit"),
                "businessEntity": row.get("business_entity"),
                "customerCountry": row.get("customer_country"),
                "createdAt": iso_utc(row["created_at"]), "updatedAt": iso_utc(row.get("updated_at")),
            })
        if entity == "invoices":
            return drop_none({
                "id": row["invoice_id"],
                "state": INVOICE_STATE.get(row["status"], "INVOICE_STATE_UNPAID"),
                "customerId": row["customer_id"], "subscriptionId": row.get("subscription_id"),
                "businessEntity": row.get("business_entity"), "amount": minor(row["amount_minor"]),
                "currency": row.get("currency"), "createdAt": iso_utc(row["created_at"]),
                "updatedAt": iso_utc(row.get("updated_at")),
                # extensions (the sandbox uses them for reconciliation counts)
                "customerCountry": row.get("customer_country"), "billingStatus": row["status"],
            })
        if entity == "transactions":
            return drop_none({
                "id": row["transaction_id"],
                "paymentGatewayTransactionId": row["gateway_transaction_id"],
                "state": TRANSACTION_STATE.get(row["status"], "TRANSACTION_STATE_FAILED"),
                "customerId": row["customer_id"], "subscriptionId": row.get("subscription_id"),
                "invoiceId": row["invoice_id"], "amount": minor(row["amount_minor"]),
                "currency": row.get("currency"), "createdAt": iso_utc(row["created_at"]),
                "updatedAt": iso_utc(row.get("updated_at")),
                "paymentMethodType": row.get("payment_method_type"),
                "paymentGatewayId": row.get("gateway"), "paymentGatewayName": row.get("gateway"),
                "paymentGatewayType": row.get("gateway"),
                "paymentGatewayStatus": row.get("gateway_status"),
                "paymentGatewayErrorCode": row.get("decline_code"),
                "paymentGatewayErrorMessage": row.get("decline_message"),
                "cardBrand": row.get("card_brand"), "cardBin": row.get("card_bin"),
                "cardFingerprint": row.get("card_fingerprint"),
                "cardCountry": row.get("card_country"),
                "customerCountry": row.get("customer_country"),
                "attemptNumber": row.get("attempt_number"),
            })
        raise ValueError(f"unknown entity {entity}")
