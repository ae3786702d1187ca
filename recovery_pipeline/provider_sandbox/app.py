"""The provider sandbox ASGI app (Starlette).

Speaks Slicker (``/v1/*``), Revtain (``/api/recovery/*``) and Butter (``/recover/payments``,
``/payment_method_updates``) per PROVIDERS.md, plus test hooks under ``/sandbox/*``:
counts for reconciliation, stats, fault injection, record deletion, webhook delivery on demand.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recovery_pipeline.provider_sandbox import delivery
from recovery_pipeline.provider_sandbox.openapi import openapi_document
from recovery_pipeline.provider_sandbox.recommend import (
    CUSTOMER_FIXABLE,
    REVTAIN_BLOCKED,
    WAIT_FOR_FUNDS,
    Recommendation,
    recommend,
)
from recovery_pipeline.provider_sandbox.store import SandboxStore, payload_hash
from recovery_pipeline.providers.base import canonical_json, may_hold_card_number

ENTITIES = ("subscriptions", "invoices", "transactions")
TRANSACTION_STATES = {"TRANSACTION_STATE_PAID": "paid", "TRANSACTION_STATE_FAILED": "failed"}
INVOICE_STATES = {"INVOICE_STATE_PAID": "paid", "INVOICE_STATE_UNPAID": "unpaid"}
REQUIRED = {
    "subscriptions": ("id", "customerId", "state", "amount", "currency", "createdAt"),
    "invoices": ("id", "state", "customerId", "amount", "currency", "createdAt"),
    "transactions": ("id", "paymentGatewayTransactionId", "state", "customerId", "invoiceId",
                     "amount", "currency", "createdAt"),
}


@dataclass
class SandboxConfig:
    api_key: str | None = None  # None: settings.secret("PROVIDER_API_KEY")
    batch_limit: int = 100  # Slicker/Butter items per request
    requests_per_second: float = 5.0  # Slicker/Butter, per API key
    revtain_per_minute: int = 60  # Revtain execute, per API key
    webhook_url: str | None = None  # receiver base URL (or a URL with "{provider}")
    db_path: str | None = None  # SQLite file; None = memory
    time_scale: float = 1.0  # multiplies webhook retry schedules
    pause_after: int = 3  # failed attempts before pause_collection
    dunning_after: int = 5  # failed attempts before complete_dunning
    timeout_seconds: float = 5.0  # how long an injected timeout sleeps
    deliver_in_background: bool = True
    webhook_secrets: dict[str, str | None] = field(default_factory=dict)  # provider -> secret/token


class _Dropped(Exception):
    """Raised after the response started: uvicorn closes the connection without a full response."""


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _Dropped) and "_Dropped" not in str(record.getMessage())


class RateWindow:
    """GCRA: ``rate`` per ``period`` seconds with a burst of ``burst``; thread-safe."""

    def __init__(self, rate: float, period: float = 1.0, burst: float | None = None):
        self.interval = period / rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tat = 0.0
        self.lock = threading.Lock()

    def take(self, now: float | None = None) -> float:
        """0.0 when allowed (and counted), else seconds until a request would be allowed."""
        now = time.monotonic() if now is None else now
        with self.lock:
            tat = max(self.tat, now)
            allowance = (self.burst - 1) * self.interval
            if tat - now > allowance:
                return tat - now - allowance
            self.tat = tat + self.interval
            return 0.0


@dataclass
class Faults:
    fraction_5xx: float = 0.0
    fraction_timeouts: float = 0.0
    fraction_drop: float = 0.0
    burst_429: int = 0
    retry_after: int = 0  # Retry-After seconds on injected 429s
    webhook_duplicate_fraction: float = 0.0  # delivered webhooks sent a second time
    webhook_shuffle: bool = False  # each delivery pass goes out of order
    timeout_seconds: float | None = None
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)  # 3.11+: takes a trailing Z
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _hid(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _norm_ts(value: str, parsed: datetime) -> str:
    """``_iso(parsed)``, without the round trip when ``value`` is already ``YYYY-MM-DDTHH:MM:SSZ``."""
    if (len(value) == 20 and value[19] == "Z" and value[10] == "T" and value[4] == "-"
            and value[7] == "-" and value[13] == ":" and value[16] == ":"):
        return value
    return _iso(parsed)


def card_number_fields(item: Any) -> list[str]:
    """Paths of values that look like full card numbers (12-19 digits passing Luhn)."""
    from recovery_pipeline.providers.base import find_card_numbers

    return find_card_numbers(item)


def _err(status: int, message: str, request_id: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"requestId": request_id, "error": message, **extra}, status_code=status,
                        headers={"X-Request-Id": request_id})


_CURRENCY = re.compile(r"[A-Z]{3}")
_BIN = re.compile(r"\d{6,8}")


_TS_FIELDS = ("createdAt", "updatedAt", "activatedAt", "canceledAt", "expiresAt")
_STATES = {"transactions": TRANSACTION_STATES, "invoices": INVOICE_STATES}


def validate_slicker(entity: str, item: Any, index: int, raw: bytes | None = None) -> list[dict[str, Any]]:
    """Field errors of one item; ``raw`` (its canonical JSON, when the caller has it) lets the card
    number check skip items that cannot hold one."""
    if not isinstance(item, dict):
        return [{"index": index, "id": None, "field": "", "message": "item must be an object"}]
    get = item.get
    bad: list[tuple[str, str]] = [(f, "required") for f in REQUIRED[entity] if get(f) in (None, "")]
    states = _STATES.get(entity)
    if states is not None:
        state = get("state")
        if state is not None and state not in states:
            bad.append(("state", f"must be one of {sorted(states)}"))
    amount = get("amount")
    if amount is not None and (not isinstance(amount, int) or isinstance(amount, bool) or amount < 0):
        bad.append(("amount", "must be a non-negative integer in minor units"))
    cur = get("currency")
    if cur is not None and not (isinstance(cur, str) and _CURRENCY.fullmatch(cur)):
        bad.append(("currency", "must be an ISO-4217 code (3 upper-case letters)"))
    for f in _TS_FIELDS:
        v = get(f)
        if v is not None and _parse_ts(v) is None:
            bad.append((f, "must be an ISO-8601 timestamp"))
    bin_ = get("cardBin")
    if bin_ is not None and not (isinstance(bin_, str) and _BIN.fullmatch(bin_)):
        bad.append(("cardBin", "must be the first 6-8 digits only"))
    if raw is None or may_hold_card_number(raw):
        bad += [(p, "looks like a card number: refused") for p in card_number_fields(item)]
    if not bad:
        return []
    rid = get("id")
    return [{"index": index, "id": rid, "field": f, "message": m} for f, m in bad]


def create_app(config: SandboxConfig | None = None) -> Starlette:
    from recovery_pipeline.settings import secret

    cfg = config or SandboxConfig()
    api_key = cfg.api_key or secret("PROVIDER_API_KEY")
    secrets = {
        "slicker": cfg.webhook_secrets.get("slicker") or secret("SLICKER_WEBHOOK_TOKEN"),
        "revtain": cfg.webhook_secrets.get("revtain") or secret("REVTAIN_WEBHOOK_SECRET"),
        "butter": cfg.webhook_secrets.get("butter") or secret("BUTTER_WEBHOOK_SECRET"),
    }
    store = SandboxStore(cfg.db_path)
    faults = Faults()
    per_second: dict[str, RateWindow] = {}
    per_minute: dict[str, RateWindow] = {}
    logging.getLogger("uvicorn.error").addFilter(_DropFilter())

    def rid() -> str:
        return "req_" + uuid.uuid4().hex[:24]

    def authorized(request: Request, scheme: str) -> bool:
        if scheme == "bearer":
            return request.headers.get("authorization", "") == f"Bearer {api_key}"
        return request.headers.get("x-api-key", "") == api_key

    def limited(windows: dict[str, RateWindow], key: str, rate: float, period: float) -> float:
        win = windows.get(key)
        if win is None:
            win = windows.setdefault(key, RateWindow(rate, period))
        return win.take()

    def too_many(wait: float, request_id: str) -> JSONResponse:
        store.bump("429s_sent")
        retry_after = max(1, int(wait + 0.999))
        resp = _err(429, "rate limit exceeded", request_id, retryAfterSeconds=round(wait, 3))
        resp.headers["Retry-After"] = str(retry_after)
        return resp

    async def read_json(request: Request) -> Any:
        raw = await request.body()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # what orjson refuses (NaN, huge ints) the json module may still take
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def webhook_faults() -> dict[str, Any]:
        return {"rng": faults.rng, "duplicate_fraction": faults.webhook_duplicate_fraction,
                "shuffle": faults.webhook_shuffle}

    # --- recommendations and webhook events ------------------------------------------------------
    def enqueue(provider: str, event_id: str, type_: str, body: dict[str, Any]) -> None:
        store.enqueue_webhook(provider, event_id, type_, json.dumps(body, separators=(",", ":")))

    def slicker_action(rec: Recommendation, txn: dict[str, Any], created: datetime) -> None:
        request_id = _hid("ra_", txn["id"])
        item = {
            "requestId": request_id, "invoiceId": txn.get("invoiceId"),
            "subscriptionId": txn.get("subscriptionId"), "transactionId": txn["id"],
            "actionSuggestion": rec.action_suggestion,
            "idealRetryTime": _iso(rec.ideal_retry_time) if rec.ideal_retry_time else None,
            "createdAt": _iso(created), "type": rec.slicker_type,
        }
        inserted = store.execute(
            "insert or ignore into actions (request_id, provider, invoice_id, subscription_id,"
            " transaction_id, kind, action_suggestion, type, ideal_retry_time, created_at, body)"
            " values (?, 'slicker', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (request_id, item["invoiceId"], item["subscriptionId"], txn["id"], rec.kind,
             rec.action_suggestion, rec.slicker_type, item["idealRetryTime"], item["createdAt"],
             json.dumps(item)))
        if inserted:
            data = {k: item[k] for k in ("invoiceId", "subscriptionId", "transactionId",
                                         "actionSuggestion", "idealRetryTime", "requestId")}
            event_id = _hid("evt_", "slicker", request_id)
            enqueue("slicker", event_id, rec.slicker_type,
                    {"id": event_id, "type": rec.slicker_type, "created": int(created.timestamp()),
                     "data": data})

    def recommend_for(provider: str, txn_id: str, invoice_id: str | None, decline_code: str | None,
                      created: datetime) -> Recommendation | None:
        """The recommendation after a failed transaction, or None when the invoice is settled."""
        if not invoice_id:
            return None
        inv = store.record("invoices", invoice_id)
        if inv is not None and (inv["state"] == "paid" or inv["billing_status"] in (
                "paid", "void", "refunded", "uncollectible")):
            return None
        failed, paid = store.invoice_failures(invoice_id, _iso(created))
        if paid:
            return None
        return recommend(decline_code, max(1, failed), created, pause_after=cfg.pause_after,
                         dunning_after=cfg.dunning_after)

    # --- Slicker -------------------------------------------------------------------------------------
    async def slicker_ingest(request: Request) -> Response:
        entity = request.path_params["entity"]
        request_id = rid()
        if entity not in ENTITIES:
            return _err(404, f"unknown collection {entity}", request_id)
        if not authorized(request, "bearer"):
            return _err(401, "missing or invalid bearer token", request_id)
        wait = limited(per_second, api_key, cfg.requests_per_second, 1.0)
        if wait:
            return too_many(wait, request_id)
        body = await read_json(request)
        items = body.get(entity, body.get("items")) if isinstance(body, dict) else body
        if not isinstance(items, list):
            return _err(400, f"body must be {{\"{entity}\": [...]}} or a JSON array", request_id)
        with store.lock:
            store.stats["max_items"] = max(store.stats["max_items"], len(items))
        if len(items) > cfg.batch_limit:
            store.bump("batches_over_limit")
            return _err(400, f"too many items: {len(items)} > {cfg.batch_limit}", request_id,
                        limit=cfg.batch_limit)
        raws = [canonical_json(it) if isinstance(it, dict) else b"" for it in items]
        errors = [e for i, (it, raw) in enumerate(zip(items, raws, strict=True))
                  for e in validate_slicker(entity, it, i, raw)]
        if errors:
            store.bump("validation_errors")
            return _err(400, "validation failed", request_id, fieldErrors=errors[:100])
        rows = []
        for it, raw in zip(items, raws, strict=True):
            get = it.get
            created_text = it["createdAt"]
            created = _parse_ts(created_text)
            created_at = _norm_ts(created_text, created)
            state = get("state")
            rows.append({
                "id": str(it["id"]),
                # the month of the timestamp as sent (a Z timestamp: its first 7 characters)
                "month": created_text[:7] if created_at is created_text else created.strftime("%Y-%m"),
                "created_at": created_at, "currency": get("currency"),
                "country": get("customerCountry") or get("cardCountry"),
                "state": TRANSACTION_STATES.get(state) or INVOICE_STATES.get(state) or state,
                "billing_status": get("billingStatus"), "invoice_id": get("invoiceId"),
                "subscription_id": get("subscriptionId"),
                "decline_code": get("paymentGatewayErrorCode"), "amount": get("amount"),
                "hash": hashlib.sha256(raw).hexdigest(), "body": raw.decode(),
            })
        result = store.upsert_records(entity, rows)
        store.bump("requests_accepted")
        store.bump(f"batches:{entity}")
        if entity == "transactions":
            for it, row in zip(items, rows, strict=True):
                if row["state"] == "failed":
                    created = _parse_ts(it["createdAt"])
                    rec = recommend_for("slicker", row["id"], row["invoice_id"], row["decline_code"],
                                        created)
                    if rec is not None:
                        slicker_action(rec, it, created)
        return JSONResponse({"requestId": request_id, "accepted": len(items), **result},
                            headers={"X-Request-Id": request_id})

    async def slicker_actions(request: Request) -> Response:
        request_id = rid()
        if not authorized(request, "bearer"):
            return _err(401, "missing or invalid bearer token", request_id)
        q = request.query_params
        try:
            page_size = int(q.get("pageSize") or 20)
            offset = int(base64.urlsafe_b64decode(q["pageToken"].encode()).decode()) if q.get(
                "pageToken") else 0
        except ValueError:
            return _err(400, "invalid pageSize or pageToken", request_id)
        if page_size < 1:
            return _err(400, "pageSize must be >= 1", request_id)
        page_size = min(page_size, 100)
        where, params = ["provider = 'slicker'"], []
        for name, col in (("invoiceId", "invoice_id"), ("subscriptionId", "subscription_id"),
                          ("transactionId", "transaction_id")):
            if q.get(name):
                where.append(f"{col} = ?")
                params.append(q[name])
        order = {"RECOVERY_ACTION_ORDER_BY_IDEAL_RETRY_TIME": "ideal_retry_time",
                 "RECOVERY_ACTION_ORDER_BY_CREATED_AT": "created_at"}.get(
            q.get("orderBy") or "RECOVERY_ACTION_ORDER_BY_CREATED_AT")
        if order is None:
            return _err(400, "orderBy must be RECOVERY_ACTION_ORDER_BY_IDEAL_RETRY_TIME or"
                             " RECOVERY_ACTION_ORDER_BY_CREATED_AT", request_id)
        direction = (q.get("orderDirection") or "ASC").upper()
        direction = "DESC" if direction in ("DESC", "ORDER_DIRECTION_DESC", "DESCENDING") else "ASC"
        w = " and ".join(where)
        total = store.query(f"select count(*) from actions where {w}", tuple(params))[0][0]
        rows = store.query(
            f"select body from actions where {w} order by {order} {direction}, request_id {direction}"
            " limit ? offset ?", (*params, page_size, offset))
        nxt = offset + len(rows)
        token = base64.urlsafe_b64encode(str(nxt).encode()).decode() if nxt < total else ""
        return JSONResponse({"recoveryActions": [json.loads(r[0]) for r in rows],
                             "nextPageToken": token, "totalSize": total, "requestId": request_id},
                            headers={"X-Request-Id": request_id})

    # --- Revtain -------------------------------------------------------------------------------------
    def revtain_event(type_: str, key: str, data: dict[str, Any]) -> None:
        event_id = _hid("evt_", "revtain", type_, key)
        enqueue("revtain", event_id, type_, {"id": event_id, "type": type_,
                                             "created": int(time.time()), "data": data})

    def settle(key: str, code: str | None) -> tuple[bool, str]:
        """Deterministic outcome of a recovery: (success, recommendedAction)."""
        code = (code or "generic_decline").lower()
        if code in CUSTOMER_FIXABLE:
            return False, "request_card_update"
        digest = int(hashlib.sha256(key.encode()).hexdigest(), 16)
        return digest % 3 != 0, "wait"

    async def revtain_execute(request: Request) -> Response:
        request_id = rid()
        if not request.headers.get("x-api-key") or not authorized(request, "x-api-key"):
            return _err(401, "missing or invalid X-API-KEY", request_id)
        key_hash = hashlib.sha256(request.headers["x-api-key"].encode()).hexdigest()[:16]
        wait = limited(per_minute, key_hash, cfg.revtain_per_minute, 60.0)
        if wait:
            return too_many(wait, request_id)
        body = await read_json(request)
        if not isinstance(body, dict):
            return _err(400, "body must be a JSON object", request_id)
        errors = []
        for f, typ in (("paymentMethodToken", str), ("amount", int), ("currency", str),
                       ("originalDeclineCode", str), ("idempotencyKey", str)):
            if not isinstance(body.get(f), typ) or isinstance(body.get(f), bool):
                errors.append({"field": f, "message": f"required {typ.__name__}"})
        key = body.get("idempotencyKey")
        if isinstance(key, str) and not 1 <= len(key) <= 128:
            errors.append({"field": "idempotencyKey", "message": "1 to 128 characters"})
        errors += [{"field": p, "message": "looks like a card number: refused"}
                   for p in card_number_fields(body)]
        if errors:
            return _err(400, "validation failed", request_id, fieldErrors=errors)
        existing = store.query("select transaction_id from executions where idempotency_key = ?",
                               (key,))
        if existing:
            store.bump("revtain_duplicates")
            return _err(409, "duplicate idempotencyKey", request_id,
                        existingTransactionId=existing[0][0], reason="idempotency_key")
        same_card = store.query(
            "select transaction_id from executions where payment_method_token = ? and amount = ?"
            " and currency = ? and received_at > ? order by received_at desc limit 1",
            (body["paymentMethodToken"], body["amount"], body["currency"], time.time() - 300))
        if same_card:
            store.bump("revtain_duplicates")
            return _err(409, "same card and amount within 5 minutes", request_id,
                        existingTransactionId=same_card[0][0], reason="same_card_amount")
        code = body["originalDeclineCode"].lower()
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if code in REVTAIN_BLOCKED:
            store.bump("revtain_blocked")
            revtain_event("recovery.blocked", key, {
                "idempotencyKey": key, "invoiceId": meta.get("invoiceId"), "declineCode": code,
                "recommendedAction": "review_account", "revtainTransactionId": None})
            return _err(403, "blocked decline code: never retry", request_id, declineCode=code,
                        recommendedAction="review_account")
        txn_id = _hid("rvt_", key)
        resp: dict[str, Any] = {"requestId": request_id, "transactionId": txn_id,
                                "idempotencyKey": key}
        if code in WAIT_FOR_FUNDS:
            http_status, status, success, action = 202, "queued", None, "wait"
            rec = recommend(code, 1, datetime.now(UTC))
            resp.update(status="queued", scheduledFor=_iso(rec.ideal_retry_time))
        else:
            success, action = settle(key, code)
            http_status, status = 200, ("succeeded" if success else "failed")
            resp.update(success=success, status=status, recommendedAction=action)
        card_url = None
        if body.get("customerPresent") is True and code in CUSTOMER_FIXABLE:
            card_url = f"https://pay.revtain.example/update/{txn_id}"
            resp["cardUpdateUrl"] = card_url
        try:
            store.execute(
                "insert into executions (idempotency_key, transaction_id, api_key_hash,"
                " payment_method_token, amount, currency, decline_code, status, success, http_status,"
                " card_update_url, received_at, body, response) values (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, txn_id, key_hash, body["paymentMethodToken"], body["amount"], body["currency"],
                 code, status, None if success is None else int(success), http_status, card_url,
                 time.time(), json.dumps(body), json.dumps(resp)))
        except Exception:  # noqa: BLE001 - a concurrent twin won the unique key: it is a duplicate
            store.bump("revtain_duplicates")
            return _err(409, "duplicate idempotencyKey", request_id, existingTransactionId=txn_id,
                        reason="idempotency_key")
        store.bump("revtain_charges")
        if status != "queued":
            emit_revtain_outcome(key, txn_id, success, action, body, card_url)
        return JSONResponse(resp, status_code=http_status, headers={"X-Request-Id": request_id})

    def emit_revtain_outcome(key: str, txn_id: str, success: bool, action: str, body: dict,
                             card_url: str | None) -> None:
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        data = {"revtainTransactionId": txn_id, "idempotencyKey": key,
                "invoiceId": meta.get("invoiceId") or key, "amount": body.get("amount"),
                "currency": body.get("currency"), "declineCode": body.get("originalDeclineCode"),
                "recommendedAction": None if success else action}
        if card_url:
            data["cardUpdateUrl"] = card_url
        revtain_event("recovery.success" if success else "recovery.failed", key, data)

    async def revtain_status(request: Request) -> Response:
        request_id = rid()
        if not authorized(request, "x-api-key"):
            return _err(401, "missing or invalid X-API-KEY", request_id)
        key = request.query_params.get("idempotencyKey")
        if not key:
            return _err(400, "idempotencyKey is required", request_id)
        rows = store.query("select * from executions where idempotency_key = ?", (key,))
        if not rows:
            return _err(404, "unknown idempotencyKey", request_id)
        r = rows[0]
        return JSONResponse({"requestId": request_id, "idempotencyKey": key,
                             "transactionId": r["transaction_id"], "status": r["status"],
                             "success": None if r["success"] is None else bool(r["success"]),
                             "cardUpdateUrl": r["card_update_url"]})

    async def revtain_pulse(request: Request) -> Response:
        request_id = rid()
        if not authorized(request, "x-api-key"):
            return _err(401, "missing or invalid X-API-KEY", request_id)
        body = await read_json(request)
        items = body.get("pulses") if isinstance(body, dict) and "pulses" in body else [body]
        if not all(isinstance(i, dict) and isinstance(i.get("amount"), int) and isinstance(
                i.get("currency"), str) for i in items) or card_number_fields(items):
            return _err(400, "each pulse needs integer amount and currency", request_id)
        with store.lock:
            store._conn.executemany("insert into pulses (body, received_at) values (?, ?)",
                                    [(json.dumps(i), time.time()) for i in items])
        rows = []
        for i in items:
            created = _parse_ts(i.get("createdAt"))
            if i.get("transactionId") and created:
                rows.append({"id": str(i["transactionId"]), "month": created.strftime("%Y-%m"),
                             "created_at": _iso(created), "currency": i.get("currency"),
                             "country": i.get("customerCountry") or i.get("cardCountry"),
                             "state": "paid", "invoice_id": i.get("invoiceId"),
                             "subscription_id": i.get("subscriptionId"), "amount": i.get("amount"),
                             "hash": payload_hash(i), "body": json.dumps(i)})
        if rows:
            store.upsert_records("transactions", rows)
        return JSONResponse({"requestId": request_id, "received": len(items)},
                            headers={"X-Request-Id": request_id})

    # --- Butter --------------------------------------------------------------------------------------
    async def butter_payments(request: Request) -> Response:
        request_id = rid()
        if not authorized(request, "x-api-key"):
            return _err(401, "missing or invalid x-api-key", request_id)
        wait = limited(per_second, api_key, cfg.requests_per_second, 1.0)
        if wait:
            return too_many(wait, request_id)
        body = await read_json(request)
        payments = body.get("payments") if isinstance(body, dict) and "payments" in body else [body]
        if not isinstance(payments, list):
            return _err(400, "payments must be a list", request_id)
        if len(payments) > cfg.batch_limit:
            return _err(400, f"too many items: {len(payments)} > {cfg.batch_limit}", request_id,
                        limit=cfg.batch_limit)
        errors, invoices, txns = [], [], []
        for idx, p in enumerate(payments):
            if not isinstance(p, dict):
                errors.append({"index": idx, "field": "", "message": "must be an object"})
                continue
            inv = p.get("invoice") or {}
            for f, v in (("customer.id", (p.get("customer") or {}).get("id")),
                         ("invoice.id", inv.get("id")), ("invoice.created_at", inv.get("created_at"))):
                if not v:
                    errors.append({"index": idx, "field": f, "message": "required"})
            for path in card_number_fields(p):
                errors.append({"index": idx, "field": path, "message": "looks like a card number"})
            inv_created = _parse_ts(inv.get("created_at"))
            if inv.get("created_at") and inv_created is None:
                errors.append({"index": idx, "field": "invoice.created_at", "message": "ISO-8601"})
            for t_i, t in enumerate(p.get("transactions") or []):
                t_created = _parse_ts(t.get("psp_transaction_created_at"))
                if not t.get("id") or t_created is None or not isinstance(t.get("amount"), int):
                    errors.append({"index": idx, "field": f"transactions[{t_i}]",
                                   "message": "id, integer amount and psp_transaction_created_at"
                                              " are required"})
                    continue
                outcome = t.get("outcome") or {}
                state = "paid" if outcome.get("status") in ("succeeded", "success", "paid") else "failed"
                txns.append({"id": str(t["id"]), "month": t_created.strftime("%Y-%m"),
                             "created_at": _iso(t_created), "currency": t.get("currency"),
                             "country": (p.get("customer") or {}).get("country")
                             or t.get("acquirer_country"),
                             "state": state, "invoice_id": inv.get("id"),
                             "subscription_id": (p.get("subscription") or {}).get("id"),
                             "decline_code": outcome.get("decline_code"), "amount": t["amount"],
                             "hash": payload_hash(t), "body": json.dumps(t)})
            if inv_created and inv.get("id"):
                first = (p.get("transactions") or [{}])[0]
                inv_body = {"invoice": inv, "customer": p.get("customer"),
                            "subscription": p.get("subscription")}
                invoices.append({"id": str(inv["id"]), "month": inv_created.strftime("%Y-%m"),
                                 "created_at": _iso(inv_created),
                                 "currency": inv.get("currency") or first.get("currency"),
                                 "country": (p.get("customer") or {}).get("country"),
                                 "state": None, "billing_status": inv.get("status"),
                                 "subscription_id": (p.get("subscription") or {}).get("id"),
                                 "amount": inv.get("amount"), "hash": payload_hash(inv_body),
                                 "body": json.dumps(inv_body)})
        if errors:
            return _err(400, "validation failed", request_id, fieldErrors=errors[:100])
        # An invoice repeated in one batch (one payment per transaction) is one record.
        dedup = {r["id"]: r for r in invoices}
        inv_result = store.upsert_records("invoices", list(dedup.values()))
        txn_result = store.upsert_records("transactions", txns)
        for t in txns:
            if t["state"] == "failed":
                rec = recommend_for("butter", t["id"], t["invoice_id"], t["decline_code"],
                                    _parse_ts(t["created_at"]))
                if rec is not None and rec.kind == "complete_dunning":
                    store.execute(
                        "insert or ignore into actions (request_id, provider, invoice_id,"
                        " transaction_id, kind, type, created_at, body) values (?, 'butter', ?, ?,"
                        " 'complete_dunning', 'end_of_dunning', ?, '{}')",
                        (_hid("ra_", t["id"]), t["invoice_id"], t["id"], t["created_at"]))
                    event_id = _hid("evt_", "butter", t["invoice_id"])
                    enqueue("butter", event_id, "end_of_dunning", {
                        "timestamp": int(_parse_ts(t["created_at"]).timestamp()),
                        "invoice_id": t["invoice_id"], "recovered": False, "custom": {}})
        return JSONResponse({"requestId": request_id, "accepted": len(payments),
                             "invoices": inv_result, "transactions": txn_result},
                            headers={"X-Request-Id": request_id})

    async def butter_pm_updates(request: Request) -> Response:
        request_id = rid()
        if not authorized(request, "x-api-key"):
            return _err(401, "missing or invalid x-api-key", request_id)
        body = await read_json(request)
        if not isinstance(body, dict) or card_number_fields(body):
            return _err(400, "body must be a JSON object without card numbers", request_id)
        with store.lock:
            store._conn.execute("insert into payment_method_updates (body, received_at) values (?, ?)",
                                (json.dumps(body), time.time()))
        return JSONResponse({"requestId": request_id, "received": True})

    # --- sandbox hooks -----------------------------------------------------------------------------
    async def counts(request: Request) -> Response:
        return JSONResponse(store.counts())

    async def stats(request: Request) -> Response:
        s = dict(store.stats)
        outbox = {f"{r[0]}": r[1] for r in store.query(
            "select status, count(*) from outbox group by status")}
        return JSONResponse({
            "requests_seen": s.get("requests_seen", 0), "429s_sent": s.get("429s_sent", 0),
            "5xx_sent": s.get("5xx_sent", 0), "timeouts": s.get("timeouts", 0),
            "drops": s.get("drops", 0), "duplicates_seen": s.get("duplicates_seen", 0),
            "batches_over_limit": s.get("batches_over_limit", 0),
            "validation_errors": s.get("validation_errors", 0),
            "records_by_entity": store.records_by_entity(),
            "records_received": {k.split(":", 1)[1]: v for k, v in s.items()
                                 if k.startswith("records_received:")},
            "batches": {k.split(":", 1)[1]: v for k, v in s.items() if k.startswith("batches:")},
            "revtain": {"charges": s.get("revtain_charges", 0),
                        "duplicates": s.get("revtain_duplicates", 0),
                        "blocked": s.get("revtain_blocked", 0),
                        "executions": store.query("select count(*) from executions")[0][0]},
            "recovery_actions": store.query("select count(*) from actions")[0][0],
            "webhooks": outbox, "webhook_attempts": s.get("webhook_attempts", 0),
            "webhook_duplicates_sent": s.get("webhook_duplicates_sent", 0),
            "max_items_in_request": s.get("max_items", 0),
        })

    async def set_faults(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        for k in ("fraction_5xx", "fraction_timeouts", "fraction_drop"):
            v = body.get(k, 0.0)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                return JSONResponse({"error": f"{k} must be within [0, 1]"}, status_code=400)
            setattr(faults, k, float(v))
        faults.burst_429 = int(body.get("burst_429", 0))
        faults.retry_after = int(body.get("retry_after", 0))
        faults.timeout_seconds = body.get("timeout_seconds")
        faults.seed = body.get("seed")
        faults.rng = random.Random(faults.seed)
        dup = body.get("webhook_duplicate_fraction", 0.0)
        if not isinstance(dup, (int, float)) or not 0 <= dup <= 1:
            return JSONResponse({"error": "webhook_duplicate_fraction must be within [0, 1]"},
                                status_code=400)
        faults.webhook_duplicate_fraction = float(dup)
        faults.webhook_shuffle = bool(body.get("webhook_shuffle", False))
        return JSONResponse({k: getattr(faults, k) for k in (
            "fraction_5xx", "fraction_timeouts", "fraction_drop", "burst_429", "retry_after",
            "timeout_seconds", "seed", "webhook_duplicate_fraction", "webhook_shuffle")})

    async def delete_record(request: Request) -> Response:
        entity, rec_id = request.path_params["entity"], request.path_params["record_id"]
        if entity not in ENTITIES:
            return JSONResponse({"error": f"unknown entity {entity}"}, status_code=404)
        return JSONResponse({"deleted": store.delete_record(entity, rec_id)})

    async def deliver_now(request: Request) -> Response:
        body = await read_json(request) or {}
        if isinstance(body, dict) and body.get("settle"):
            for r in store.query("select * from executions where status = 'queued'"):
                success, action = settle(r["idempotency_key"], r["decline_code"])
                store.execute("update executions set status = ?, success = ? where idempotency_key = ?"
                              " and status = 'queued'", ("succeeded" if success else "failed",
                                                         int(success), r["idempotency_key"]))
                emit_revtain_outcome(r["idempotency_key"], r["transaction_id"], success, action,
                                     json.loads(r["body"]), r["card_update_url"])
        async with httpx.AsyncClient(timeout=10) as client:
            result = await delivery.deliver_due(store, client, cfg.webhook_url, secrets,
                                                cfg.time_scale, force=True, **webhook_faults())
        return JSONResponse(result)

    async def add_event(request: Request) -> Response:
        """Queue an arbitrary provider event (e.g. Revtain card.updated / card.expiring_soon)."""
        body = await read_json(request)
        if not isinstance(body, dict) or body.get("provider") not in delivery.SCHEDULES or not (
                body.get("type")):
            return JSONResponse({"error": "provider (slicker|revtain|butter) and type required"},
                                status_code=400)
        event_id = body.get("id") or _hid("evt_", body["provider"], uuid.uuid4().hex)
        data = body.get("data") or {}
        if body["provider"] == "butter":
            payload = data
        else:
            payload = {"id": event_id, "type": body["type"], "created": int(time.time()), "data": data}
        enqueue(body["provider"], event_id, body["type"], payload)
        return JSONResponse({"id": event_id})

    async def outbox(request: Request) -> Response:
        rows = store.query("select id, provider, event_id, type, attempts, status, last_status,"
                           " body from outbox order by id")
        return JSONResponse([dict(r) for r in rows])

    async def configure(request: Request) -> Response:
        """Change the webhook URL or limits at run time (tests, demo)."""
        body = await read_json(request)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        for k in ("webhook_url", "batch_limit", "requests_per_second", "revtain_per_minute",
                  "time_scale"):
            if k in body:
                setattr(cfg, k, body[k])
        if "requests_per_second" in body or "revtain_per_minute" in body:
            per_second.clear()
            per_minute.clear()
        return JSONResponse({"webhook_url": cfg.webhook_url, "batch_limit": cfg.batch_limit,
                             "requests_per_second": cfg.requests_per_second,
                             "revtain_per_minute": cfg.revtain_per_minute,
                             "time_scale": cfg.time_scale})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = None
        stop = asyncio.Event()

        async def loop() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                while not stop.is_set():
                    try:
                        await delivery.deliver_due(store, client, cfg.webhook_url, secrets,
                                                   cfg.time_scale, **webhook_faults())
                    except Exception:  # noqa: BLE001 - keep delivering; the outbox keeps the state
                        logging.getLogger(__name__).exception("webhook delivery pass failed")
                    tick = min(0.5, max(0.01, cfg.time_scale))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), tick)

        if cfg.deliver_in_background:
            task = asyncio.create_task(loop())
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 5)

    routes = [
        Route("/v1/recovery_actions", slicker_actions, methods=["GET"]),
        Route("/v1/{entity}", slicker_ingest, methods=["POST"]),
        Route("/api/recovery/execute", revtain_execute, methods=["POST"]),
        Route("/api/recovery/pulse", revtain_pulse, methods=["POST"]),
        Route("/api/recovery/status", revtain_status, methods=["GET"]),
        Route("/recover/payments", butter_payments, methods=["POST"]),
        Route("/payment_method_updates", butter_pm_updates, methods=["POST"]),
        Route("/sandbox/counts", counts, methods=["GET"]),
        Route("/sandbox/stats", stats, methods=["GET"]),
        Route("/sandbox/faults", set_faults, methods=["POST"]),
        Route("/sandbox/config", configure, methods=["POST"]),
        Route("/sandbox/records/{entity}/{record_id}/delete", delete_record, methods=["POST"]),
        Route("/sandbox/deliver", deliver_now, methods=["POST"]),
        Route("/sandbox/events", add_event, methods=["POST"]),
        Route("/sandbox/outbox", outbox, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.store = store
    app.state.config = cfg
    app.state.faults = faults
    return FaultInjector(app, store, faults, cfg)


class FaultInjector:
    """ASGI middleware: injected 429 bursts, 5xx, timeouts and dropped connections on provider
    endpoints (never on /sandbox/*, /healthz, /openapi.json); counts requests seen."""

    def __init__(self, app: Starlette, store: SandboxStore, faults: Faults, cfg: SandboxConfig):
        self.app, self.store, self.faults, self.cfg = app, store, faults, cfg
        self.state = app.state

    async def _json(self, send, status: int, body: dict, headers: dict[str, str] | None = None):
        raw = json.dumps(body).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": raw})

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/sandbox") or path in ("/healthz",
                                                                              "/openapi.json"):
            return await self.app(scope, receive, send)
        f, store = self.faults, self.store
        store.bump("requests_seen")
        request_id = "req_" + uuid.uuid4().hex[:24]
        with store.lock:
            burst = f.burst_429 > 0
            if burst:
                f.burst_429 -= 1
        if burst:
            store.bump("429s_sent")
            return await self._json(send, 429, {"requestId": request_id, "error": "rate limit exceeded"},
                                    {"Retry-After": str(f.retry_after), "X-Request-Id": request_id})
        if f.fraction_5xx or f.fraction_timeouts or f.fraction_drop:
            r = f.rng.random()
            if r < f.fraction_drop:
                store.bump("drops")
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"100")]})
                raise _Dropped("connection dropped by fault injection")
            r -= f.fraction_drop
            if r < f.fraction_5xx:
                store.bump("5xx_sent")
                return await self._json(send, 503, {"requestId": request_id,
                                                    "error": "injected server error"},
                                        {"X-Request-Id": request_id})
            r -= f.fraction_5xx
            if r < f.fraction_timeouts:
                store.bump("timeouts")
                await asyncio.sleep(f.timeout_seconds or self.cfg.timeout_seconds)
                return await self._json(send, 504, {"requestId": request_id, "error": "timeout"})
        return await self.app(scope, receive, send)
