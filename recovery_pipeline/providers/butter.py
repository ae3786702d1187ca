"""Butter Recover enterprise API: ``POST /recover/payments`` (x-api-key), one payment object per
transaction carrying its customer, subscription and invoice; batches as ``{"payments": [...]}``.
Subscriptions and invoices travel inside the payments, so only transactions are pushed."""

from __future__ import annotations

from typing import Any

from recovery_pipeline.providers.base import ProviderAdapter, drop_none, iso_utc, minor


class ButterAdapter(ProviderAdapter):
    name = "butter"
    default_batch_limit = 100
    default_requests_per_second = 5.0
    handoff_mode = "push"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def ingest_path(self, entity: str) -> str | None:
        return "/recover/payments" if entity == "transactions" else None

    def to_wire(self, entity: str, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "customer": drop_none({"id": row["customer_id"], "country": row.get("customer_country")}),
            "subscription": drop_none({"id": row.get("subscription_id"),
                                       "start_date": iso_utc(row.get("subscription_start"))}),
            "invoice": drop_none({"id": row["invoice_id"],
                                  "created_at": iso_utc(row.get("invoice_created_at")
                                                        or row["created_at"])}),
            "transactions": [drop_none({
                "id": row["transaction_id"], "psp_transaction_id": row["gateway_transaction_id"],
                "psp": row.get("gateway"), "acquirer_country": row.get("card_country"),
                "amount": minor(row["amount_minor"]), "currency": row.get("currency"),
                "funding_source": row.get("payment_method_type"),
                "payment_method_id": row.get("payment_method_token"),
                "psp_transaction_created_at": iso_utc(row["created_at"]),
                "outcome": drop_none({
                    "status": "succeeded" if row.get("status") == "succeeded" else "failed",
                    "decline_code": row.get("decline_code"),
                    "raw_response_message": row.get("decline_message") or row.get("gateway_status"),
                }),
            })],
        }

    def wire_record_id(self, entity: str, item: dict[str, Any]) -> str:
        return str(item["transactions"][0]["id"])

    def batch_body(self, entity: str, items: list[dict[str, Any]]) -> Any:
        return {"payments": items}

    def batch_items(self, entity: str, body: Any) -> list[dict[str, Any]]:
        return body["payments"]
