"""A small HTTP client for the demo billing engine (the billing-system adapter's transport).

Each action takes an ``idempotency_key``: pass a stable one (e.g. derived from the provider's
event id) so that a retried call never acts twice. Errors raise ``BillingEngineError`` with the
HTTP status and the server's message (404 unknown invoice, 409 wrong state, 422 bad request,
401 bad key).
"""

from __future__ import annotations

import uuid

import httpx


class BillingEngineError(Exception):
    def __init__(self, status_code: int, code: str, message: str):
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message


class BillingEngineClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                  headers={"X-API-Key": api_key}, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BillingEngineClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method: str, path: str, *, idempotency_key: str | None = None,
              json: dict | None = None) -> dict:
        headers = {}
        if method == "POST":
            headers["Idempotency-Key"] = idempotency_key or f"client-{uuid.uuid4().hex}"
        resp = self._http.request(method, path, headers=headers, json=json)
        if resp.status_code >= 400:
            try:
                err = resp.json().get("error", {})
            except ValueError:
                err = {}
            raise BillingEngineError(resp.status_code, err.get("code", "http_error"),
                                     err.get("message", resp.text[:200]))
        return resp.json()

    def healthz(self) -> dict:
        return self._send("GET", "/healthz")

    def get_invoice(self, invoice_id: str) -> dict:
        return self._send("GET", f"/invoices/{invoice_id}")

    def retry(self, invoice_id: str, idempotency_key: str | None = None) -> dict:
        return self._send("POST", f"/invoices/{invoice_id}/retry", idempotency_key=idempotency_key)

    def request_payment_method_update(self, invoice_id: str, idempotency_key: str | None = None,
                                      card_update_url: str | None = None) -> dict:
        body = {"card_update_url": card_update_url} if card_update_url else {}
        return self._send("POST", f"/invoices/{invoice_id}/request-payment-method-update",
                          idempotency_key=idempotency_key, json=body)

    def pause_collection(self, invoice_id: str, idempotency_key: str | None = None) -> dict:
        return self._send("POST", f"/invoices/{invoice_id}/pause-collection",
                          idempotency_key=idempotency_key)

    def complete_dunning(self, invoice_id: str, idempotency_key: str | None = None) -> dict:
        return self._send("POST", f"/invoices/{invoice_id}/complete-dunning",
                          idempotency_key=idempotency_key)

    def mark_paid(self, invoice_id: str, external_transaction_id: str,
                  idempotency_key: str | None = None) -> dict:
        return self._send("POST", f"/invoices/{invoice_id}/mark-paid", idempotency_key=idempotency_key,
                          json={"external_transaction_id": external_transaction_id})

    def hand_off(self, invoice_id: str, idempotency_key: str | None = None) -> dict:
        return self._send("POST", f"/invoices/{invoice_id}/hand-off", idempotency_key=idempotency_key)
