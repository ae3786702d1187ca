"""Execute pending recovery decisions in the billing system, leaving an audit trail.

Work comes from ops-store tables: ``webhook_inbox`` (verified provider webhooks; Stripe rows are
billing data and are left to the Stripe connector), ``recovery_actions`` (polled) and ``handoffs``
whose provider response carried a ``cardUpdateUrl`` (forwarded once). Each pending
row is parsed into an ``Instruction`` and, in order (financial first: mark paid, retry; then state
updates; oldest first), goes through:

1. kill switch (re-read before every action): on -> stop, everything stays pending;
2. ``skip`` kinds (unknown suggestion / event type): audit row ``skipped``, source ``skipped``;
3. a retry whose ideal time is in the future: stays pending (``waiting``);
4. the claim: insert-or-ignore into ``executed_actions`` on (provider, source_event_id). If a final
   row already exists the delivery is a duplicate: source ``processed`` with a ``duplicate:``
   marker in ``last_error``, no second action;
5. red flags -> ``manual_review`` (unknown invoice, already-paid invoice except mark-paid which is a
   no-op, invoice not open, hard decline asked to retry, repeated idempotency collisions);
6. mode: ``shadow`` (recorded, nothing executed), ``live``, or ``cohort`` (live inside, shadow
   outside); a live action carries the idempotency key ``"{provider}:{source_event_id}"``;
7. failures: attempts + 1, ``failed`` (picked up again next run); after ``max_receive_count`` the
   event moves to ``dead_letters`` (kind ``event``, payload kept) and its source row is ``dead``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from recovery_pipeline.execution import instructions as ins
from recovery_pipeline.execution.billing import (
    BillingConflict,
    BillingNotFound,
    BillingStateConflict,
    BillingSystem,
    invoice_context,
    last_decline_code,
)
from recovery_pipeline.execution.instructions import Instruction, InstructionError
from recovery_pipeline.execution.killswitch import is_kill_switch_on
from recovery_pipeline.execution.policy import ExecutionPolicy, decide_mode, retry_delay_seconds
from recovery_pipeline.opsstore.models import (
    dead_letters,
    executed_actions,
    handoffs,
    manual_review,
    recovery_actions,
    webhook_inbox,
)
from recovery_pipeline.opsstore.store import insert_or_ignore, store_payload, utcnow

PENDING_STATUSES = ("pending", "failed")
FINAL_RESULTS = frozenset({"executed", "shadowed", "noop", "skipped", "review", "dead"})
# Providers whose inbox rows are instructions (Stripe rows are billing data for the Stripe connector).
NON_INSTRUCTION_PROVIDERS = ("stripe",)
DUPLICATE_MARKER = "duplicate:"
KILL_SWITCH_RECHECK_SECONDS = 1.0
CLAIM_LEASE_SECONDS = 600.0  # a "running" claim younger than this belongs to a live run
BUSY = ("busy",)


@dataclass
class WorkItem:
    table: str  # inbox | poll
    key: Any  # inbox id | action_id
    provider: str
    event_id: str
    event_type: str | None
    body: str
    attempts: int
    received_at: datetime | None
    instruction: Instruction | None = None
    parse_error: str | None = None
    next_attempt_at: datetime | None = None  # failed before: not before this time (backoff)

    def is_due(self, now: datetime) -> bool:
        if self.next_attempt_at is not None and self.next_attempt_at > now:
            return False
        return self.instruction is None or self.instruction.is_due(now)

    @property
    def sort_key(self) -> tuple:
        if self.instruction is None:
            return (0, self.received_at or utcnow(), str(self.key))
        return (*self.instruction.sort_key(), self.table, str(self.key))


@dataclass
class ExecutionReport:
    paused: bool = False
    kill_switch_source: str | None = None
    considered: int = 0
    waiting: int = 0
    duplicates: int = 0
    busy: int = 0  # held by a concurrent run
    dead_lettered: int = 0
    failed: int = 0
    results: Counter = field(default_factory=Counter)  # result -> n
    actions: Counter = field(default_factory=Counter)  # "kind/mode/result" -> n
    order: list[str] = field(default_factory=list)  # source_event_ids in processing order

    def as_metadata(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "considered": self.considered,
            "waiting": self.waiting,  # ideal retry time not reached, or retry backoff
            "duplicates": self.duplicates,
            "held_by_another_run": self.busy,
            "failed_attempts": self.failed,
            "dead_lettered": self.dead_lettered,
            "results": dict(self.results),
            "actions": dict(self.actions),
        }


# --- loading pending work -----------------------------------------------------------------------
def _parse(item: WorkItem, policy: ExecutionPolicy) -> WorkItem:
    try:
        if item.table == "inbox":
            item.instruction = ins.instruction_from_inbox(
                item.provider, item.event_id, item.body, event_type=item.event_type,
                received_at=item.received_at, standard_type_map=policy.standard_type_map)
        else:
            action = ins.load_body(item.body)
            action.setdefault("requestId", item.event_id)
            action["action_id"] = item.event_id
            item.instruction = ins.instruction_from_polled_action(
                action, provider=item.provider, received_at=item.received_at)
    except InstructionError as exc:
        item.parse_error = str(exc)
    return item


def load_pending_work(engine: sa.Engine, policy: ExecutionPolicy, *, limit: int = 10_000) -> list[WorkItem]:
    """Every pending (or failed, to be retried) inbox row and polled action, parsed and ordered."""
    items: list[WorkItem] = []
    with engine.connect() as conn:
        for r in conn.execute(
            sa.select(webhook_inbox.c.id, webhook_inbox.c.provider, webhook_inbox.c.event_id,
                      webhook_inbox.c.event_type, webhook_inbox.c.body, webhook_inbox.c.attempts,
                      webhook_inbox.c.received_at)
            .where(webhook_inbox.c.status.in_(PENDING_STATUSES),
                   webhook_inbox.c.provider.not_in(NON_INSTRUCTION_PROVIDERS))
            .order_by(webhook_inbox.c.id).limit(limit)
        ):
            items.append(WorkItem("inbox", r.id, r.provider, r.event_id, r.event_type, r.body,
                                  r.attempts or 0, ins.parse_time(r.received_at)))
        for r in conn.execute(
            sa.select(recovery_actions)
            .where(recovery_actions.c.status.in_(PENDING_STATUSES))
            .order_by(recovery_actions.c.polled_at, recovery_actions.c.action_id).limit(limit)
        ):
            items.append(WorkItem("poll", r.action_id, r.provider, r.action_id, "recovery_action",
                                  r.body, r.attempts or 0, ins.parse_time(r.polled_at)))
        items.extend(_handoff_links(conn, limit))
    items = [i if i.table == "handoff" else _parse(i, policy) for i in items]
    _attach_backoff(engine, items, policy)
    items.sort(key=lambda i: i.sort_key)
    return items


def _handoff_links(conn: sa.Connection, limit: int) -> list[WorkItem]:
    """Hand-offs whose provider response carried a ``cardUpdateUrl`` (customer-present fixable
    decline) and whose link was not forwarded yet: the audit row is the marker."""
    ea, h = executed_actions, handoffs
    source_id = sa.literal("handoff:") + h.c.idempotency_key
    q = (sa.select(h, ea.c.attempts.label("audit_attempts"))
         .select_from(h.outerjoin(ea, sa.and_(ea.c.provider == h.c.provider,
                                              ea.c.source_event_id == source_id)))
         .where(h.c.card_update_url.is_not(None), h.c.card_update_url != "",
                sa.or_(ea.c.id.is_(None), ea.c.result.in_(("failed", "running"))))
         .order_by(h.c.updated_at).limit(limit))
    out = []
    for r in conn.execute(q):
        received = ins.parse_time(r.updated_at)
        item = WorkItem("handoff", r.idempotency_key, r.provider, f"handoff:{r.idempotency_key}",
                        "handoff.card_update_url", json.dumps({"cardUpdateUrl": r.card_update_url,
                                                               "invoiceId": r.invoice_id}),
                        r.audit_attempts or 0, received)
        item.instruction = Instruction(
            provider=r.provider, source="handoff", source_event_id=f"handoff:{r.idempotency_key}",
            kind=ins.FORWARD_CARD_UPDATE_LINK, invoice_id=r.invoice_id,
            transaction_id=r.provider_transaction_id, card_update_url=r.card_update_url,
            raw_type="handoff.cardUpdateUrl", received_at=received)
        out.append(item)
    return out


def _attach_backoff(engine: sa.Engine, items: list[WorkItem], policy: ExecutionPolicy) -> None:
    retried = [i for i in items if i.attempts > 0 and i.instruction is not None]
    if not retried:
        return
    ea = executed_actions
    with engine.connect() as conn:
        for item in retried:
            inst = item.instruction
            last = conn.execute(sa.select(ea.c.executed_at).where(
                ea.c.provider == inst.provider, ea.c.source_event_id == inst.source_event_id)
            ).scalar_one_or_none()
            last = ins.parse_time(last)
            if last is not None:
                item.next_attempt_at = last + timedelta(seconds=retry_delay_seconds(policy, item.attempts))


def pending_summary(engine: sa.Engine, policy: ExecutionPolicy, now: datetime | None = None) -> dict[str, Any]:
    """What a run would do now: due vs waiting items and a digest of the due set (for run keys).

    The digest changes when a new item arrives, a waiting retry becomes due, or a failed item's
    attempt count moves, and stays put otherwise, so a sensor can derive a deterministic run key.
    """
    now = now or utcnow()
    due, waiting = [], 0
    for item in load_pending_work(engine, policy):
        if not item.is_due(now):
            waiting += 1
            continue
        due.append(f"{item.table}:{item.key}:{item.attempts}")
    digest = hashlib.sha256("\n".join(sorted(due)).encode()).hexdigest()[:16] if due else None
    return {"due": len(due), "waiting": waiting, "digest": digest}


# --- the run ------------------------------------------------------------------------------------
CLAIM_CHUNK = 50  # audit-row claims taken per transaction
FLUSH_EVERY = 100  # buffered result writes per transaction
FLUSH_SECONDS = 1.0


class _Writes:
    """Result writes, committed together (one fsync for many events).

    Safe to defer: an action executed whose result is not committed yet (crash) leaves its claim
    ``running``; the next run re-takes it and the billing system answers the same idempotency key
    with its stored result, so nothing is done twice.
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.pending: list[Callable[[sa.Connection], None]] = []
        self.last = time.monotonic()

    def add(self, fn: Callable[[sa.Connection], None]) -> None:
        self.pending.append(fn)
        if len(self.pending) >= FLUSH_EVERY or time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            with self.engine.begin() as conn:
                for fn in self.pending:
                    fn(conn)
            self.pending.clear()
        self.last = time.monotonic()


def execute_pending(
    engine: sa.Engine,
    billing: BillingSystem,
    policy: ExecutionPolicy,
    *,
    now: datetime | None = None,
    env: Mapping[str, str] | None = None,
    limit: int | None = None,
    select: Callable[[Instruction], bool] | None = None,
) -> ExecutionReport:
    """Drain due work once (up to ``limit`` or ``policy.batch_size`` actions). Safe to run twice.

    ``select`` restricts the run to matching instructions (the launch scenarios use it to act on
    their own invoices only); everything else is left untouched. The kill switch is read before
    the run and re-read at least every ``KILL_SWITCH_RECHECK_SECONDS``; when it is on the run stops
    and whatever it had not acted on stays pending.
    """
    report = ExecutionReport()
    now = now or utcnow()
    budget = limit or policy.batch_size
    writes = _Writes(engine)
    if is_kill_switch_on(engine, env):
        report.paused = True
        return report
    switch_checked_at = time.monotonic()
    due: list[WorkItem] = []
    for item in load_pending_work(engine, policy):
        if select is not None and (item.instruction is None or not select(item.instruction)):
            continue
        report.considered += 1
        if item.parse_error is not None:
            writes.add(_dead_letter_write(item, f"unreadable payload: {item.parse_error}", report, now))
            continue
        inst = item.instruction
        assert inst is not None
        if inst.kind == ins.SKIP:
            writes.add(_final_write(item, inst, result="skipped", mode="shadow", now=now,
                                    detail=inst.detail, report=report, source_status="skipped"))
            continue
        if not item.is_due(now):
            report.waiting += 1
            continue
        if len(due) < budget:
            due.append(item)
    writes.flush()
    for start in range(0, len(due), CLAIM_CHUNK):
        chunk = due[start:start + CLAIM_CHUNK]
        claims = _claim_many(engine, chunk, now)
        for pos, item in enumerate(chunk):
            if time.monotonic() - switch_checked_at >= KILL_SWITCH_RECHECK_SECONDS:
                writes.flush()
                if is_kill_switch_on(engine, env):
                    report.paused = True
                    _release(engine, [(i, claims[id(i)]) for i in chunk[pos:]])
                    return report
                switch_checked_at = time.monotonic()
            claim = claims[id(item)]
            if claim is None:
                report.duplicates += 1
                continue
            if claim is BUSY:
                report.busy += 1
                continue
            _run_one(engine, billing, policy, item, claim[0], writes, report, now)
        writes.flush()
    return report


def _run_one(engine: sa.Engine, billing: BillingSystem, policy: ExecutionPolicy, item: WorkItem,
             attempt: int, writes: _Writes, report: ExecutionReport, now: datetime) -> None:
    inst = item.instruction
    assert inst is not None
    report.order.append(inst.source_event_id)
    try:
        outcome = _decide_and_act(engine, billing, policy, inst, retaken=attempt > 1)
    except BillingStateConflict as exc:
        outcome = _review(inst, None, f"invoice state changed before the action: {exc}")
    except BillingConflict as exc:
        if attempt >= policy.max_idempotency_collisions:
            outcome = _review(inst, None, f"repeated idempotency collisions ({attempt}): {exc}")
        else:
            writes.add(_fail_write(item, inst, f"{type(exc).__name__}: {exc}", policy, report, now))
            return
    except Exception as exc:  # noqa: BLE001 - any failure counts an attempt, the run goes on
        writes.add(_fail_write(item, inst, f"{type(exc).__name__}: {exc}", policy, report, now))
        return
    writes.add(_finish_write(item, inst, outcome, report, now))


def _audit_values(inst: Instruction) -> dict[str, Any]:
    instruction = inst.raw_type or inst.kind
    if inst.recommended_action:
        instruction = f"{instruction} ({inst.recommended_action})"
    if inst.delivery_id:
        instruction = f"{instruction} [event {inst.delivery_id}]"
    return {
        "source": inst.source,
        "source_event_id": inst.source_event_id,
        "provider": inst.provider,
        "invoice_id": inst.invoice_id,
        "subscription_id": inst.subscription_id,
        "customer_id": inst.customer_id,
        "instruction": instruction[:128],
        "business_action": inst.kind,
        "received_at": inst.received_at or utcnow(),
    }


def _claim_many(engine: sa.Engine, items: list[WorkItem], now: datetime) -> dict[int, tuple | None]:
    """Insert-or-ignore each audit row as the claim, in one transaction.

    Per item (by ``id``): ``(attempt, previous)`` where ``previous`` is None for a new claim or the
    (result, attempts) it re-took; ``None`` for a duplicate (already final: its source row is
    marked processed with the duplicate marker right here); ``BUSY`` when another run holds a
    live claim on it (``running`` for less than ``CLAIM_LEASE_SECONDS``: left alone). A
    ``running`` claim older than that is a run that died: it is re-taken.
    """
    ea = executed_actions
    out: dict[int, tuple | None] = {}
    seen: dict[tuple[str, str], int] = {}
    claimed_at = utcnow()  # wall clock: the lease is about real time, whatever ``now`` says
    lease_start = claimed_at - timedelta(seconds=CLAIM_LEASE_SECONDS)
    with engine.begin() as conn:
        for item in items:
            inst = item.instruction
            assert inst is not None
            key = (inst.provider, inst.source_event_id)
            if key in seen:  # the same decision twice in one batch (webhook + poll)
                _set_source(conn, item, "processed", processed_at=now,
                            last_error=f"{DUPLICATE_MARKER} same decision as {inst.source_event_id} "
                                       "in this run")
                out[id(item)] = None
                continue
            seen[key] = 1
            # RETURNING, not rowcount: psycopg2 reports -1 for INSERT ... ON CONFLICT DO NOTHING
            inserted = conn.execute(insert_or_ignore(ea, conn).values(
                **_audit_values(inst), mode="pending", result="running", attempts=1,
                executed_at=claimed_at).returning(ea.c.id)).first() is not None
            if inserted:
                out[id(item)] = (1, None)
                continue
            row = conn.execute(sa.select(ea.c.id, ea.c.result, ea.c.attempts, ea.c.executed_at).where(
                ea.c.provider == inst.provider, ea.c.source_event_id == inst.source_event_id)).one()
            held_since = ins.parse_time(row.executed_at)
            if row.result == "running" and held_since is not None and held_since > lease_start:
                out[id(item)] = BUSY  # another run holds it (its lease has not expired)
                continue
            if row.result in FINAL_RESULTS:
                _set_source(conn, item, "processed", processed_at=now,
                            last_error=f"{DUPLICATE_MARKER} already processed as executed_actions "
                                       f"#{row.id} ({row.result})")
                out[id(item)] = None
                continue
            attempts = (row.attempts or 0) + 1
            conn.execute(ea.update().where(ea.c.id == row.id).values(
                result="running", attempts=attempts, executed_at=claimed_at))
            out[id(item)] = (attempts, (row.result, row.attempts))
    return out


def _release(engine: sa.Engine, claimed: list[tuple[WorkItem, tuple | None]]) -> None:
    """Give back claims taken but not acted on (the kill switch went on mid-run)."""
    ea = executed_actions
    with engine.begin() as conn:
        for item, claim in claimed:
            if claim is None:
                continue
            inst = item.instruction
            where = (ea.c.provider == inst.provider, ea.c.source_event_id == inst.source_event_id,
                     ea.c.result == "running")
            if claim is BUSY:
                continue
            previous = claim[1]
            if previous is None:
                conn.execute(ea.delete().where(*where))
            else:
                conn.execute(ea.update().where(*where).values(result=previous[0], attempts=previous[1]))


def _set_source(conn: sa.Connection, item: WorkItem, status: str, **values: Any) -> None:
    if item.table == "handoff":  # no status of its own: the audit row is the marker
        return
    if item.table == "inbox":
        conn.execute(webhook_inbox.update().where(webhook_inbox.c.id == item.key)
                     .values(status=status, **values))
    else:
        values.pop("processed_at", None)
        conn.execute(recovery_actions.update().where(recovery_actions.c.provider == item.provider,
                                                     recovery_actions.c.action_id == item.key)
                     .values(status=status, **values))


def _resolve_invoice(engine: sa.Engine, inst: Instruction) -> str | None:
    if inst.transaction_id and inst.provider == "revtain":
        with engine.connect() as conn:
            found = conn.execute(sa.select(handoffs.c.invoice_id).where(
                handoffs.c.provider_transaction_id == inst.transaction_id).limit(1)).scalar_one_or_none()
        if found:
            return found
    return inst.invoice_id


def _state_json(invoice: dict[str, Any] | None) -> str | None:
    return None if invoice is None else json.dumps(invoice, default=str, sort_keys=True)


def _review(inst: Instruction, invoice: dict | None, reason: str, mode: str = "shadow",
            invoice_id: str | None = None) -> dict[str, Any]:
    """A red flag: the finish step puts it on the manual-review list instead of executing."""
    return {"result": "review", "mode": mode, "before": invoice, "after": invoice,
            "detail": reason, "invoice_id": invoice_id or inst.invoice_id}


def _decide_and_act(engine: sa.Engine, billing: BillingSystem, policy: ExecutionPolicy,
                    inst: Instruction, retaken: bool = False) -> dict[str, Any]:
    """Red flags, mode, then the action. ``retaken``: an earlier attempt may have reached the billing
    system (timeout, crash before the result was recorded), so a live re-attempt skips the
    invoice-state checks and repeats the call with the same idempotency key: the billing system
    answers with its stored result, or refuses (409 -> review) if it never acted."""
    invoice_id = _resolve_invoice(engine, inst)
    default_mode = "live" if policy.mode == "live" else "shadow"
    if inst.kind == ins.ROUTE_TO_REVIEW:
        invoice = billing.get_invoice(invoice_id) if invoice_id else None
        mode = decide_mode(policy, invoice_context(invoice)) if invoice else default_mode
        return _review(inst, invoice, inst.detail or "provider asked for an account review", mode,
                       invoice_id)
    if not invoice_id:
        if inst.kind == ins.NOOP:
            return {"result": "noop", "mode": default_mode, "detail": inst.detail}
        what = f"transaction {inst.transaction_id!r}" if inst.transaction_id else "no invoice id"
        return _review(inst, None, f"instruction {inst.kind} for an unknown invoice ({what})",
                       default_mode)
    before = billing.get_invoice(invoice_id)
    if before is None:
        if inst.kind == ins.NOOP:
            return {"result": "noop", "mode": default_mode, "detail": inst.detail, "invoice_id": invoice_id}
        return _review(inst, None, f"instruction {inst.kind} for an unknown invoice {invoice_id}",
                       default_mode, invoice_id)
    ctx = invoice_context(before)
    mode = decide_mode(policy, ctx)
    base = {"mode": mode, "before": before, "after": before, "invoice_id": invoice_id,
            "customer_id": ctx.get("customer_id"), "subscription_id": before.get("subscription_id")}

    def review(reason: str) -> dict[str, Any]:
        return {**base, **_review(inst, before, reason, mode, invoice_id)}

    status = str(before.get("status") or "").lower()
    if inst.kind == ins.NOOP:
        return {**base, "result": "noop", "detail": inst.detail}
    if retaken and mode == "live":
        pass  # the billing system's own state checks and idempotency decide (see docstring)
    elif inst.kind == ins.MARK_PAID:
        if status == "paid":
            return {**base, "result": "noop", "detail": "invoice already paid: nothing to do"}
        if status not in ("open", "uncollectible"):
            return review(f"mark paid on a {status} invoice")
    elif status == "paid":
        return review(f"{inst.kind} for an already-paid invoice")
    elif status != "open":
        return review(f"{inst.kind} for a {status} invoice (not open)")
    if inst.kind == ins.RETRY_NOW:
        code = last_decline_code(before)
        if code and code in policy.hard_decline_codes:
            return review(f"retry asked on a hard decline ({code})")
    if inst.kind == ins.FORWARD_CARD_UPDATE_LINK and not inst.card_update_url:
        return {**base, "result": "noop", "detail": "card update link event without a link"}
    if mode == "shadow":
        return {**base, "result": "shadowed", "detail": f"shadow: would {inst.kind}"}
    key = inst.idempotency_key
    if inst.kind == ins.RETRY_NOW:
        resp = billing.retry_invoice(invoice_id, idempotency_key=key)
        tx = resp.get("transaction") if isinstance(resp.get("transaction"), dict) else {}
        detail = f"retried: transaction {tx.get('transaction_id')} {tx.get('status')}".strip()
    elif inst.kind == ins.REQUEST_PM_UPDATE:
        billing.request_payment_method_update(invoice_id, idempotency_key=key,
                                              card_update_url=inst.card_update_url)
        detail = "payment-method update requested"
    elif inst.kind == ins.PAUSE_COLLECTION:
        billing.pause_collection(invoice_id, idempotency_key=key)
        detail = "collection paused"
    elif inst.kind == ins.COMPLETE_DUNNING:
        billing.complete_dunning(invoice_id, idempotency_key=key)
        detail = "dunning completed"
    elif inst.kind == ins.MARK_PAID:
        billing.mark_paid(invoice_id, idempotency_key=key,
                          external_transaction_id=(inst.transaction_id or key)[:64])
        detail = "marked paid (recovered by the provider)"
    elif inst.kind == ins.FORWARD_CARD_UPDATE_LINK:
        billing.forward_card_update_link(invoice_id, inst.card_update_url, idempotency_key=key)
        detail = "card-update link forwarded"
    else:  # pragma: no cover - every kind is handled above
        raise ValueError(f"unhandled kind {inst.kind}")
    try:
        after = billing.get_invoice(invoice_id)
    except BillingNotFound:
        after = None
    return {**base, "result": "executed", "after": after, "detail": detail}


def _finish_write(item: WorkItem, inst: Instruction, outcome: dict[str, Any], report: ExecutionReport,
                  now: datetime) -> Callable[[sa.Connection], None]:
    ea = executed_actions
    values = {
        "mode": outcome.get("mode") or "shadow",
        "result": outcome["result"],
        "executed_at": utcnow(),
        "before_state": _state_json(outcome.get("before")),
        "after_state": _state_json(outcome.get("after")),
        "detail": (outcome.get("detail") or "")[:2000] or None,
    }
    for k in ("invoice_id", "customer_id", "subscription_id"):
        if outcome.get(k):
            values[k] = outcome[k]
    report.results[values["result"]] += 1
    report.actions[f"{inst.kind}/{values['mode']}/{values['result']}"] += 1

    def write(conn: sa.Connection) -> None:
        conn.execute(ea.update().where(ea.c.provider == inst.provider,
                                       ea.c.source_event_id == inst.source_event_id).values(**values))
        if values["result"] == "review":
            conn.execute(insert_or_ignore(manual_review, conn).values(
                provider=inst.provider, source_event_id=inst.source_event_id,
                invoice_id=values.get("invoice_id") or inst.invoice_id,
                reason=values["detail"] or "red flag", created_at=now))
        _set_source(conn, item, "processed", processed_at=now, last_error=None)

    return write


def _final_write(item: WorkItem, inst: Instruction, *, result: str, mode: str, now: datetime,
                 detail: str | None, report: ExecutionReport, source_status: str):
    report.results[result] += 1
    report.actions[f"{inst.kind}/{mode}/{result}"] += 1

    def write(conn: sa.Connection) -> None:
        conn.execute(insert_or_ignore(executed_actions, conn).values(
            **_audit_values(inst), mode=mode, result=result, attempts=1, executed_at=now,
            detail=detail))
        _set_source(conn, item, source_status, processed_at=now, last_error=None)

    return write


def _fail_write(item: WorkItem, inst: Instruction, error: str, policy: ExecutionPolicy,
                report: ExecutionReport, now: datetime):
    attempts = item.attempts + 1
    item.attempts = attempts
    report.failed += 1
    dead = attempts >= policy.max_receive_count
    if dead:
        report.dead_lettered += 1
    ea = executed_actions

    def write(conn: sa.Connection) -> None:
        conn.execute(ea.update().where(ea.c.provider == inst.provider,
                                       ea.c.source_event_id == inst.source_event_id)
                     .values(result="dead" if dead else "failed", detail=error[:2000], executed_at=now))
        _set_source(conn, item, "failed", attempts=attempts, last_error=error[:2000])
        if dead:
            _write_dead_letter(conn, item, error, now)

    return write


def _dead_letter_write(item: WorkItem, error: str, report: ExecutionReport, now: datetime):
    report.dead_lettered += 1
    return lambda conn: _write_dead_letter(conn, item, error, now)


def _write_dead_letter(conn: sa.Connection, item: WorkItem, error: str, now: datetime) -> None:
    ref = {"inbox": item.event_id, "poll": f"poll:{item.event_id}"}.get(item.table, item.event_id)
    payload_ref = store_payload(conn, item.body)
    conn.execute(insert_or_ignore(dead_letters, conn).values(
        kind="event", provider=item.provider, entity=(item.event_type or "event")[:32], ref=ref,
        payload_ref=payload_ref, attempts=max(item.attempts, 1), last_error=error[:2000],
        created_at=now, status="dead"))
    _set_source(conn, item, "dead", last_error=error[:2000])


def redrive_event_dead_letters(engine: sa.Engine, *, limit: int | None = None) -> int:
    """Put dead-lettered events back to pending (attempts reset), oldest first. Safe to run twice.

    The next execution run drains them in the usual order (financial first, oldest first); the
    audit trail's unique (provider, source_event_id) guarantees no second action for one event.
    """
    n = 0
    with engine.begin() as conn:
        q = (sa.select(dead_letters).where(dead_letters.c.kind == "event", dead_letters.c.status == "dead")
             .order_by(dead_letters.c.created_at, dead_letters.c.id))
        if limit:
            q = q.limit(limit)
        for dl in conn.execute(q).all():
            if dl.ref.startswith("poll:"):
                conn.execute(recovery_actions.update().where(
                    recovery_actions.c.provider == dl.provider,
                    recovery_actions.c.action_id == dl.ref[len("poll:"):]).values(status="pending", attempts=0))
            else:
                conn.execute(webhook_inbox.update().where(
                    webhook_inbox.c.provider == dl.provider, webhook_inbox.c.event_id == dl.ref)
                    .values(status="pending", attempts=0))
            conn.execute(executed_actions.update().where(
                executed_actions.c.provider == dl.provider,
                executed_actions.c.source_event_id == (dl.ref[len("poll:"):] if dl.ref.startswith("poll:") else dl.ref),
                executed_actions.c.result == "dead").values(result="failed"))
            conn.execute(dead_letters.update().where(dead_letters.c.id == dl.id)
                         .values(status="redriven", redriven_at=utcnow()))
            n += 1
    return n
