"""What the sandbox holds: received records (upsert by id), recovery actions, Revtain executions,
and the webhook outbox. SQLite (a file, or memory), one connection behind a lock."""

from __future__ import annotations

import hashlib
import json
import operator
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from typing import Any

SCHEMA = """
create table if not exists records (
    entity text not null, id text not null, month text, created_at text, currency text,
    country text, state text, billing_status text, invoice_id text, subscription_id text,
    decline_code text, amount integer, hash text not null, body text not null,
    primary key (entity, id));
create index if not exists ix_records_invoice on records (entity, invoice_id);
create table if not exists actions (
    request_id text primary key, provider text not null, invoice_id text, subscription_id text,
    transaction_id text, kind text not null, action_suggestion text, type text,
    ideal_retry_time text, created_at text not null, body text not null);
create table if not exists executions (
    idempotency_key text primary key, transaction_id text not null unique, api_key_hash text,
    payment_method_token text, amount integer, currency text, decline_code text,
    status text not null, success integer, http_status integer, card_update_url text,
    received_at real not null, body text not null, response text not null);
create table if not exists pulses (id integer primary key autoincrement, body text not null,
    received_at real not null);
create table if not exists payment_method_updates (id integer primary key autoincrement,
    body text not null, received_at real not null);
create table if not exists outbox (
    id integer primary key autoincrement, provider text not null, event_id text not null unique,
    type text not null, body text not null, attempts integer not null default 0,
    next_attempt_at real not null, status text not null default 'pending',
    last_status integer, last_error text, created_at real not null, delivered_at real);
"""


_RECORD_COLUMNS = ("id", "month", "created_at", "currency", "country", "state", "billing_status",
                   "invoice_id", "subscription_id", "decline_code", "amount", "hash", "body")
_record_values = operator.itemgetter(*_RECORD_COLUMNS)
_UPSERT_RECORD = (
    f"insert into records (entity, {', '.join(_RECORD_COLUMNS)})"
    f" values (?{', ?' * len(_RECORD_COLUMNS)}) on conflict (entity, id) do update set "
    + ", ".join(f"{c} = excluded.{c}" for c in _RECORD_COLUMNS if c != "id"))


def payload_hash(item: dict) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class SandboxStore:
    def __init__(self, path: str | None = None):
        self._conn = sqlite3.connect(path or ":memory:", check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            if path:  # a test double's own file: WAL, and no fsync per request
                self._conn.execute("pragma journal_mode=wal")
                self._conn.execute("pragma synchronous=normal")
            self._conn.executescript(SCHEMA)
        self.stats: Counter = Counter()

    # --- generic -------------------------------------------------------------------------
    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self._conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple | dict = ()) -> int:
        with self.lock:
            return self._conn.execute(sql, params).rowcount

    def bump(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    # --- records -------------------------------------------------------------------------
    def upsert_records(self, entity: str, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Upsert rows (each with id, body and indexed columns). A repeat with the same payload is a
        duplicate (counted, nothing changes); a changed payload is an update."""
        out = {"inserted": 0, "updated": 0, "duplicates": 0}
        with self.lock:
            ids = [r["id"] for r in rows]
            existing: dict[str, str] = {}
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                q = f"select id, hash from records where entity = ? and id in ({','.join('?' * len(chunk))})"
                existing.update({r[0]: r[1] for r in self._conn.execute(q, (entity, *chunk))})
            changed = []
            for r in rows:
                h = r["hash"]
                old = existing.get(r["id"])
                if old == h:
                    out["duplicates"] += 1
                    continue
                out["updated" if old else "inserted"] += 1
                existing[r["id"]] = h
                try:
                    changed.append((entity, *_record_values(r)))
                except KeyError:
                    changed.append((entity, *(r.get(k) for k in _RECORD_COLUMNS)))
            self._conn.execute("begin")  # one transaction per request, one executemany
            try:
                self._conn.executemany(_UPSERT_RECORD, changed)
                self._conn.execute("commit")
            except BaseException:
                self._conn.execute("rollback")
                raise
            self.stats["duplicates_seen"] += out["duplicates"]
            self.stats[f"records_received:{entity}"] += len(rows)
        return out

    def delete_record(self, entity: str, record_id: str) -> bool:
        return self.execute("delete from records where entity = ? and id = ?", (entity, record_id)) > 0

    def record(self, entity: str, record_id: str) -> sqlite3.Row | None:
        rows = self.query("select * from records where entity = ? and id = ?", (entity, record_id))
        return rows[0] if rows else None

    def invoice_failures(self, invoice_id: str, up_to: str) -> tuple[int, bool]:
        """(failed transactions of the invoice created at or before ``up_to``, any paid one)."""
        rows = self.query(
            "select state, created_at from records where entity = 'transactions' and invoice_id = ?",
            (invoice_id,))
        failed = sum(1 for r in rows if r["state"] == "failed" and (r["created_at"] or "") <= up_to)
        paid = any(r["state"] == "paid" for r in rows)
        return failed, paid

    def records_by_entity(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.query("select entity, count(*) from records group by entity")}

    # --- counts for reconciliation ---------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        months: dict[str, dict[str, Any]] = defaultdict(lambda: {
            "subscriptions": 0, "invoices": 0, "transactions": 0, "failed_transactions": 0,
            "invoices_by_currency": {}, "invoices_by_country": {},
            "transactions_by_currency": {}, "transactions_by_country": {},
            "failed_transactions_by_currency": {}, "failed_transactions_by_country": {},
            "outcomes": {"first_attempt_success": 0, "paid_after_failure": 0, "unrecovered": 0,
                         "refunded": 0, "voided": 0, "open": 0},
        })

        def bump(d: dict, key: str | None, n: int) -> None:
            key = key or "unknown"
            d[key] = d.get(key, 0) + n

        for ent in ("subscriptions", "invoices", "transactions"):
            for r in self.query(
                    "select month, currency, country, state = 'failed' as failed, count(*) n from records"
                    " where entity = ? group by 1, 2, 3, 4", (ent,)):
                m = months[r["month"] or "unknown"]
                m[ent] += r["n"]
                if ent == "subscriptions":
                    continue
                bump(m[f"{ent}_by_currency"], r["currency"], r["n"])
                bump(m[f"{ent}_by_country"], r["country"], r["n"])
                if ent == "transactions" and r["failed"]:
                    m["failed_transactions"] += r["n"]
                    bump(m["failed_transactions_by_currency"], r["currency"], r["n"])
                    bump(m["failed_transactions_by_country"], r["country"], r["n"])
        dunned = {r[0] for r in self.query(
            "select distinct invoice_id from actions where kind = 'complete_dunning'")}
        for r in self.query(
                "select i.id, i.month, i.state, i.billing_status,"
                " sum(case when t.state = 'failed' then 1 else 0 end) failed,"
                " sum(case when t.state = 'paid' then 1 else 0 end) paid"
                " from records i left join records t on t.entity = 'transactions' and t.invoice_id = i.id"
                " where i.entity = 'invoices' group by i.id, i.month, i.state, i.billing_status"):
            months[r["month"] or "unknown"]["outcomes"][invoice_outcome(
                r["state"], r["billing_status"], r["failed"] or 0, r["paid"] or 0, r["id"] in dunned)] += 1
        totals = {k: sum(m[k] for m in months.values())
                  for k in ("subscriptions", "invoices", "transactions", "failed_transactions")}
        return {"months": {k: months[k] for k in sorted(months)}, "totals": totals}

    # --- outbox -----------------------------------------------------------------------------
    def enqueue_webhook(self, provider: str, event_id: str, type_: str, body: str) -> bool:
        now = time.time()
        return self.execute(
            "insert or ignore into outbox (provider, event_id, type, body, next_attempt_at, created_at)"
            " values (?, ?, ?, ?, ?, ?)", (provider, event_id, type_, body, now, now)) > 0


def invoice_outcome(state: str | None, billing_status: str | None, failed: int, paid: int,
                    dunning_complete: bool) -> str:
    """The recovery outcome of one invoice from what the provider holds."""
    if billing_status == "void":
        return "voided"
    if billing_status == "refunded":
        return "refunded"
    if billing_status == "uncollectible":
        return "unrecovered"
    if state == "paid" or (state is None and paid):
        return "paid_after_failure" if failed else "first_attempt_success"
    if dunning_complete and failed:
        return "unrecovered"
    return "open"
