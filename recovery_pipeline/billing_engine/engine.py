"""The demo billing engine's business operations over its SQL database.

Each action (retry now, request a payment-method update, pause collection, complete dunning,
mark paid, hand off) runs in one database transaction together with the record of its
idempotency key (``idempotency_keys``): a repeated key returns the stored response and does not
act again, and two concurrent requests with one key cannot both act (the invoice row is locked
and the key insert is insert-or-ignore; the loser returns the winner's response).

A retry charges through the deterministic ``Gateway`` and writes a NEW transaction row
(``attempt_number`` = previous + 1); the invoice's status, ``attempt_count``, ``paid_at`` and
``updated_at`` follow. ``run_own_retries`` is the billing system's own dunning cycle: it skips
invoices that were handed off to the recovery provider or whose collection is paused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from recovery_pipeline.billing_engine import db as bdb
from recovery_pipeline.billing_engine import schema
from recovery_pipeline.billing_engine.gateway import Gateway

INV, TXN, SUB = schema.invoices, schema.transactions, schema.subscriptions
IDEM = bdb.idempotency_keys
MAX_OWN_ATTEMPTS = 4


class BillingError(Exception):
    status_code = 400
    code = "bad_request"


class InvoiceNotFound(BillingError):
    status_code = 404
    code = "invoice_not_found"


class InvoiceStateConflict(BillingError):
    status_code = 409
    code = "invoice_state_conflict"


class InvalidRequest(BillingError):
    status_code = 422
    code = "invalid_request"


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"


class _LostRace(Exception):
    pass


def _iso(v):
    if isinstance(v, datetime):
        return bdb.as_utc(v).isoformat().replace("+00:00", "Z")
    return v


def row_dict(row) -> dict:
    return {k: _iso(v) for k, v in row._mapping.items()}


def _hex(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()


class BillingEngine:
    """Business operations of the demo billing system. ``clock`` is injectable for tests."""

    def __init__(self, engine: sa.Engine, *, gateway: Gateway | None = None,
                 clock: Callable[[], datetime] = bdb.utcnow):
        self.engine = engine
        if gateway is None:
            seed = bdb.get_meta(engine, "gateway_seed")
            gateway = Gateway(int(seed) if seed is not None else 0)
        self.gateway = gateway
        self.clock = clock

    @classmethod
    def from_url(cls, url: str, **kwargs) -> BillingEngine:
        engine = bdb.create_billing_engine(url)
        bdb.init_billing_db(engine)
        return cls(engine, **kwargs)

    # -- reads ------------------------------------------------------------------------------------

    def get_invoice(self, invoice_id: str) -> dict:
        with self.engine.connect() as conn:
            inv = conn.execute(sa.select(INV).where(INV.c.invoice_id == invoice_id)).first()
            if inv is None:
                raise InvoiceNotFound(f"invoice {invoice_id!r} does not exist")
            return {"invoice": row_dict(inv), "transactions": self._txns(conn, invoice_id)}

    def _txns(self, conn, invoice_id: str) -> list[dict]:
        rows = conn.execute(sa.select(TXN).where(TXN.c.invoice_id == invoice_id)
                            .order_by(TXN.c.created_at, TXN.c.attempt_number)).all()
        return [row_dict(r) for r in rows]

    # -- idempotent action runner ---------------------------------------------------------------

    def _stored(self, conn, key: str, action: str, invoice_id: str) -> dict | None:
        row = conn.execute(sa.select(IDEM).where(IDEM.c.key == key)).first()
        if row is None:
            return None
        if row.action != action or row.invoice_id != invoice_id:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key!r} was already used for {row.action} on invoice "
                f"{row.invoice_id}; use a new key for a different request")
        return json.loads(row.response_json)

    def _run(self, action: str, invoice_id: str, key: str | None, fn, now: datetime | None) -> dict:
        if not key or not str(key).strip():
            raise InvalidRequest("an Idempotency-Key is required for every action")
        key = str(key)
        if len(key) > 255:
            raise InvalidRequest("Idempotency-Key must be at most 255 characters")
        try:
            with self.engine.begin() as conn:
                inv = conn.execute(sa.select(INV).where(INV.c.invoice_id == invoice_id)
                                   .with_for_update()).first()
                stored = self._stored(conn, key, action, invoice_id)
                if stored is not None:
                    return stored
                if inv is None:
                    raise InvoiceNotFound(f"invoice {invoice_id!r} does not exist")
                now = self._now(inv, now)
                result = fn(conn, inv, now)
                res = conn.execute(bdb.insert_or_ignore(IDEM, conn).values(
                    key=key, action=action, invoice_id=invoice_id, status_code=200,
                    response_json=json.dumps(result), created_at=now).returning(IDEM.c.key))
                if res.first() is None:  # RETURNING, not rowcount (psycopg 3 reports -1)
                    raise _LostRace
                return result
        except _LostRace:
            with self.engine.connect() as conn:
                return self._stored(conn, key, action, invoice_id)

    def _now(self, inv, now: datetime | None) -> datetime:
        now = bdb.as_utc(now or self.clock())
        # the engine's own timestamps never go backwards relative to the invoice
        floor = max(bdb.as_utc(inv.created_at), bdb.as_utc(inv.updated_at))
        return max(now, floor)

    @staticmethod
    def _require_open(inv, what: str, allowed: tuple[str, ...] = ("open",)) -> None:
        if inv.status not in allowed:
            raise InvoiceStateConflict(
                f"invoice {inv.invoice_id} is {inv.status}; cannot {what} "
                f"(only {' or '.join(allowed)} invoices)")

    def _touch(self, conn, invoice_id: str, now: datetime, **values) -> dict:
        conn.execute(sa.update(INV).where(INV.c.invoice_id == invoice_id)
                     .values(updated_at=now, **values))
        return row_dict(conn.execute(sa.select(INV).where(INV.c.invoice_id == invoice_id)).one())

    def _touch_subscription(self, conn, subscription_id: str | None, now: datetime, **values) -> None:
        if subscription_id:
            conn.execute(sa.update(SUB).where(SUB.c.subscription_id == subscription_id)
                         .values(updated_at=now, **values))

    # -- actions ----------------------------------------------------------------------------------

    def retry_invoice(self, invoice_id: str, idempotency_key: str, *, now: datetime | None = None) -> dict:
        """Charge the invoice through the gateway now; a new transaction row either way."""
        return self._run("retry", invoice_id, idempotency_key, self._retry, now)

    def _charges(self, conn, invoice_id: str) -> list:
        return conn.execute(sa.select(TXN).where(TXN.c.invoice_id == invoice_id,
                                                 TXN.c.status != "refunded")
                            .order_by(TXN.c.attempt_number, TXN.c.created_at)).all()

    def _retry(self, conn, inv, now: datetime) -> dict:
        self._require_open(inv, "retry it")
        charges = self._charges(conn, inv.invoice_id)
        attempt = max([c.attempt_number for c in charges] + [inv.attempt_count or 0]) + 1
        last = charges[-1] if charges else None
        if last is not None:
            now = max(now, bdb.as_utc(last.created_at) + timedelta(microseconds=1))
        previous_code = last.decline_code if last is not None and last.status == "failed" else None
        pm_updated = (inv.payment_method_update_requested_at is not None
                      and self.gateway.customer_updates_payment_method(inv.invoice_id))
        result = self.gateway.charge(invoice_id=inv.invoice_id, attempt_number=attempt,
                                     previous_decline_code=previous_code,
                                     payment_method_updated=pm_updated)
        card = {c: getattr(last, c) if last is not None else None for c in (
            "payment_method_type", "payment_method_token", "card_brand", "card_bin",
            "card_fingerprint", "card_country")}
        if last is None:
            card["payment_method_type"] = "card"
            card["payment_method_token"] = "pm_" + _hex(self.gateway.seed, inv.customer_id, "pm")
        if pm_updated:
            card["payment_method_token"] = self.gateway.new_payment_method_token(inv.invoice_id)
        txn = {
            "transaction_id": "txn_" + _hex(self.gateway.seed, inv.invoice_id, attempt, "engine-txn"),
            "invoice_id": inv.invoice_id, "customer_id": inv.customer_id,
            "subscription_id": inv.subscription_id, "status": result.status,
            "amount_minor": inv.amount_minor, "currency": inv.currency, "attempt_number": attempt,
            "gateway": last.gateway if last is not None else self.gateway.name,
            "gateway_transaction_id": result.gateway_transaction_id,
            "gateway_status": result.gateway_status, "decline_code": result.decline_code,
            "decline_message": result.decline_message, **card,
            "created_at": now, "updated_at": now,
        }
        conn.execute(sa.insert(TXN).values(**txn))
        values = {"attempt_count": attempt}
        if result.succeeded:
            values.update(status="paid", paid_at=now)
            self._touch_subscription(conn, inv.subscription_id, now, status="active")
        invoice = self._touch(conn, inv.invoice_id, now, **values)
        return {"invoice": invoice, "transaction": {k: _iso(v) for k, v in txn.items()}}

    def request_payment_method_update(self, invoice_id: str, idempotency_key: str, *,
                                      card_update_url: str | None = None,
                                      now: datetime | None = None) -> dict:
        def act(conn, inv, now):
            self._require_open(inv, "request a payment-method update")
            invoice = self._touch(conn, inv.invoice_id, now, payment_method_update_requested_at=now)
            return {"invoice": invoice, "card_update_url": card_update_url}
        return self._run("request_payment_method_update", invoice_id, idempotency_key, act, now)

    def pause_collection(self, invoice_id: str, idempotency_key: str, *,
                         now: datetime | None = None) -> dict:
        def act(conn, inv, now):
            self._require_open(inv, "pause collection")
            return {"invoice": self._touch(conn, inv.invoice_id, now, collection_paused=True)}
        return self._run("pause_collection", invoice_id, idempotency_key, act, now)

    def complete_dunning(self, invoice_id: str, idempotency_key: str, *,
                         now: datetime | None = None) -> dict:
        """End of dunning: invoice uncollectible, its subscription canceled."""
        def act(conn, inv, now):
            self._require_open(inv, "complete dunning")
            self._touch_subscription(conn, inv.subscription_id, now, status="canceled",
                                     canceled_at=now, dunning_complete_at=now)
            return {"invoice": self._touch(conn, inv.invoice_id, now, status="uncollectible",
                                           dunning_complete_at=now)}
        return self._run("complete_dunning", invoice_id, idempotency_key, act, now)

    def mark_paid(self, invoice_id: str, idempotency_key: str, *, external_transaction_id: str,
                  now: datetime | None = None) -> dict:
        """The provider recovered the payment outside this engine: record a succeeded charge."""
        if not isinstance(external_transaction_id, str) or not external_transaction_id.strip():
            raise InvalidRequest("external_transaction_id (a non-empty string) is required")
        if len(external_transaction_id) > 64:
            raise InvalidRequest("external_transaction_id must be at most 64 characters")

        def act(conn, inv, now):
            self._require_open(inv, "mark it paid", allowed=("open", "uncollectible"))
            charges = self._charges(conn, inv.invoice_id)
            attempt = max([c.attempt_number for c in charges] + [inv.attempt_count or 0]) + 1
            last = charges[-1] if charges else None
            if last is not None:
                now = max(now, bdb.as_utc(last.created_at) + timedelta(microseconds=1))
            txn = {
                "transaction_id": "txn_" + _hex(inv.invoice_id, external_transaction_id, "external"),
                "invoice_id": inv.invoice_id, "customer_id": inv.customer_id,
                "subscription_id": inv.subscription_id, "status": "succeeded",
                "amount_minor": inv.amount_minor, "currency": inv.currency,
                "attempt_number": attempt, "gateway": "external",
                "gateway_transaction_id": external_transaction_id, "gateway_status": "succeeded",
                "decline_code": None, "decline_message": None,
                "payment_method_type": last.payment_method_type if last is not None else None,
                "payment_method_token": None, "card_brand": None, "card_bin": None,
                "card_fingerprint": None, "card_country": None,
                "created_at": now, "updated_at": now,
            }
            conn.execute(sa.insert(TXN).values(**txn))
            self._touch_subscription(conn, inv.subscription_id, now, status="active")
            invoice = self._touch(conn, inv.invoice_id, now, status="paid", paid_at=now,
                                  attempt_count=attempt)
            return {"invoice": invoice, "transaction": {k: _iso(v) for k, v in txn.items()}}
        return self._run("mark_paid", invoice_id, idempotency_key, act, now)

    def hand_off(self, invoice_id: str, idempotency_key: str, *, now: datetime | None = None) -> dict:
        """The recovery provider now owns this failure: the engine's own retries stop."""
        def act(conn, inv, now):
            self._require_open(inv, "hand it off")
            return {"invoice": self._touch(conn, inv.invoice_id, now,
                                           handed_off_at=inv.handed_off_at or now)}
        return self._run("hand_off", invoice_id, idempotency_key, act, now)

    # -- the billing system's own dunning cycle ----------------------------------------------------

    def run_own_retries(self, now: datetime | None = None, *,
                        min_interval: timedelta = timedelta(days=3),
                        max_attempts: int = MAX_OWN_ATTEMPTS, limit: int = 1000) -> list[dict]:
        """Retry open, failed invoices that are not handed off and not paused; end dunning after
        ``max_attempts``. Idempotent per (invoice, attempt). Returns one entry per invoice acted on."""
        now = bdb.as_utc(now or self.clock())
        # last attempt per candidate through the transactions.invoice_id index
        last_at = (sa.select(sa.func.max(TXN.c.created_at))
                   .where(TXN.c.invoice_id == INV.c.invoice_id).scalar_subquery())
        q = (sa.select(INV.c.invoice_id, INV.c.attempt_count, last_at.label("last_at"))
             .where(INV.c.status == "open", INV.c.handed_off_at.is_(None),
                    INV.c.collection_paused.is_(False), INV.c.dunning_complete_at.is_(None),
                    INV.c.attempt_count >= 1, last_at <= now - min_interval)
             .order_by(INV.c.invoice_id).limit(limit))
        with self.engine.connect() as conn:
            due = [r for r in conn.execute(q).all()
                   if r.last_at is not None and bdb.as_utc(r.last_at) <= now - min_interval]
        out = []
        for r in due:
            if r.attempt_count >= max_attempts:
                res = self.complete_dunning(r.invoice_id, f"own-dunning:{r.invoice_id}", now=now)
                out.append({"invoice_id": r.invoice_id, "action": "complete_dunning",
                            "status": res["invoice"]["status"]})
            else:
                res = self.retry_invoice(r.invoice_id, f"own-retry:{r.invoice_id}:{r.attempt_count + 1}",
                                         now=now)
                out.append({"invoice_id": r.invoice_id, "action": "retry",
                            "status": res["transaction"]["status"]})
        return out
