"""Failure hand-off: a new failed charge goes to the provider the moment it lands.

* Slicker / Butter (``handoff_mode == "push"``): the failed transactions are pushed through the push
  engine (the ledger keeps them from being sent twice).
* Revtain (``"execute"``): one ``POST /api/recovery/execute`` per invoice, idempotencyKey = the
  invoice id (stable across retries and re-runs).

The ``handoffs`` table is the guarantee that an accepted hand-off is never sent twice, even across
crashes: a ``pending`` row is inserted first under the unique (provider, idempotency_key), then the
request is sent, then the outcome recorded. A crash between send and record leaves ``pending``; the
re-run sends again with the same key and the provider answers 409 with the existing transaction
(recorded as ``duplicate``, which is an accepted hand-off). 403 (blocked) and 409 are outcomes,
not errors. After an accepted hand-off the billing system is told (``POST /invoices/{id}/hand-off``)
so that its own retries stop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from recovery_pipeline.opsstore.models import handoffs
from recovery_pipeline.opsstore.store import insert_or_ignore, store_payload, try_insert, utcnow
from recovery_pipeline.providers.base import iso_utc
from recovery_pipeline.providers.http import ProviderClient
from recovery_pipeline.providers.push import PushSettings, _dead_letter, _log_request, push_entity

FINAL = frozenset({"accepted", "queued", "blocked", "duplicate"})
HANDED_OFF = frozenset({"accepted", "queued", "duplicate"})  # the provider owns recovery now


@dataclass
class HandoffStats:
    considered: int = 0
    sent: int = 0
    already_done: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    billing_marked: int = 0
    billing_errors: int = 0
    requests: int = 0
    dead_letters: int = 0
    preview: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> None:
        self.outcomes[status] = self.outcomes.get(status, 0) + 1


def latest_failure_per_invoice(txns: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One failed transaction per invoice: the latest (created_at, transaction_id)."""
    latest: dict[str, dict[str, Any]] = {}
    for t in txns:
        if t.get("status") != "failed":
            continue
        cur = latest.get(t["invoice_id"])
        key = (iso_utc(t.get("created_at")) or "", str(t["transaction_id"]))
        if cur is None or key > (iso_utc(cur.get("created_at")) or "", str(cur["transaction_id"])):
            latest[t["invoice_id"]] = t
    return latest


def _row(conn: sa.Connection, provider: str, key: str) -> dict[str, Any] | None:
    r = conn.execute(sa.select(handoffs).where(handoffs.c.provider == provider,
                                               handoffs.c.idempotency_key == key)).mappings().first()
    return dict(r) if r else None


def _handed_off(status: str, response_json: str | None) -> bool:
    """Does the provider own recovery of this invoice now? A 409 for the same idempotency key
    does (it already took it); a 409 for *another* invoice on the same card and amount within
    5 minutes does not: nothing is charged twice and the merchant's own dunning carries on."""
    if status not in HANDED_OFF:
        return False
    try:
        reason = json.loads(response_json or "{}").get("reason")
    except ValueError:
        reason = None
    return not (status == "duplicate" and reason == "same_card_amount")


def _billing_marked(row: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(row.get("response_json") or "{}").get("billing_marked"))
    except ValueError:
        return False


def _mark(engine: sa.Engine, provider: str, key: str, invoice_id: str,
          mark_handed_off: Callable[[str], Any] | None, stats: HandoffStats) -> None:
    if mark_handed_off is None:
        return
    try:
        mark_handed_off(invoice_id)
    except Exception:  # noqa: BLE001 - recorded; the next run marks it again (idempotent action)
        stats.billing_errors += 1
        return
    stats.billing_marked += 1
    with engine.begin() as conn:
        row = _row(conn, provider, key)
        data = json.loads(row.get("response_json") or "{}") if row else {}
        data["billing_marked"] = True
        conn.execute(handoffs.update().where(handoffs.c.provider == provider,
                                             handoffs.c.idempotency_key == key).values(
            response_json=json.dumps(data), updated_at=utcnow()))


def execute_one(engine: sa.Engine, client: ProviderClient, txn: dict[str, Any],
                mark_handed_off: Callable[[str], Any] | None = None,
                stats: HandoffStats | None = None, max_receive_count: int = 5) -> str:
    """Hand one failed invoice to an execute-style provider; returns the recorded status."""
    stats = stats if stats is not None else HandoffStats()
    adapter, provider = client.adapter, client.adapter.name
    body = adapter.execute_body(txn)
    key = body["idempotencyKey"]
    invoice_id = str(txn["invoice_id"])
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert_or_ignore(handoffs, conn).values(
            provider=provider, idempotency_key=key, invoice_id=invoice_id,
            transaction_id=str(txn["transaction_id"]), status="pending", created_at=now,
            updated_at=now))
        row = _row(conn, provider, key)
    if row and row["status"] in FINAL:
        stats.already_done += 1
        if _handed_off(row["status"], row.get("response_json")) and not _billing_marked(row):
            _mark(engine, provider, key, invoice_id, mark_handed_off, stats)
        return row["status"]
    raw = json.dumps(body, separators=(",", ":"))
    started = utcnow()
    client.policy.max_attempts = max_receive_count
    res = client.send("POST", adapter.execute_path(), content=raw.encode())
    stats.sent += 1
    stats.requests += res.attempts
    resp = res.body if isinstance(res.body, dict) else {}
    status = {200: "accepted", 201: "accepted", 202: "queued", 403: "blocked",
              409: "duplicate"}.get(res.status or 0, "failed")
    provider_txn = resp.get("transactionId") or resp.get("existingTransactionId")
    with engine.begin() as conn:
        ref = store_payload(conn, raw)
        _log_request(conn, provider, adapter.execute_path(), key, res, 1, ref, started)
        conn.execute(handoffs.update().where(
            handoffs.c.provider == provider, handoffs.c.idempotency_key == key,
            handoffs.c.status.not_in(tuple(FINAL))).values(
            status=status, provider_transaction_id=provider_txn,
            card_update_url=resp.get("cardUpdateUrl"),
            response_json=json.dumps({"http_status": res.status, **{
                k: resp.get(k) for k in ("success", "status", "recommendedAction", "error",
                                         "existingTransactionId", "reason", "declineCode")
                if k in resp}}),
            updated_at=utcnow()))
        if status == "failed":
            _dead_letter(conn, "handoff", provider, "transactions", key, ref, res.attempts,
                         res.error)
            stats.dead_letters += 1
    stats.count(status)
    if len(stats.preview) < 5:
        stats.preview.append({"invoice_id": invoice_id, "status": status,
                              "provider_transaction_id": provider_txn})
    if _handed_off(status, json.dumps({"reason": resp.get("reason")})):
        _mark(engine, provider, key, invoice_id, mark_handed_off, stats)
    return status


def handoff_failures(engine: sa.Engine, client: ProviderClient, txns: Iterable[dict[str, Any]], *,
                     mark_handed_off: Callable[[str], Any] | None = None,
                     push_settings: PushSettings | None = None) -> HandoffStats:
    """Hand off the given failed transactions (canonical rows) to the configured provider."""
    push_settings = push_settings or PushSettings()
    stats = HandoffStats()
    rows = [t for t in txns if t.get("status") == "failed"]
    latest = latest_failure_per_invoice(rows)
    stats.considered = len(latest)
    adapter, provider = client.adapter, client.adapter.name
    if adapter.handoff_mode == "execute":
        for txn in latest.values():
            execute_one(engine, client, txn, mark_handed_off, stats, push_settings.max_receive_count)
        return stats
    # push-mode providers: send the failed transactions; the ledger dedupes across runs
    pushed = push_entity(engine, client, "transactions", [rows], push_settings)
    stats.sent = pushed.records_sent
    stats.requests = pushed.requests
    stats.dead_letters = pushed.dead_letters
    from recovery_pipeline.opsstore.models import push_ledger

    for invoice_id, txn in latest.items():
        with engine.connect() as conn:
            acked = conn.execute(sa.select(sa.func.count()).select_from(push_ledger).where(
                push_ledger.c.provider == provider, push_ledger.c.entity == "transactions",
                push_ledger.c.record_id == str(txn["transaction_id"]))).scalar_one()
        if not acked:
            stats.count("failed")
            continue
        now = utcnow()
        with engine.begin() as conn:
            inserted = try_insert(
                conn, handoffs, provider=provider, idempotency_key=invoice_id, invoice_id=invoice_id,
                transaction_id=str(txn["transaction_id"]), status="accepted", created_at=now,
                updated_at=now)
            row = _row(conn, provider, invoice_id)
        if inserted:
            stats.count("accepted")
            if len(stats.preview) < 5:
                stats.preview.append({"invoice_id": invoice_id, "status": "accepted"})
        else:
            stats.already_done += 1
        if row and not _billing_marked(row):
            _mark(engine, provider, invoice_id, invoice_id, mark_handed_off, stats)
    return stats


def billing_marker(base_url: str, api_key: str | None, timeout: float = 10.0) -> Callable[[str], Any]:
    """``POST /invoices/{id}/hand-off`` on the billing engine (ARCHITECTURE.md contract), with an
    Idempotency-Key so a repeat never acts twice. Uses billing_engine.client when present."""
    try:
        from recovery_pipeline.billing_engine.client import BillingEngineClient  # type: ignore
    except ImportError:
        BillingEngineClient = None  # noqa: N806

    if BillingEngineClient is not None and hasattr(BillingEngineClient, "hand_off"):
        client = BillingEngineClient(base_url, api_key=api_key)

        def mark(invoice_id: str) -> Any:
            return client.hand_off(invoice_id, idempotency_key=f"hand-off:{invoice_id}")

        return mark

    import httpx

    def mark_http(invoice_id: str) -> Any:
        resp = httpx.post(f"{base_url.rstrip('/')}/invoices/{invoice_id}/hand-off",
                          headers={"X-API-Key": api_key or "",
                                   "Idempotency-Key": f"hand-off:{invoice_id}"}, timeout=timeout)
        if resp.status_code >= 400 and resp.status_code != 409:
            resp.raise_for_status()
        return resp.json() if resp.content else None

    return mark_http
