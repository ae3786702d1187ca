"""The sandbox's OpenAPI document (hand-written; kept next to the routes it describes)."""

from __future__ import annotations

from typing import Any


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


S, I, B, T = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {
    "type": "string", "format": "date-time"}
ERROR = _obj({"requestId": S, "error": S, "fieldErrors": {"type": "array", "items": _obj({
    "index": I, "id": S, "field": S, "message": S})}})
CARD_ONLY = "card data is tokens/bin/fingerprint only: values that look like card numbers are refused"

SUBSCRIPTION = _obj({
    "id": S, "customerId": S, "state": S, "planId": S, "amount": I, "currency": S,
    "activatedAt": T, "canceledAt": T, "expiresAt": T, "billingPeriod": I, "billingPeriodUnit": S,
    "createdAt": T, "updatedAt": T, "customerCountry": S, "businessEntity": S,
}, ["id", "customerId", "state", "amount", "currency", "createdAt"])
INVOICE = _obj({
    "id": S, "state": {"type": "string", "enum": ["INVOICE_STATE_PAID", "INVOICE_STATE_UNPAID"]},
    "customerId": S, "subscriptionId": S, "businessEntity": S, "amount": I, "currency": S,
    "createdAt": T, "updatedAt": T,
    "customerCountry": {**S, "description": "extension: the customer's country (ISO-3166)"},
    "billingStatus": {**S, "description": "extension: open|paid|uncollectible|void|refunded"},
}, ["id", "state", "customerId", "amount", "currency", "createdAt"])
TRANSACTION = _obj({
    "id": S, "paymentGatewayTransactionId": S,
    "state": {"type": "string", "enum": ["TRANSACTION_STATE_PAID", "TRANSACTION_STATE_FAILED"]},
    "customerId": S, "subscriptionId": S, "invoiceId": S, "amount": I, "currency": S,
    "createdAt": T, "updatedAt": T, "paymentMethodType": S, "paymentGatewayId": S,
    "paymentGatewayName": S, "paymentGatewayType": S, "paymentGatewayStatus": S,
    "paymentGatewayErrorCode": S, "paymentGatewayErrorMessage": S, "cardBrand": S,
    "cardBin": {**S, "pattern": "^[0-9]{6,8}$"}, "cardFingerprint": S, "cardCountry": S,
    "customerCountry": S, "attemptNumber": I,
}, ["id", "paymentGatewayTransactionId", "state", "customerId", "invoiceId", "amount", "currency",
    "createdAt"])
ACTION = _obj({"requestId": S, "invoiceId": S, "subscriptionId": S, "transactionId": S,
               "actionSuggestion": {"type": "string", "enum": [
                   "ACTION_SUGGESTION_RETRY", "ACTION_SUGGESTION_CARD_CHANGE",
                   "ACTION_SUGGESTION_UNSPECIFIED"]},
               "idealRetryTime": T, "createdAt": T,
               "type": {"type": "string", "enum": ["recovery_action", "pause_collection",
                                                   "complete_dunning"],
                        "description": "extension: the webhook type this action was sent as"}})
EXECUTE = _obj({"paymentMethodToken": S, "amount": I, "currency": S, "originalDeclineCode": S,
                "idempotencyKey": {"type": "string", "maxLength": 128}, "customerPresent": B,
                "isTrialConversion": B, "binPrefix": S,
                "fallbackPaymentMethodTokens": {"type": "array", "items": S}, "email": S,
                "metadata": _obj({"invoiceId": S, "transactionId": S, "customerId": S})},
               ["paymentMethodToken", "amount", "currency", "originalDeclineCode", "idempotencyKey"])


def _resp(desc: str, schema: dict | None = None, headers: dict | None = None) -> dict:
    r: dict[str, Any] = {"description": desc, "content": {"application/json": {"schema": schema or ERROR}}}
    if headers:
        r["headers"] = headers
    return r


RETRY_AFTER = {"Retry-After": {"schema": I, "description": "seconds to wait"}}


def _ingest(entity: str, item: dict) -> dict:
    return {"post": {
        "summary": f"Slicker: upsert a batch of {entity} (by id; a repeat never counts twice)",
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "description": CARD_ONLY, "content": {"application/json": {
            "schema": {"oneOf": [_obj({entity: {"type": "array", "items": item}}, [entity]),
                                 {"type": "array", "items": item}]}}}},
        "responses": {
            "200": _resp("accepted", _obj({"requestId": S, "accepted": I, "inserted": I,
                                           "updated": I, "duplicates": I})),
            "400": _resp("validation failed or more items than the batch limit"),
            "401": _resp("missing or invalid bearer token"),
            "429": _resp("over the requests-per-second limit", headers=RETRY_AFTER),
        }}}


def openapi_document() -> dict[str, Any]:
    counts_month = _obj({
        "subscriptions": I, "invoices": I, "transactions": I, "failed_transactions": I,
        "invoices_by_currency": {"type": "object", "additionalProperties": I},
        "invoices_by_country": {"type": "object", "additionalProperties": I},
        "transactions_by_currency": {"type": "object", "additionalProperties": I},
        "transactions_by_country": {"type": "object", "additionalProperties": I},
        "failed_transactions_by_currency": {"type": "object", "additionalProperties": I},
        "failed_transactions_by_country": {"type": "object", "additionalProperties": I},
        "outcomes": _obj({k: I for k in ("first_attempt_success", "paid_after_failure",
                                         "unrecovered", "refunded", "voided", "open")}),
    })
    return {
        "openapi": "3.1.0",
        "info": {"title": "recovery_pipeline provider sandbox", "version": "1.0.0",
                 "description": "Slicker, Revtain and Butter wire contracts (PROVIDERS.md) plus "
                                "test hooks under /sandbox/*."},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"}}},
        "paths": {
            "/v1/subscriptions": _ingest("subscriptions", SUBSCRIPTION),
            "/v1/invoices": _ingest("invoices", INVOICE),
            "/v1/transactions": _ingest("transactions", TRANSACTION),
            "/v1/recovery_actions": {"get": {
                "summary": "Slicker: list recovery actions", "security": [{"bearer": []}],
                "parameters": [{"name": n, "in": "query", "schema": s} for n, s in (
                    ("pageSize", {"type": "integer", "default": 20, "minimum": 1, "maximum": 100}),
                    ("pageToken", S), ("invoiceId", S), ("subscriptionId", S),
                    ("transactionId", S),
                    ("orderBy", {"type": "string", "enum": [
                        "RECOVERY_ACTION_ORDER_BY_IDEAL_RETRY_TIME",
                        "RECOVERY_ACTION_ORDER_BY_CREATED_AT"]}),
                    ("orderDirection", {"type": "string", "enum": ["ASC", "DESC"]}))],
                "responses": {"200": _resp("a page", _obj({
                    "recoveryActions": {"type": "array", "items": ACTION},
                    "nextPageToken": S, "totalSize": I, "requestId": S})),
                    "400": _resp("invalid pageSize or pageToken"),
                    "401": _resp("unauthorized")}}},
            "/api/recovery/execute": {"post": {
                "summary": "Revtain: execute recovery of a failed charge",
                "security": [{"apiKey": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": EXECUTE}}},
                "responses": {
                    "200": _resp("executed", _obj({"requestId": S, "transactionId": S,
                                                   "success": B, "status": S,
                                                   "recommendedAction": S, "cardUpdateUrl": S})),
                    "202": _resp("queued", _obj({"requestId": S, "transactionId": S, "status": S,
                                                 "scheduledFor": T})),
                    "400": _resp("validation failed"),
                    "401": _resp("missing or invalid X-API-KEY"),
                    "403": _resp("blocked decline code (fraudulent, lost_card, stolen_card,"
                                 " pickup_card, authentication_required): never retry"),
                    "409": _resp("duplicate: same idempotencyKey, or same card+amount within 5"
                                 " minutes", _obj({"requestId": S, "error": S,
                                                  "existingTransactionId": S, "reason": S})),
                    "429": _resp("over the per-minute limit", headers=RETRY_AFTER)}}},
            "/api/recovery/pulse": {"post": {
                "summary": "Revtain: report a successful organic charge",
                "security": [{"apiKey": []}],
                "responses": {"200": _resp("received", _obj({"requestId": S, "received": I})),
                              "400": _resp("validation failed"),
                              "401": _resp("missing or invalid X-API-KEY")}}},
            "/api/recovery/status": {"get": {
                "summary": "Revtain: outcome of an execution", "security": [{"apiKey": []}],
                "parameters": [{"name": "idempotencyKey", "in": "query", "required": True,
                                "schema": S}],
                "responses": {"200": _resp("status", _obj({
                    "idempotencyKey": S, "transactionId": S, "status": S, "success": B,
                    "cardUpdateUrl": S})), "400": _resp("missing idempotencyKey"),
                    "401": _resp("missing or invalid X-API-KEY"), "404": _resp("unknown key")}}},
            "/recover/payments": {"post": {
                "summary": "Butter: send payments (one object, or {payments: [...]})",
                "security": [{"apiKey": []}],
                "responses": {"200": _resp("accepted"), "400": _resp("validation failed"),
                              "401": _resp("missing or invalid x-api-key"),
                              "429": _resp("rate limited", headers=RETRY_AFTER)}}},
            "/payment_method_updates": {"post": {
                "summary": "Butter: payment method updates", "security": [{"apiKey": []}],
                "responses": {"200": _resp("received"), "400": _resp("validation failed"),
                              "401": _resp("missing or invalid x-api-key")}}},
            "/sandbox/counts": {"get": {"summary": "what the sandbox holds, per month",
                                        "responses": {"200": _resp("counts", _obj({
                                            "months": {"type": "object",
                                                       "additionalProperties": counts_month},
                                            "totals": _obj({"subscriptions": I, "invoices": I,
                                                            "transactions": I,
                                                            "failed_transactions": I})}))}}},
            "/sandbox/stats": {"get": {"summary": "requests seen, 429s sent, duplicates, records",
                                       "responses": {"200": _resp("stats", {"type": "object"})}}},
            "/sandbox/faults": {"post": {"summary": "inject faults", "requestBody": {"content": {
                "application/json": {"schema": _obj({
                    "fraction_5xx": {"type": "number"}, "fraction_timeouts": {"type": "number"},
                    "fraction_drop": {"type": "number"}, "burst_429": I, "retry_after": I,
                    "timeout_seconds": {"type": "number"}, "seed": I,
                    "webhook_duplicate_fraction": {"type": "number"}, "webhook_shuffle": B})}}},
                "responses": {"200": _resp("the fault settings", {"type": "object"})}}},
            "/sandbox/config": {"post": {"summary": "change webhook_url, limits, time_scale",
                                         "responses": {"200": _resp("config", {"type": "object"})}}},
            "/sandbox/records/{entity}/{record_id}/delete": {"post": {
                "summary": "delete a held record (tests make a mismatch)",
                "parameters": [{"name": "entity", "in": "path", "required": True, "schema": S},
                               {"name": "record_id", "in": "path", "required": True, "schema": S}],
                "responses": {"200": _resp("deleted?", _obj({"deleted": B})),
                              "404": _resp("unknown entity")}}},
            "/sandbox/deliver": {"post": {
                "summary": "deliver every pending webhook now ({settle: true} also settles queued"
                           " Revtain executions)",
                "responses": {"200": _resp("delivery pass", _obj({
                    "attempted": I, "delivered": I, "failed": I, "gave_up": I}))}}},
            "/sandbox/events": {"post": {"summary": "queue an arbitrary provider event",
                                         "responses": {"200": _resp("queued", _obj({"id": S})),
                                                       "400": _resp("not a JSON object / bad event")}}},
            "/sandbox/outbox": {"get": {"summary": "webhook outbox",
                                        "responses": {"200": _resp("rows", {"type": "array"})}}},
            "/healthz": {"get": {"responses": {"200": _resp("ok", _obj({"ok": B}))}}},
        },
    }
