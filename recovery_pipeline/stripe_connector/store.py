"""Apply Stripe events to the object store (out-of-order safe) and build billing rows from it.

Every event goes through the same path whether it came from the receiver (``webhook_inbox`` row
``provider='stripe'``, status ``pending``; see :func:`process_inbox`) or from files
(:func:`ingest_events`, which first stores the raw event in the inbox, insert-or-ignore on the
event id, so a duplicate is stored once and applied once).

An object version is written with a guarded upsert: INSERT ... ON CONFLICT DO NOTHING, then
``UPDATE ... WHERE (version_ts, version_rank, event_id) < (new)``; portable to SQLite and Postgres,
race-free with several writers (the guard is evaluated by the database on the row it updates).

Rows are rebuilt from the final store state (:func:`build_rows`, :func:`rows_for_entity`), so any
delivery order yields the same rows.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema as billing_schema
from recovery_pipeline.ingest.cardscan import mask_card_numbers
from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.opsstore.store import insert_or_ignore, utcnow
from recovery_pipeline.stripe_connector import mapping as m
from recovery_pipeline.stripe_connector.models import stripe_objects

PROVIDER = "stripe"
CARD_LIKE_REASON = "contains a card-number-like value (masked in the inbox; not applied)"


@dataclass
class IngestResult:
    event_id: str
    event_type: str | None
    status: str  # stored | skipped | duplicate | rejected
    reason: str | None = None
    objects: list[str] = field(default_factory=list)  # "invoice in_1: updated" ...


# --- writing --------------------------------------------------------------------------------------

_STATEMENTS: dict[str, tuple] = {}
LINK_COLUMNS = ("invoice_id", "subscription_id", "customer_id", "payment_intent_id")


def _statements(conn: sa.Connection) -> tuple:
    """(insert-or-ignore, guarded update, inbox insert-or-ignore, inbox mark) for the dialect, built once and
    executed with parameters (no per-row statement construction)."""
    name = conn.dialect.name
    if name not in _STATEMENTS:
        t = stripe_objects.c
        insert = insert_or_ignore(stripe_objects, conn).returning(t.object_id)
        newer = sa.or_(
            t.version_ts < sa.bindparam("n_ts"),
            sa.and_(t.version_ts == sa.bindparam("n_ts"), t.version_rank < sa.bindparam("n_rank")),
            sa.and_(t.version_ts == sa.bindparam("n_ts"), t.version_rank == sa.bindparam("n_rank"),
                    t.event_id < sa.bindparam("n_event")),
        )
        update = (stripe_objects.update()
                  .where(t.object_type == sa.bindparam("k_type"), t.object_id == sa.bindparam("k_id"), newer)
                  .values(version_ts=sa.bindparam("n_ts"), version_rank=sa.bindparam("n_rank"),
                          event_id=sa.bindparam("n_event"), event_type=sa.bindparam("n_type"),
                          data_json=sa.bindparam("n_data"), stored_at=sa.bindparam("n_stored"),
                          **{k: sa.bindparam(f"n_{k}") for k in LINK_COLUMNS})
                  .returning(t.object_id))
        inbox = insert_or_ignore(webhook_inbox, conn).returning(webhook_inbox.c.id)
        i = webhook_inbox.c
        mark = (webhook_inbox.update()
                .where(i.provider == PROVIDER, i.event_id == sa.bindparam("k_event"))
                .values(status=sa.bindparam("n_status"), attempts=i.attempts + 1,
                        processed_at=sa.bindparam("n_processed"), last_error=sa.bindparam("n_error")))
        _STATEMENTS[name] = (insert, update, inbox, mark)
    return _STATEMENTS[name]


def apply_version(conn: sa.Connection, v: m.ObjectVersion) -> str:
    """Store one object version unless a newer one is held: ``inserted`` | ``updated`` | ``stale``.

    Ordered by ``(version_ts, version_rank, event_id)``; the guard is evaluated by the database on
    the row it updates, so concurrent writers cannot regress a state. RETURNING (not rowcount,
    which drivers report differently for ON CONFLICT DO NOTHING) says what happened."""
    insert, update = _statements(conn)[:2]
    now = utcnow()
    data = v.data_json()
    link = m.links(v.object_type, v.data)
    if conn.execute(insert, {"object_type": v.object_type, "object_id": v.object_id,
                             "version_ts": v.version_ts, "version_rank": v.version_rank,
                             "event_id": v.event_id, "event_type": v.event_type, "data_json": data,
                             "stored_at": now, **link}).first() is not None:
        return "inserted"
    res = conn.execute(update, {"k_type": v.object_type, "k_id": v.object_id, "n_ts": v.version_ts,
                                "n_rank": v.version_rank, "n_event": v.event_id, "n_type": v.event_type,
                                "n_data": data, "n_stored": now, **{f"n_{k}": x for k, x in link.items()}})
    return "updated" if res.first() is not None else "stale"


def apply_plan(conn: sa.Connection, plan: m.EventPlan) -> list[str]:
    return [f"{v.object_type} {v.object_id}: {apply_version(conn, v)}" for v in plan.versions]


def _event_key(raw: str, event: object) -> tuple[str, str | None]:
    if isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"]:
        etype = event.get("type") if isinstance(event.get("type"), str) else None
        return event["id"][:255], (etype[:128] if etype else None)
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest(), None


def ingest_events(engine: sa.Engine, events: Iterable[dict], *, source: str = "file",
                  chunk: int = 200) -> list[IngestResult]:
    """Store each event raw in the inbox (dedupe on the event id) and apply it, ``chunk`` events per
    transaction (the raw event and what it changed commit together).

    No signature check: these are exports (``stripe events list``) or replays. A malformed event is
    kept in the inbox as ``failed`` with the reason and reported ``rejected``; the rest go on."""
    results: list[IngestResult] = []
    headers = json.dumps({"x-recovery-source": source})
    batch: list = []

    def flush() -> None:
        with engine.begin() as conn:
            for event in batch:
                raw = json.dumps(event, separators=(",", ":"), sort_keys=True)
                event_id, event_type = _event_key(raw, event)
                masked, card_like = mask_card_numbers(raw)
                row = {"provider": PROVIDER, "event_id": event_id, "event_type": event_type,
                       "received_at": utcnow(), "headers_json": headers, "body": masked,
                       "status": "failed" if card_like else "pending", "attempts": 0,
                       "last_error": CARD_LIKE_REASON if card_like else None}
                if conn.execute(_statements(conn)[2], row).first() is None:
                    results.append(IngestResult(event_id, event_type, "duplicate", "event id already stored"))
                    continue
                if card_like:
                    results.append(IngestResult(event_id, event_type, "rejected", CARD_LIKE_REASON))
                    continue
                results.append(_apply_and_mark(conn, event_id, event_type, event))
        batch.clear()

    for event in events:
        batch.append(event)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    return results


def _apply_and_mark(conn: sa.Connection, event_id: str, event_type: str | None, event) -> IngestResult:
    try:
        plan = m.plan_event(event)
    except m.MappingError as exc:
        result = IngestResult(event_id, event_type, "rejected", str(exc))
        status = "failed"
    else:
        if plan.skipped:
            result = IngestResult(event_id, event_type, "skipped", plan.skip_reason)
            status = "skipped"
        else:
            result = IngestResult(event_id, event_type, "stored", plan.note, apply_plan(conn, plan))
            status = "processed"
    conn.execute(_statements(conn)[3], {"k_event": event_id, "n_status": status, "n_processed": utcnow(),
                                        "n_error": result.reason if status in ("failed", "skipped") else None})
    return result


def process_inbox(engine: sa.Engine, limit: int = 1000, chunk: int = 200) -> list[IngestResult]:
    """Apply the receiver's pending Stripe events (``webhook_inbox`` provider='stripe'), oldest first,
    ``chunk`` per transaction. Idempotent: two processors on the same rows store the same state."""
    inbox = webhook_inbox.c
    with engine.connect() as conn:
        pending = conn.execute(
            sa.select(inbox.event_id, inbox.event_type, inbox.body)
            .where(inbox.provider == PROVIDER, inbox.status == "pending")
            .order_by(inbox.id).limit(limit)).all()
    results = []
    for start in range(0, len(pending), chunk):
        with engine.begin() as conn:
            for event_id, event_type, body in pending[start:start + chunk]:
                masked, card_like = mask_card_numbers(body)
                if card_like:  # never keep a card number: mask the stored body, do not apply it
                    conn.execute(webhook_inbox.update().where(webhook_inbox.c.provider == PROVIDER,
                                                              webhook_inbox.c.event_id == event_id)
                                 .values(body=masked))
                    conn.execute(_statements(conn)[3], {"k_event": event_id, "n_status": "failed",
                                                        "n_processed": utcnow(), "n_error": CARD_LIKE_REASON})
                    results.append(IngestResult(event_id, event_type, "rejected", CARD_LIKE_REASON))
                    continue
                try:
                    event = json.loads(body)
                except ValueError:
                    event = None
                if event is None:
                    conn.execute(_statements(conn)[3], {"k_event": event_id, "n_status": "failed",
                                                        "n_processed": utcnow(), "n_error": "body is not JSON"})
                    results.append(IngestResult(event_id, event_type, "rejected", "body is not JSON"))
                    continue
                results.append(_apply_and_mark(conn, event_id, event_type, event))
    return results


# --- reading: the store -> billing rows -----------------------------------------------------------

@dataclass
class _Obj:
    data: dict
    version_ts: int


def _select_objects(conn: sa.Connection, where, out: dict[str, dict[str, _Obj]]) -> None:
    t = stripe_objects.c
    for otype, oid, vts, data in conn.execute(
            sa.select(t.object_type, t.object_id, t.version_ts, t.data_json).where(where)):
        if oid not in out[otype]:
            out[otype][oid] = _Obj(json.loads(data), int(vts))


def _in_chunks(column, values: set[str]):
    """``column IN (...)`` split in chunks (SQLite's parameter limit), OR-ed."""
    vals = sorted(v for v in values if v)
    if not vals:
        return sa.false()
    return sa.or_(*[column.in_(vals[i:i + 500]) for i in range(0, len(vals), 500)])


@dataclass
class Scope:
    """What an incremental read must re-emit: rows of these invoices, subscriptions, customers."""
    invoices: set[str]
    subscriptions: set[str]
    customers: set[str]


def load_objects(engine: sa.Engine, since: datetime | None = None
                 ) -> tuple[dict[str, dict[str, _Obj]], Scope | None]:
    """Every stored object (``since=None``), or what the objects stored at or after ``since`` touch:
    the changed objects, the invoices they belong to with everything those rows need (attempts,
    charges, payment intents, invoice payments, subscription, customer, the customer's other
    invoices), and the invoices of a changed subscription (end of dunning stamps them)."""
    t = stripe_objects.c
    out: dict[str, dict[str, _Obj]] = defaultdict(dict)
    with engine.connect() as conn:
        if since is None:
            _select_objects(conn, sa.true(), out)
            return out, None
        changed = conn.execute(sa.select(t.object_type, t.object_id, *[t[c] for c in LINK_COLUMNS])
                               .where(t.stored_at >= since)).all()
        invoices = {r.invoice_id for r in changed if r.invoice_id}
        intents = {r.payment_intent_id for r in changed if r.payment_intent_id}
        subs = {r.object_id for r in changed if r.object_type == "subscription"}
        customers = {r.object_id for r in changed if r.object_type == "customer"}
        # invoices reached through a payment intent (basil charges name no invoice)
        invoices |= {i for (i,) in conn.execute(sa.select(t.invoice_id).where(
            _in_chunks(t.payment_intent_id, intents), t.invoice_id.is_not(None)))}
        # a changed subscription (end of dunning) re-stamps its invoices
        invoices |= {i for (i,) in conn.execute(sa.select(t.object_id).where(
            t.object_type == "invoice", _in_chunks(t.subscription_id, subs)))}
        # everything the affected invoices' rows need
        _select_objects(conn, _in_chunks(t.invoice_id, invoices), out)
        intents |= {o.data.get("payment_intent_id") for o in out["invoice_attempt"].values()}
        for o in out["invoice"].values():
            intents |= m.invoice_payment_refs(o.data)[1]
        _select_objects(conn, _in_chunks(t.payment_intent_id, intents), out)
        subs_needed = subs | {m.invoice_subscription_id(o.data) for o in out["invoice"].values()}
        _select_objects(conn, sa.and_(t.object_type == "subscription", _in_chunks(t.object_id, subs_needed)), out)
        row_customers = customers | {m.ref_id(o.data.get("customer")) for o in out["invoice"].values()}
        row_customers.discard(None)
        # customers' own objects, and all their invoices (a derived customer's first invoice date)
        _select_objects(conn, sa.and_(t.object_type.in_(("customer", "invoice")),
                                      _in_chunks(t.customer_id, row_customers)), out)
    return out, Scope(invoices=invoices, subscriptions=subs, customers=row_customers)


@dataclass
class Rows:
    customers: list[dict]
    subscriptions: list[dict]
    invoices: list[dict]
    transactions: list[dict]
    unlinked_charges: list[str]  # charges no invoice could be found for (not subscription billing)

    def entity(self, name: str) -> list[dict]:
        return getattr(self, name)


def _link_indexes(objs: dict[str, dict[str, _Obj]]) -> tuple[dict[str, str], dict[str, str]]:
    by_charge: dict[str, str] = {}
    by_intent: dict[str, str] = {}
    for iid, o in objs.get("invoice", {}).items():
        charges, intents = m.invoice_payment_refs(o.data)
        for c in charges:
            by_charge.setdefault(c, iid)
        for p in intents:
            by_intent.setdefault(p, iid)
    for o in objs.get("invoice_payment", {}).values():
        iid = m.ref_id(o.data.get("invoice"))
        payment = o.data.get("payment") or {}
        if iid and m.ref_id(payment.get("charge")):
            by_charge.setdefault(m.ref_id(payment.get("charge")), iid)
        if iid and m.ref_id(payment.get("payment_intent")):
            by_intent.setdefault(m.ref_id(payment.get("payment_intent")), iid)
    for o in objs.get("invoice_attempt", {}).values():
        if o.data.get("charge_id"):
            by_charge.setdefault(o.data["charge_id"], o.data["invoice_id"])
        if o.data.get("payment_intent_id"):
            by_intent.setdefault(o.data["payment_intent_id"], o.data["invoice_id"])
    for pid, o in objs.get("payment_intent", {}).items():
        if m.ref_id(o.data.get("invoice")):
            by_intent.setdefault(pid, m.ref_id(o.data.get("invoice")))
    return by_charge, by_intent


def _match_charge(att: dict, charges: list[dict], used: set[str]) -> dict | None:
    """The charge behind an invoice attempt: named by id, else same outcome, created at or just
    before the attempt event (latest such)."""
    if att.get("charge_id"):
        return next((c for c in charges if c["id"] == att["charge_id"]), None)
    want = "failed" if att["outcome"] == "failed" else "succeeded"
    best = None
    for c in charges:
        if c["id"] in used or c.get("status") != want or m._int(c.get("created")) > att["at"] + 60:
            continue
        if best is None or m._int(c.get("created")) > m._int(best.get("created")):
            best = c
    return best


def build_rows(engine: sa.Engine, since: datetime | None = None) -> Rows:
    """Billing rows (``billing_engine/schema.py`` columns) from the final state of the store: all of
    them, or (``since``) only the rows that objects stored at or after ``since`` change."""
    objs, scope = load_objects(engine, since)
    rows = _build(objs)
    if scope is None:
        return rows
    return Rows(
        customers=[r for r in rows.customers if r["customer_id"] in scope.customers],
        subscriptions=[r for r in rows.subscriptions if r["subscription_id"] in scope.subscriptions],
        invoices=[r for r in rows.invoices if r["invoice_id"] in scope.invoices],
        transactions=[r for r in rows.transactions if r["invoice_id"] in scope.invoices],
        unlinked_charges=rows.unlinked_charges)


def _build(objs: dict[str, dict[str, _Obj]]) -> Rows:
    by_charge, by_intent = _link_indexes(objs)
    intents = {k: o.data for k, o in objs.get("payment_intent", {}).items()}

    subscriptions, sub_dunning, sub_paused = [], {}, {}
    for sid, o in sorted(objs.get("subscription", {}).items()):
        row = m.subscription_row(o.data, o.version_ts)
        subscriptions.append(row)
        sub_dunning[sid] = row["dunning_complete_at"]
        sub_paused[sid] = bool(o.data.get("pause_collection"))

    invoices_obj = {k: o for k, o in objs.get("invoice", {}).items() if not o.data.get("deleted")}

    # charges by invoice
    charges_by_invoice: dict[str, list[dict]] = defaultdict(list)
    unlinked = []
    for cid, o in sorted(objs.get("charge", {}).items()):
        ch = o.data
        iid = (m.charge_invoice_id(ch) or by_charge.get(cid)
               or by_intent.get(m.ref_id(ch.get("payment_intent")) or ""))
        if not iid:
            unlinked.append(cid)
            continue
        charges_by_invoice[iid].append({**ch, "_version_ts": o.version_ts})
    attempts_by_invoice: dict[str, list[dict]] = defaultdict(list)
    for o in objs.get("invoice_attempt", {}).values():
        attempts_by_invoice[o.data["invoice_id"]].append(o.data)

    transactions, refunded_invoices = [], set()
    for iid in sorted(set(charges_by_invoice) | set(attempts_by_invoice)):
        inv = invoices_obj.get(iid)
        inv_data = inv.data if inv else {}
        customer_id = m.ref_id(inv_data.get("customer"))
        subscription_id = m.invoice_subscription_id(inv_data) if inv else None
        charges = sorted((c for c in charges_by_invoice.get(iid, [])
                          if c.get("status") in ("failed", "succeeded")),
                         key=lambda c: (m._int(c.get("created")), c["id"]))
        attempts = sorted(attempts_by_invoice.get(iid, []), key=lambda a: a["attempt_number"])
        if any(c.get("refunded") for c in charges):
            refunded_invoices.add(iid)
        if charges and len(charges) >= len(attempts):
            for n, ch in enumerate(charges, start=1):
                row = m.charge_transaction_row(
                    ch, invoice_id=iid, attempt_number=n, customer_id=customer_id,
                    subscription_id=subscription_id, updated=ch["_version_ts"],
                    intent=intents.get(m.ref_id(ch.get("payment_intent")) or ""))
                if row:
                    transactions.append(row)
                    refund = m.refund_transaction_row(ch, row, ch["_version_ts"])
                    if refund:
                        transactions.append(refund)
            continue
        used: set[str] = set()
        for att in attempts:
            ch = _match_charge(att, charges, used)
            if ch is not None:
                used.add(ch["id"])
            intent = intents.get(att.get("payment_intent_id") or m.ref_id((ch or {}).get("payment_intent")) or "")
            row = m.attempt_transaction_row(att, intent=intent, charge=ch)
            row["customer_id"] = row["customer_id"] or customer_id
            row["subscription_id"] = row["subscription_id"] or subscription_id
            transactions.append(row)
            refund = m.refund_transaction_row(ch, row, ch["_version_ts"]) if ch is not None else None
            if refund:
                transactions.append(refund)

    invoices, customers_from_invoices = [], {}
    for iid, o in sorted(invoices_obj.items()):
        sid = m.invoice_subscription_id(o.data)
        row = m.invoice_row(o.data, o.version_ts, refunded=iid in refunded_invoices,
                            collection_paused=sub_paused.get(sid or "", False),
                            dunning_complete_at=sub_dunning.get(sid or ""))
        if row["dunning_complete_at"] and row["created_at"] and row["dunning_complete_at"] < row["created_at"]:
            row["dunning_complete_at"] = None  # an invoice issued after dunning ended is a new cycle
        invoices.append(row)
        cid = row["customer_id"]
        if cid:
            cur = customers_from_invoices.get(cid)
            cand = m.customer_row_from_invoice(o.data, o.version_ts)
            if cur is None:
                customers_from_invoices[cid] = cand
            else:  # earliest created, latest details
                first = min(cur["created_at"], cand["created_at"])
                newer = cand if cand["updated_at"] >= cur["updated_at"] else cur
                customers_from_invoices[cid] = {**newer, "created_at": first}

    customers = [m.customer_row(o.data, o.version_ts)
                 for _, o in sorted(objs.get("customer", {}).items())]
    known = {c["customer_id"] for c in customers}
    customers += [c for cid, c in sorted(customers_from_invoices.items()) if cid not in known]
    return Rows(customers, subscriptions, invoices, transactions, unlinked)


# --- arrow ----------------------------------------------------------------------------------------

def _arrow_type(col: sa.Column) -> pa.DataType:
    if isinstance(col.type, sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(col.type, sa.Boolean):
        return pa.bool_()
    if isinstance(col.type, (sa.Integer, sa.BigInteger)):
        return pa.int64()
    return pa.string()


def arrow_schema(entity: str) -> pa.Schema:
    table = billing_schema.ENTITIES[entity]
    return pa.schema([pa.field(c.name, _arrow_type(c), nullable=c.nullable) for c in table.columns])


def to_arrow(entity: str, rows: list[dict]) -> pa.Table:
    schema = arrow_schema(entity)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def rows_for_entity(engine: sa.Engine, entity: str, rows: Rows | None = None) -> pa.Table:
    """One entity's rows (exactly the ``billing_engine/schema.py`` columns) as an Arrow table."""
    if entity not in billing_schema.ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; one of {sorted(billing_schema.ENTITIES)}")
    rows = rows or build_rows(engine)
    return to_arrow(entity, rows.entity(entity))


def object_counts(engine: sa.Engine) -> dict[str, int]:
    t = stripe_objects.c
    with engine.connect() as conn:
        return {k: int(n) for k, n in conn.execute(
            sa.select(t.object_type, sa.func.count()).group_by(t.object_type).order_by(t.object_type))}


def recent_invoices(engine: sa.Engine, n: int = 5) -> list[dict]:
    """The invoice rows of the ``n`` invoices stored last (a preview; no charges, no dunning)."""
    t = stripe_objects.c
    with engine.connect() as conn:
        found = conn.execute(sa.select(t.data_json, t.version_ts).where(t.object_type == "invoice")
                             .order_by(t.stored_at.desc()).limit(n)).all()
    return [m.invoice_row(json.loads(d), int(v)) for d, v in found]


def latest_stored_at(engine: sa.Engine) -> datetime | None:
    with engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.max(stripe_objects.c.stored_at))).scalar_one()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return m.ts(value) if value is not None else None


def event_span(engine: sa.Engine) -> tuple[datetime | None, datetime | None, int]:
    """(oldest, newest) event ``created`` among the versions held in the store, and how many objects."""
    t = stripe_objects.c
    with engine.connect() as conn:
        lo, hi, n = conn.execute(sa.select(sa.func.min(t.version_ts), sa.func.max(t.version_ts),
                                           sa.func.count())).one()
    return m.ts(lo), m.ts(hi), int(n)


def dlt_columns(entity: str) -> dict[str, dict]:
    """dlt column hints for one entity, so every schema column exists even when a load has only
    nulls in it (dlt would otherwise leave it out)."""
    out = {}
    for col in billing_schema.ENTITIES[entity].columns:
        if isinstance(col.type, sa.DateTime):
            dtype = "timestamp"
        elif isinstance(col.type, sa.Boolean):
            dtype = "bool"
        elif isinstance(col.type, (sa.Integer, sa.BigInteger)):
            dtype = "bigint"
        else:
            dtype = "text"
        out[col.name] = {"data_type": dtype, "nullable": bool(col.nullable) and not col.primary_key}
    return out


def conformed_tables(entity: str, rows: list[dict], *, source: str, loaded_at: datetime):
    """Rows as Arrow tables conformed to the raw contract of ``recovery_pipeline.ingest.contract``
    (schema columns + ``_source``, ``_month`` (of ``created_at``), ``_loaded_at``,
    ``_invalid_columns``, ``_card_like_columns``), one table per month, so Stripe rows sit in
    ``billing_raw`` exactly like rows from exports or the billing database."""
    from recovery_pipeline.ingest.contract import conform_arrow
    from recovery_pipeline.ingest.months import month_key

    by_month: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        stamp = r.get("created_at") or r.get("updated_at")
        by_month[month_key(stamp) if stamp else "0000-00"].append(r)
    for month, chunk in sorted(by_month.items()):
        yield conform_arrow(entity, to_arrow(entity, chunk), source=source, month=month, loaded_at=loaded_at)
