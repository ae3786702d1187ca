"""The webhook inbox: event id/type per provider, the group-commit SQL, and replay selection.

:class:`Committer` inserts a whole group of rows in ONE transaction (insert-or-ignore on the
unique (provider, event_id)) and commits (SQLite ``synchronous=FULL`` in WAL, or Postgres); it
tells, per row, stored now or already stored (a duplicate). If the commit fails it raises, so the
writer acknowledges nothing that is not durably stored. Several receiver processes may share the
store: dedupe is the unique constraint, never check-then-insert. The writers that gather
concurrent requests into those groups live in :mod:`recovery_pipeline.webhooks.writers`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.opsstore.store import utcnow
from recovery_pipeline.webhooks import redact, signing

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


# --- admission: verify, then parse, then redact ------------------------------------------------------

@dataclass(frozen=True)
class WebhookAuth:
    """What verification needs: provider -> signing secret (Slicker: the bearer token), and
    Slicker's optional basic ``user:password``. Never logged (repr=False)."""

    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    slicker_basic: str | None = field(default=None, repr=False)


def admit(provider: str, headers: dict[str, str], body: bytes, auth: WebhookAuth) -> tuple:
    """Decide one delivery: ``("accepted", inbox row)`` or ``("rejected", status, reason)``.

    Verifies the raw bytes first (401) and parses only what verified (400). Card numbers are never
    stored or logged (DESIGN.md): they are masked in the body, ids and headers that are kept, and
    credential/signature headers are redacted. ``headers`` must have lowercased names.
    """
    try:
        signing.verify(provider, headers, body, auth.secrets.get(provider),
                       token=auth.secrets.get("slicker"), basic=auth.slicker_basic)
    except signing.SignatureError as exc:
        return ("rejected", 401, exc.reason)
    try:
        event_id, event_type = extract_event(provider, headers, body)
    except BadPayload as exc:
        return ("rejected", 400, str(exc))
    stored_body, masked = redact.mask_card_numbers_in_body(body)
    event_id = redact.mask_card_numbers_in_text(event_id)
    event_type = redact.mask_card_numbers_in_text(event_type)
    if masked:
        log.warning("webhook card number masked before storing provider=%s", provider)
    safe_headers = redact.mask_card_numbers_in_values(signing.redact_headers(headers))
    return ("accepted", inbox_row(provider, event_id, event_type, orjson.dumps(safe_headers).decode(),
                                  stored_body))


# --- group commit ---------------------------------------------------------------------------------

INBOX_COLUMNS = ("provider", "event_id", "event_type", "received_at", "headers_json", "body", "status",
                 "attempts")
REJECTION_COLUMNS = ("provider", "status_code", "reason", "received_at")


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


class Committer:
    """Commits one group of inbox rows (and rejection records) in ONE transaction.

    Owns its DBAPI connection; used by whichever writer runs the commits (the writer process or
    the writer thread, see :mod:`recovery_pipeline.webhooks.writers`). Not thread-safe: one
    caller at a time.
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._sql = _SqlBatch(engine)
        self._raw = None  # the DBAPI connection (SQLAlchemy pool record)
        self._lock_path = _sqlite_lock_path(engine)
        self._lock_fd: int | None = None

    def commit(self, inbox_rows: list[dict], rejections: list[dict]) -> list[bool]:
        """Insert-or-ignore ``inbox_rows`` and insert ``rejections``; commit durably. Returns, per
        inbox row, True when that row was stored now (the first occurrence of a new key) and
        False when it is a duplicate. Raises on any failure (nothing of the group is stored)."""
        keys = [(r["provider"], r["event_id"]) for r in inbox_rows]
        firsts: dict[tuple[str, str], int] = {}
        for i, key in enumerate(keys):  # the first occurrence of a key is the candidate insert
            firsts.setdefault(key, i)
        try:
            with self._interprocess_lock():
                inserted = self._sql.write(self._connection(), [inbox_rows[i] for i in firsts.values()],
                                           rejections)
        except BaseException:
            self.close()  # a fresh connection next time (the store may come back)
            raise
        return [key in inserted and firsts[key] == i for i, key in enumerate(keys)]

    def commit_deliveries(self, auth: WebhookAuth, deliveries: list[tuple[str, dict, bytes]],
                          rejections: list[dict]) -> tuple[list[list], bool]:
        """Admit each ``(provider, headers, raw body)`` delivery (:func:`admit`), then store the
        accepted rows and a rejection record per refused one, with ``rejections``, in ONE commit.

        Returns ``(results, committed)``; per delivery ``["stored", stored_now, event_id]``,
        ``["rejected", status, reason]`` (a verdict stands even when recording it failed), or
        ``["unavailable", error]`` when the commit failed (nothing of the group is stored).
        """
        verdicts = [admit(p, h, b, auth) for p, h, b in deliveries]
        rows = [v[1] for v in verdicts if v[0] == "accepted"]
        refused = [rejection_row(p, v[1], v[2]) for (p, _, _), v in zip(deliveries, verdicts, strict=True)
                   if v[0] == "rejected"]
        try:
            stored = iter(self.commit(rows, rejections + refused))
        except Exception as exc:  # noqa: BLE001 - every failure means "not stored"
            msg = str(exc).splitlines()[0][:200] if str(exc) else ""
            log.error("inbox commit failed for %d rows: %s: %s", len(rows) + len(rejections) + len(refused),
                      type(exc).__name__, msg)
            return ([["unavailable", type(exc).__name__] if v[0] == "accepted" else ["rejected", v[1], v[2]]
                     for v in verdicts], False)
        return ([["stored", next(stored), v[1]["event_id"]] if v[0] == "accepted"
                 else ["rejected", v[1], v[2]] for v in verdicts], True)

    def _connection(self):
        if self._raw is None:
            self._raw = self.engine.raw_connection()
            if self._sql.dialect == "sqlite":
                self._raw.driver_connection.isolation_level = None  # we issue BEGIN/COMMIT
        return self._raw.driver_connection

    @contextlib.contextmanager
    def _interprocess_lock(self):
        """SQLite file stores: writers take turns on an flock before BEGIN IMMEDIATE. The kernel
        wakes the next writer the moment the lock is released, where SQLite's busy handler would
        sleep and poll (tens of ms per wait). Postgres needs no such lock."""
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

    def close(self) -> None:
        if self._raw is not None:
            try:
                self._raw.invalidate()  # never return a connection in an unknown state to the pool
            except Exception:  # noqa: BLE001
                pass
            self._raw = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


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
