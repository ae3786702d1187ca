"""The webhook inbox writer: group commit into ``opsstore.webhook_inbox``, and replay selection.

Receiver requests hand their row to :class:`GroupCommitWriter` and await a future. One writer
thread drains the queue, inserts the whole batch in ONE transaction (insert-or-ignore on the
unique (provider, event_id)), commits (SQLite ``synchronous=FULL`` in WAL, or Postgres), then
resolves every future with ``True`` (stored now) or ``False`` (already stored: a duplicate).
If the commit fails every future of the batch gets the exception, so nothing is acknowledged
that is not durably stored. Several receiver processes may share the store: dedupe is the unique
constraint, never check-then-insert.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from recovery_pipeline.opsstore.models import webhook_inbox, webhook_rejections
from recovery_pipeline.opsstore.store import utcnow

log = logging.getLogger("recovery_pipeline.webhooks")

MAX_BATCH = 1000


class StoreUnavailable(Exception):
    """The inbox commit failed: the delivery must not be acknowledged (503)."""


class BadPayload(ValueError):
    """A verified payload that cannot be stored as an event (400): not JSON, not an object, no id."""


# --- event id / type per provider -----------------------------------------------------------------

def _body_hash(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _s(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def extract_event(provider: str, headers: dict[str, str], body: bytes) -> tuple[str, str | None]:
    """Parse a VERIFIED body and return ``(event_id, event_type)`` per the provider's contract.

    ``headers`` must have lowercased names. Raises :class:`BadPayload` on malformed JSON, a
    non-object body, or a provider whose contract requires an id that is missing.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson is stricter than the stdlib (NaN, integers beyond 64 bits, lone surrogates):
        # the stdlib decides, so exactly the same bodies are accepted as before
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadPayload(f"malformed JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise BadPayload("JSON body is not an object")
    if provider == "slicker":  # envelope {id, type, created, data}
        event_id, event_type = _s(doc.get("id")), _s(doc.get("type"))
        if not event_id:
            raise BadPayload("slicker envelope has no id")
    elif provider == "revtain":  # id or eventId; else the delivery header; else the body hash
        event_id = (_s(doc.get("id")) or _s(doc.get("eventId")) or _s(headers.get("x-revtain-event-id"))
                    or _body_hash(body))
        event_type = _s(doc.get("event")) or _s(doc.get("type"))
    elif provider == "butter":  # dedupe id and type travel in headers
        event_id = (_s(headers.get("x-butter-webhook-deduplication-id")) or _s(doc.get("id"))
                    or _body_hash(body))
        event_type = _s(headers.get("x-butter-webhook-type")) or _s(doc.get("type"))
    elif provider == "standard":
        event_id = _s(headers.get("webhook-id"))
        event_type = _s(doc.get("type"))
        if not event_id:
            raise BadPayload("missing webhook-id")
    elif provider == "stripe":
        event_id, event_type = _s(doc.get("id")), _s(doc.get("type"))
        if not event_id:
            raise BadPayload("stripe event has no id")
    else:
        raise ValueError(f"unknown webhook provider: {provider}")
    if len(event_id) > 255:
        raise BadPayload("event id longer than 255 characters")
    return event_id, (event_type[:128] if event_type else None)


# --- group commit ---------------------------------------------------------------------------------

INBOX_COLUMNS = ("provider", "event_id", "event_type", "received_at", "headers_json", "body", "status",
                 "attempts")
REJECTION_COLUMNS = ("provider", "status_code", "reason", "received_at")
_STOP = object()


class _SqlBatch:
    """Raw-DBAPI batch insert for one dialect: one multi-row statement per batch, few driver calls.

    Few driver calls matter: the sqlite3 module releases and re-takes the GIL at every step, and
    each re-take competes with the busy event loop, so a per-row API would convoy.
    """

    def __init__(self, engine: sa.Engine):
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported ops store dialect: {self.dialect}")
        self.ph = "?" if self.dialect == "sqlite" else "%s"
        self._cache: dict[tuple[str, int], str] = {}

    def _values_sql(self, table: str, columns: tuple[str, ...], n: int, tail: str = "") -> str:
        key = (table, n)
        sql = self._cache.get(key)
        if sql is None:
            one = "(" + ", ".join([self.ph] * len(columns)) + ")"
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([one] * n) + tail
            if len(self._cache) < 256:
                self._cache[key] = sql
        return sql

    def _flat(self, rows: list[dict], columns: tuple[str, ...]) -> list:
        flat: list = []
        for row in rows:
            for col in columns:
                v = row[col]
                if isinstance(v, datetime) and self.dialect == "sqlite":
                    # SQLAlchemy's SQLite DateTime storage format (naive UTC): it reads it back
                    v = v.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
                flat.append(v)
        return flat

    def write(self, dbapi_conn, rows: list[dict], rejections: list[dict]) -> set[tuple[str, str]]:
        """Insert-or-ignore ``rows`` and insert ``rejections`` in ONE transaction; commit; return the
        (provider, event_id) keys inserted now. Raises on any failure (after rolling back)."""
        cur = dbapi_conn.cursor()
        try:
            inserted: set[tuple[str, str]] = set()
            if self.dialect == "sqlite":
                # IMMEDIATE: the write lock from the start, so nobody else inserts until COMMIT.
                # Without AUTOINCREMENT a new rowid is max(rowid)+1 and skipped conflicts take none,
                # so the rows inserted now are exactly the top `n` rowids. Few driver calls:
                # the sqlite3 module releases and re-takes the GIL at every step.
                cur.execute("BEGIN IMMEDIATE")
                if rows:
                    before = dbapi_conn.total_changes
                    cur.execute(self._values_sql("webhook_inbox", INBOX_COLUMNS, len(rows),
                                                 " ON CONFLICT (provider, event_id) DO NOTHING"),
                                self._flat(rows, INBOX_COLUMNS))
                    n = dbapi_conn.total_changes - before
                    if n == len(rows):
                        inserted = {(r["provider"], r["event_id"]) for r in rows}
                    elif n:
                        cur.execute("SELECT json_group_array(json_array(provider, event_id)) FROM "
                                    "(SELECT provider, event_id FROM webhook_inbox ORDER BY rowid DESC LIMIT ?)",
                                    (n,))
                        inserted = {(p, e) for p, e in json.loads(cur.fetchone()[0])}
            elif rows:
                cur.execute(self._values_sql("webhook_inbox", INBOX_COLUMNS, len(rows),
                                             " ON CONFLICT (provider, event_id) DO NOTHING"
                                             " RETURNING provider, event_id"),
                            self._flat(rows, INBOX_COLUMNS))
                inserted = {(p, e) for p, e in cur.fetchall()}
            if rejections:  # (after the inbox insert: total_changes above counts inbox rows only)
                cur.execute(self._values_sql("webhook_rejections", REJECTION_COLUMNS, len(rejections)),
                            self._flat(rejections, REJECTION_COLUMNS))
            if self.dialect == "sqlite":
                cur.execute("COMMIT")  # synchronous=FULL: the WAL is on disk when this returns
            else:
                dbapi_conn.commit()
            return inserted
        except BaseException:
            try:
                if self.dialect == "sqlite":
                    if dbapi_conn.in_transaction:
                        cur.execute("ROLLBACK")
                else:
                    dbapi_conn.rollback()
            except Exception:  # noqa: BLE001
                pass
            raise
        finally:
            cur.close()


def _sqlite_lock_path(engine: sa.Engine) -> str | None:
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + ".inbox-lock"


class _Item:
    __slots__ = ("kind", "row", "loop", "future", "result")

    def __init__(self, kind: str, row: dict, loop=None, future=None):
        self.kind, self.row, self.loop, self.future, self.result = kind, row, loop, future, None


class GroupCommitWriter:
    """One writer thread committing batches of inbox rows (and rejection records).

    Requests append their row and await a future; once per event-loop turn the rows gathered
    are handed to the writer thread in one queue put. The writer takes everything queued
    (up to ``max_batch``), inserts it with ONE insert-or-ignore statement in ONE transaction,
    commits (SQLite ``synchronous=FULL``: the fsync happens in this thread, with the GIL released,
    while the event loop keeps serving), then resolves the batch's futures with one
    ``call_soon_threadsafe``: True = stored now, False = duplicate. A failed commit resolves the
    whole batch with :class:`StoreUnavailable`. While one commit is on disk the next batch queues
    up, so batches grow with load (group commit).
    """

    def __init__(self, engine: sa.Engine, max_batch: int = MAX_BATCH):
        self.engine = engine
        self.max_batch = max_batch
        self._sql = _SqlBatch(engine)
        self._q: queue.SimpleQueue = queue.SimpleQueue()  # lists of _Item (one per loop turn), or _STOP
        self._pending: list[_Item] = []  # loop side, handed off once per loop turn
        self._handoff_scheduled = False
        self._thread: threading.Thread | None = None
        self._running = False  # True from start() until the writer thread ends (cheap hot-path check)
        self._raw = None  # the writer's own DBAPI connection
        self._lock_path = _sqlite_lock_path(engine)
        self._lock_fd: int | None = None
        self.batches = 0  # committed batches
        self.items = 0  # requests resolved by those batches (inbox rows + rejections)
        self.rows = 0  # inbox rows inserted (duplicates excluded)
        self.commit_seconds = 0.0  # time inside the write transaction, lock wait included

    def stats(self) -> dict:
        return {"batches": self.batches, "items": self.items, "rows": self.rows,
                "commit_seconds": round(self.commit_seconds, 3)}

    # lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inbox-group-commit", daemon=True)
            self._running = True
            self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # producers (event loop side)
    def _enqueue(self, kind: str, row: dict) -> asyncio.Future:
        # (_running, not Thread.is_alive(): that takes a lock on every request)
        if not self._running or self._thread is None:
            raise StoreUnavailable("inbox writer is not running")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append(_Item(kind, row, loop, fut))
        if not self._handoff_scheduled:  # one queue put (one thread wake-up) per loop turn
            self._handoff_scheduled = True
            loop.call_soon(self._handoff)
        return fut

    def _handoff(self) -> None:
        self._handoff_scheduled = False
        items, self._pending = self._pending, []
        if items:
            self._q.put(items)

    async def submit(self, row: dict) -> bool:
        """Queue an inbox row; True when stored now, False when already stored (a duplicate).
        Raises :class:`StoreUnavailable` when its batch could not be committed."""
        return await self._enqueue("inbox", row)

    async def record_rejection(self, row: dict) -> None:
        await self._enqueue("rejection", row)

    # the writer thread
    def _run(self) -> None:
        try:
            carry: list[_Item] = []
            while True:
                first = carry or self._q.get()
                if first is _STOP:
                    return
                batch = list(first)
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.extend(nxt)
                batch, carry = batch[: self.max_batch], batch[self.max_batch:]
                self._commit(batch)
                if stop:
                    if carry:
                        self._commit(carry)
                    return
        finally:
            self._running = False
            self._close_raw()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _connection(self):
        if self._raw is None:
            self._raw = self.engine.raw_connection()
            if self._sql.dialect == "sqlite":
                self._raw.driver_connection.isolation_level = None  # we issue BEGIN/COMMIT
        return self._raw.driver_connection

    @contextlib.contextmanager
    def _interprocess_lock(self):
        """SQLite file stores: receiver processes take turns on an flock before BEGIN IMMEDIATE.
        The kernel wakes the next writer the moment the lock is released, where SQLite's busy
        handler would sleep and poll (tens of ms per wait). Postgres needs no such lock."""
        if self._lock_path is None:
            yield
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _close_raw(self) -> None:
        if self._raw is not None:
            try:
                self._raw.invalidate()  # never return a connection in an unknown state to the pool
            except Exception:  # noqa: BLE001
                pass
            self._raw = None

    def _commit(self, batch: list[_Item]) -> None:
        inbox = [i for i in batch if i.kind == "inbox"]
        rejections = [i.row for i in batch if i.kind == "rejection"]
        # the first occurrence of a key in the batch is the candidate insert; repeats are duplicates
        firsts: dict[tuple[str, str], _Item] = {}
        for item in inbox:
            firsts.setdefault((item.row["provider"], item.row["event_id"]), item)
        t0 = time.perf_counter()
        try:
            with self._interprocess_lock():
                inserted = self._sql.write(self._connection(), [i.row for i in firsts.values()], rejections)
        except Exception as exc:  # noqa: BLE001 - every failure means "not stored"
            msg = str(exc).splitlines()[0][:200] if str(exc) else ""
            log.error("inbox commit failed for %d rows: %s: %s", len(batch), type(exc).__name__, msg)
            self._close_raw()  # a fresh connection next time (the store may come back)
            err = StoreUnavailable(f"inbox commit failed: {type(exc).__name__}")
            for item in batch:
                item.result = err
        else:
            self.batches += 1
            self.items += len(batch)
            self.rows += len(inserted)
            self.commit_seconds += time.perf_counter() - t0
            for item in inbox:
                key = (item.row["provider"], item.row["event_id"])
                item.result = key in inserted and firsts[key] is item
        self._resolve(batch)

    @staticmethod
    def _resolve(batch: list[_Item]) -> None:
        by_loop: dict = {}
        for item in batch:
            by_loop.setdefault(item.loop, []).append(item)

        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # loop closed during shutdown
                pass


def _settle(items: list[_Item]) -> None:
    for it in items:
        if it.future.done():  # the request gave up (timeout / disconnect)
            continue
        if isinstance(it.result, BaseException):
            it.future.set_exception(it.result)
        else:
            it.future.set_result(it.result)


def inbox_row(provider: str, event_id: str, event_type: str | None, headers_json: str, body: bytes,
              received_at: datetime | None = None) -> dict:
    return {
        "provider": provider,
        "event_id": event_id,
        "event_type": event_type,
        "received_at": received_at or utcnow(),
        "headers_json": headers_json,
        "body": body.decode("utf-8", errors="replace"),
        "status": "pending",
        "attempts": 0,
    }


def rejection_row(provider: str, status_code: int, reason: str) -> dict:
    return {"provider": provider[:32], "status_code": status_code, "reason": reason[:255],
            "received_at": utcnow()}


# --- replay ---------------------------------------------------------------------------------------

def _replay_filter(since: datetime | None, until: datetime | None, event_ids: Iterable[str] | None,
                   provider: str | None):
    conds = []
    if since is not None:
        conds.append(webhook_inbox.c.received_at >= since)
    if until is not None:
        conds.append(webhook_inbox.c.received_at < until)
    ids = [e for e in (event_ids or []) if e]
    if ids:
        conds.append(webhook_inbox.c.event_id.in_(ids))
    if provider:
        conds.append(webhook_inbox.c.provider == provider)
    return sa.and_(sa.true(), *conds)


def select_for_replay(engine: sa.Engine, *, since: datetime | None = None, until: datetime | None = None,
                      event_ids: Iterable[str] | None = None, provider: str | None = None) -> list[dict]:
    """Inbox events matching every given filter (``since`` inclusive, ``until`` exclusive)."""
    ids = list(event_ids or [])
    if since is None and until is None and not ids and not provider:
        raise ValueError("replay needs at least one filter (since, until, event id or provider)")
    q = (sa.select(webhook_inbox.c.id, webhook_inbox.c.provider, webhook_inbox.c.event_id,
                   webhook_inbox.c.event_type, webhook_inbox.c.received_at, webhook_inbox.c.status)
         .where(_replay_filter(since, until, ids, provider)).order_by(webhook_inbox.c.id))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def mark_pending(engine: sa.Engine, inbox_ids: Iterable[int]) -> int:
    """Set the given inbox rows back to ``pending`` so processing re-runs them (idempotent downstream)."""
    ids = list(inbox_ids)
    if not ids:
        return 0
    n = 0
    with engine.begin() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            n += conn.execute(webhook_inbox.update().where(webhook_inbox.c.id.in_(chunk))
                              .values(status="pending", last_error=None, processed_at=None)).rowcount
    return n
