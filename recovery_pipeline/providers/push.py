"""The push engine: canonical rows -> provider, only what is new or changed since its last
acknowledged push.

* Input streams in chunks (Arrow record batches from DuckDB, or any iterable of row chunks): the
  history is never held in Python at once.
* Per chunk: map rows to wire payloads, hash each payload, compare with ``push_ledger`` and keep
  only new/changed records; cut them into batches within the provider's limit.
* Each batch is sent through the rate-limited, retrying ProviderClient; every request is logged in
  ``request_log`` with the batch id (a stable hash of the batch's record ids + payload hashes), the
  provider's request id, status, attempts and a payload reference (``store_payload``).
* The ledger is written only after the provider acknowledged the batch. A batch that keeps failing
  goes to ``dead_letters`` (payload + last error) and the push goes on with other batches.
* ``redrive`` replays dead letters oldest first, subscriptions before invoices before transactions
  before hand-offs; a guarded status flip makes a second (or concurrent) run a no-op.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from recovery_pipeline.opsstore.models import dead_letters, push_ledger, request_log
from recovery_pipeline.opsstore.store import load_payload, store_payload, upsert, utcnow
from recovery_pipeline.providers.base import (
    ENTITIES,
    PRIMARY_KEYS,
    CardNumberRefused,
    ProviderAdapter,
    iso_utc,
    payload_hash,
    wire_hashed,
)
from recovery_pipeline.providers.http import ProviderClient, SendResult

ENTITY_ORDER = {e: i for i, e in enumerate(ENTITIES)}


@dataclass
class PushSettings:
    batch_size: int = 100
    max_receive_count: int = 5
    concurrency: int = 2  # batches in flight (the shared token bucket keeps the rate)
    preview_rows: int = 5


@dataclass
class BatchOutcome:
    entity: str
    batch_id: str
    records: int
    result: SendResult
    dead_lettered: bool


@dataclass
class PushStats:
    entity: str
    rows_read: int = 0
    not_applicable: int = 0  # rows this provider does not take (e.g. Revtain pulses only)
    unchanged: int = 0
    refused: int = 0  # card-number-like values: never sent
    records_sent: int = 0  # records acknowledged by the provider
    batches: int = 0
    requests: int = 0  # HTTP attempts
    retries: int = 0
    throttled: int = 0  # 429s received
    dead_letters: int = 0
    dead_lettered_records: int = 0
    request_ids: list[str] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)

    def add(self, outcome: BatchOutcome) -> None:
        res = outcome.result
        self.batches += 1
        self.requests += res.attempts
        self.retries += max(0, res.attempts - 1)
        self.throttled += res.throttled
        if outcome.dead_lettered:
            self.dead_letters += 1
            self.dead_lettered_records += outcome.records
        else:
            self.records_sent += outcome.records
            if res.request_id and len(self.request_ids) < 5:
                self.request_ids.append(res.request_id)

    def as_metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("preview", "request_ids")}


def _dumps(body: Any) -> bytes:
    """Compact JSON request body (orjson; the json module for what orjson refuses)."""
    try:
        return orjson.dumps(body, default=str)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(body, separators=(",", ":"), default=str).encode()


def batch_id_for(ids: list[str], hashes: list[str]) -> str:
    """Stable id of a batch: the same records with the same payloads give the same id."""
    h = hashlib.sha256()
    for rid, ph in sorted(zip(ids, hashes, strict=True)):
        h.update(f"{rid}:{ph}\n".encode())
    return h.hexdigest()[:32]


def _month(row: dict[str, Any]) -> str | None:
    if row.get("month"):
        return str(row["month"])
    created = iso_utc(row.get("created_at"))
    return created[:7] if created else None


def _wire_month(item: dict[str, Any]) -> str | None:
    value = item.get("createdAt") or (item.get("invoice") or {}).get("created_at")
    return value[:7] if isinstance(value, str) else None


def _preview(item: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "state", "amount", "currency", "createdAt", "invoiceId", "transactionId")
    return {k: item[k] for k in keys if k in item}


_LEDGER_COLUMNS = ("provider", "entity", "record_id", "payload_hash", "month", "pushed_at",
                   "request_id")
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _ledger_hashes(conn: sa.Connection, provider: str, entity: str, ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    mark = _PLACEHOLDER.get(conn.dialect.paramstyle)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        if mark is None:
            rows = conn.execute(sa.select(push_ledger.c.record_id, push_ledger.c.payload_hash).where(
                push_ledger.c.provider == provider, push_ledger.c.entity == entity,
                push_ledger.c.record_id.in_(chunk)))
        else:  # the same select, without per-call statement building (the push hot path)
            rows = conn.exec_driver_sql(
                "select record_id, payload_hash from push_ledger where provider = {m} and entity = {m}"
                " and record_id in ({marks})".format(m=mark, marks=", ".join([mark] * len(chunk))),
                (provider, entity, *chunk))
        out.update(iter(rows))  # (record_id, payload_hash) pairs
    return out


_LEDGER_UPSERT: dict[str, tuple[str, tuple[str, ...] | None]] = {}


def _ledger_upsert_sql(conn: sa.Connection) -> tuple[str, tuple[str, ...] | None]:
    """The ledger upsert compiled once per dialect: (SQL, parameter order or None for named)."""
    name = conn.dialect.name
    if name not in _LEDGER_UPSERT:
        stmt = upsert(push_ledger, conn, ["provider", "entity", "record_id"],
                      ["payload_hash", "month", "pushed_at", "request_id"])
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(_LEDGER_COLUMNS))
        order = tuple(compiled.positiontup) if compiled.positiontup else None
        _LEDGER_UPSERT[name] = (str(compiled), order)
    return _LEDGER_UPSERT[name]


def _write_ledger(conn: sa.Connection, provider: str, entity: str, ids: list[str],
                  hashes: list[str], months: list[str | None], request_id: str | None) -> None:
    """Upsert the ledger rows of acknowledged records: one executemany on the driver, with the
    statement compiled once and ``pushed_at`` (the same for every row) bound-processed once."""
    if not ids:
        return
    now = utcnow()
    proc = push_ledger.c.pushed_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    pushed = proc(now) if proc else now
    sql, order = _ledger_upsert_sql(conn)
    if order == _LEDGER_COLUMNS:
        rows: list = [(provider, entity, i, h, m, pushed, request_id)
                      for i, h, m in zip(ids, hashes, months, strict=True)]
    else:
        rows = [{"provider": provider, "entity": entity, "record_id": i, "payload_hash": h,
                 "month": m, "pushed_at": pushed, "request_id": request_id}
                for i, h, m in zip(ids, hashes, months, strict=True)]
        if order is not None:
            rows = [tuple(r[k] for k in order) for r in rows]
    conn.exec_driver_sql(sql, rows)


def _log_request(conn: sa.Connection, provider: str, endpoint: str, batch_id: str | None,
                 res: SendResult, records: int, payload_ref: str | None, started) -> None:
    conn.execute(request_log.insert().values(
        provider=provider, endpoint=endpoint, batch_id=batch_id, request_id=res.request_id,
        status_code=res.status, attempts=res.attempts, records=records, payload_ref=payload_ref,
        error=res.error, started_at=started, finished_at=utcnow()))


def _dead_letter(conn: sa.Connection, kind: str, provider: str, entity: str | None, ref: str,
                 payload_ref: str | None, attempts: int, error: str | None) -> None:
    stmt = upsert(dead_letters, conn, ["kind", "provider", "ref"],
                  ["entity", "payload_ref", "attempts", "last_error", "status", "redriven_at"])
    conn.execute(stmt, {"kind": kind, "provider": provider, "entity": entity, "ref": ref,
                        "payload_ref": payload_ref, "attempts": attempts, "last_error": error,
                        "created_at": utcnow(), "status": "dead", "redriven_at": None})


def send_batch(engine: sa.Engine, client: ProviderClient, entity: str, items: list[dict[str, Any]],
               ids: list[str], hashes: list[str], months: list[str | None],
               max_receive_count: int) -> BatchOutcome:
    """Send one batch; ledger on ack, dead letter when it keeps failing."""
    adapter, provider = client.adapter, client.adapter.name
    path = adapter.ingest_path(entity)
    body = _dumps(adapter.batch_body(entity, items))
    bid = batch_id_for(ids, hashes)
    started = utcnow()
    client.policy.max_attempts = max_receive_count
    res = client.send("POST", path, content=body)
    # One transaction after the response: payload (content-addressed, so nothing refers to it
    # before this commit), request log, then the ledger (ack) or a dead letter.
    with engine.begin() as conn:
        ref = store_payload(conn, body.decode())
        _log_request(conn, provider, path, bid, res, len(items), ref, started)
        if res.ok:
            _write_ledger(conn, provider, entity, ids, hashes, months, res.request_id)
        else:
            _dead_letter(conn, "push", provider, entity, bid, ref, res.attempts, res.error)
    return BatchOutcome(entity, bid, len(items), res, dead_lettered=not res.ok)


def push_entity(engine: sa.Engine, client: ProviderClient, entity: str,
                chunks: Iterable[list[dict[str, Any]]], settings: PushSettings | None = None,
                on_batch: Callable[[BatchOutcome], None] | None = None) -> PushStats:
    """Push the new/changed rows of one entity. ``chunks`` yields lists of canonical rows."""
    settings = settings or PushSettings()
    adapter: ProviderAdapter = client.adapter
    stats = PushStats(entity)
    path = adapter.ingest_path(entity)
    if path is None:
        for chunk in chunks:
            stats.rows_read += len(chunk)
            stats.not_applicable += len(chunk)
        return stats
    size = max(1, settings.batch_size)
    if adapter.default_batch_limit == 1:  # one record per request (Revtain pulses)
        size = 1
    in_flight: set[Future] = set()

    def drain(block_until: int) -> None:
        while len(in_flight) > block_until:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in done:
                in_flight.discard(fut)
                outcome = fut.result()
                stats.add(outcome)
                if on_batch is not None:
                    on_batch(outcome)

    pending: list[tuple[dict[str, Any], str, str, str | None]] = []

    def submit(batch: list[tuple[dict[str, Any], str, str, str | None]]) -> None:
        batch_items = [b[0] for b in batch]
        if len(stats.preview) < settings.preview_rows:
            stats.preview += [_preview(it) for it in
                              batch_items[:settings.preview_rows - len(stats.preview)]]
        drain(max(1, settings.concurrency) * 2 - 1)
        in_flight.add(pool.submit(
            send_batch, engine, client, entity, batch_items, [b[1] for b in batch],
            [b[2] for b in batch], [b[3] for b in batch], settings.max_receive_count))

    def process(chunk: list[dict[str, Any]]) -> None:
        """Map, hash and compare one slice of rows with the ledger; submit full batches."""
        stats.rows_read += len(chunk)
        items, ids, hashes, months = [], [], [], []
        for row in chunk:
            if not adapter.include(entity, row):
                stats.not_applicable += 1
                continue
            try:
                item, h = wire_hashed(entity, adapter, row)
            except CardNumberRefused as exc:
                stats.refused += 1
                with engine.begin() as conn:  # no payload: it would hold the card number
                    _dead_letter(conn, "push", adapter.name, entity,
                                 f"refused:{entity}:{adapter.record_id(entity, row)}", None, 0,
                                 str(exc))
                continue
            items.append(item)
            ids.append(adapter.record_id(entity, row))
            hashes.append(h)
            months.append(_month(row))
        with engine.connect() as conn:
            known = _ledger_hashes(conn, adapter.name, entity, ids)
        for i, (rid, h) in enumerate(zip(ids, hashes, strict=True)):
            if known.get(rid) == h:
                stats.unchanged += 1
            else:
                pending.append((items[i], rid, h, months[i]))
        while len(pending) >= size:
            submit(pending[:size])
            del pending[:size]

    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency),
                            thread_name_prefix=f"push-{entity}") as pool:
        try:
            step = max(size * 2, 200)  # map + look up in small slices: the first send goes out early
            for big in chunks:
                for lo in range(0, len(big), step):
                    process(big[lo:lo + step])
            if pending:
                submit(pending)
                pending.clear()
            drain(0)
        except BaseException:
            for fut in in_flight:
                fut.cancel()
            raise
    return stats


def push_all(engine: sa.Engine, client: ProviderClient,
             read: Callable[[str], Iterable[list[dict[str, Any]]]],
             settings: PushSettings | None = None,
             on_batch: Callable[[BatchOutcome], None] | None = None) -> dict[str, PushStats]:
    """Subscriptions, then invoices, then transactions (each fully before the next)."""
    return {e: push_entity(engine, client, e, read(e), settings, on_batch) for e in ENTITIES}


# --- reading the canonical tables -----------------------------------------------------------------

# Fixed statements (table names come from this whitelist, never from data).
CANONICAL_SELECT = {
    "subscriptions": "select * from canonical.subscriptions order by month, subscription_id",
    "invoices": "select * from canonical.invoices order by month, invoice_id",
    "transactions": (
        "select t.*, i.created_at as invoice_created_at, s.activated_at as subscription_start"
        " from canonical.transactions t"
        " left join canonical.invoices i on i.invoice_id = t.invoice_id"
        " left join canonical.subscriptions s on s.subscription_id = t.subscription_id"
        " order by t.month, t.transaction_id"),
}


def iter_canonical_duckdb(con, entity: str, chunk_rows: int = 10_000) -> Iterator[list[dict]]:
    """Stream one canonical table from DuckDB as Arrow record batches -> row chunks."""
    if entity not in CANONICAL_SELECT:
        raise ValueError(f"unknown entity {entity}")
    reader = con.sql(CANONICAL_SELECT[entity]).to_arrow_reader(chunk_rows)
    for rb in reader:
        if rb.num_rows:
            yield rb.to_pylist()


def iter_canonical_sqlalchemy(engine: sa.Engine, entity: str,
                              chunk_rows: int = 10_000) -> Iterator[list[dict]]:
    """Stream one canonical table from a SQL warehouse (PostgreSQL) with a server-side cursor."""
    if entity not in CANONICAL_SELECT:
        raise ValueError(f"unknown entity {entity}")
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            sa.text(CANONICAL_SELECT[entity]))
        for part in result.mappings().partitions(chunk_rows):
            yield [dict(r) for r in part]


# --- dead letters ------------------------------------------------------------------------------------

@dataclass
class RedriveStats:
    considered: int = 0
    redriven: int = 0
    still_dead: int = 0
    skipped: int = 0  # claimed by another run, or not ours
    records: int = 0


def redrive(engine: sa.Engine, client: ProviderClient, *, handoff: Callable[[dict], bool] | None = None,
            stale_after: timedelta = timedelta(minutes=10)) -> RedriveStats:
    """Replay this provider's dead letters: oldest first, subscriptions -> invoices -> transactions,
    then hand-offs. Each row is claimed with a guarded UPDATE (status dead -> redriving) so two
    runs never replay the same row; success flips it to ``redriven``, failure back to ``dead``."""
    adapter, provider = client.adapter, client.adapter.name
    stats = RedriveStats()
    order = sa.case({e: i for i, e in enumerate(ENTITIES)}, value=dead_letters.c.entity, else_=9)
    kind_order = sa.case({"push": 0, "handoff": 1}, value=dead_letters.c.kind, else_=2)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(dead_letters).where(
            dead_letters.c.provider == provider, dead_letters.c.kind.in_(("push", "handoff")),
            dead_letters.c.payload_ref.is_not(None),
            sa.or_(dead_letters.c.status == "dead", sa.and_(
                dead_letters.c.status == "redriving",
                dead_letters.c.redriven_at < utcnow() - stale_after)),
        ).order_by(kind_order, order, dead_letters.c.created_at, dead_letters.c.id)).mappings().all()
    for row in rows:
        stats.considered += 1
        with engine.begin() as conn:
            claimed = conn.execute(dead_letters.update().where(
                dead_letters.c.id == row["id"], dead_letters.c.status == row["status"],
                sa.or_(dead_letters.c.redriven_at.is_(None) if row["redriven_at"] is None else
                       dead_letters.c.redriven_at == row["redriven_at"]),
            ).values(status="redriving", redriven_at=utcnow())).rowcount
        if claimed != 1:
            stats.skipped += 1
            continue
        with engine.connect() as conn:
            body = load_payload(conn, row["payload_ref"])
        ok, attempts, error = False, 0, None
        if row["kind"] == "push" and body is not None:
            path = adapter.ingest_path(row["entity"])
            started = utcnow()
            res = client.send("POST", path, content=body.encode())
            items = adapter.batch_items(row["entity"], json.loads(body))
            ok, attempts, error = res.ok, res.attempts, res.error
            with engine.begin() as conn:
                _log_request(conn, provider, path, row["ref"], res, len(items), row["payload_ref"],
                             started)
                if ok:
                    ids = [adapter.wire_record_id(row["entity"], it) for it in items]
                    months = [_wire_month(it) for it in items]
                    _write_ledger(conn, provider, row["entity"], ids,
                                  [payload_hash(it) for it in items], months, res.request_id)
                    stats.records += len(items)
        elif row["kind"] == "handoff" and body is not None:
            if handoff is None:
                error = "hand-off dead letters need a handoff callable (recovery-pipeline redrive)"
            else:
                ok = handoff(json.loads(body))
                attempts = 1
                error = None if ok else "hand-off still failing"
        with engine.begin() as conn:
            if ok:
                conn.execute(dead_letters.update().where(
                    dead_letters.c.id == row["id"], dead_letters.c.status == "redriving").values(
                    status="redriven", redriven_at=utcnow()))
                stats.redriven += 1
            else:
                conn.execute(dead_letters.update().where(
                    dead_letters.c.id == row["id"], dead_letters.c.status == "redriving").values(
                    status="dead", redriven_at=None, attempts=row["attempts"] + attempts,
                    last_error=error or "payload missing from the payload store"))
                stats.still_dead += 1
    return stats


def primary_key(entity: str) -> str:
    return PRIMARY_KEYS[entity]
