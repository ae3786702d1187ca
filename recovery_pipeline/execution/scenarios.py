"""Launch-readiness scenarios: the seed's "Test Before Launch" table, run end to end.

Each scenario creates its own invoice in the billing database (ids ``scn-<run>-...``), drives the
provider sandbox (Slicker wire contract: ingest, recovery actions, signed webhooks through the
receiver into the inbox), executes through the billing-system adapter over HTTP and checks the
outcome. The execution step only touches the scenario's own invoice (``execute_pending(select=)``)
and runs it live whatever the rollout mode, so real pending decisions are never acted on here.

Needs: the provider sandbox (``/sandbox/*`` hooks), the webhook receiver writing to the same ops
store, the demo billing engine and its database. ``run_scenarios`` returns one row per scenario.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from recovery_pipeline.billing_engine import db as bdb
from recovery_pipeline.billing_engine.gateway import Gateway
from recovery_pipeline.billing_engine.schema import customers, invoices, subscriptions, transactions
from recovery_pipeline.execution.billing import HttpBillingSystem
from recovery_pipeline.execution.executor import execute_pending
from recovery_pipeline.execution.policy import policy_from_config
from recovery_pipeline.opsstore.models import dead_letters, webhook_inbox
from recovery_pipeline.opsstore.store import create_ops_engine, init_ops_store, load_payload, utcnow

DECLINE = "insufficient_funds"


@dataclass
class ScenarioEnv:
    provider_url: str
    provider_api_key: str
    receiver_url: str
    slicker_webhook_token: str
    billing_url: str
    billing_api_key: str
    billing_db_url: str
    ops_store_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @classmethod
    def from_settings(cls, settings=None) -> ScenarioEnv:
        from recovery_pipeline.settings import SECRET_ENV_VARS, load_settings, secret

        s = settings or load_settings()
        return cls(provider_url=s.provider_base_url,
                   provider_api_key=secret(SECRET_ENV_VARS["provider_api_key"]) or "",
                   receiver_url=s.receiver_url,
                   slicker_webhook_token=secret(SECRET_ENV_VARS["slicker_webhook_token"]) or "",
                   billing_url=s.billing_engine_url,
                   billing_api_key=secret(SECRET_ENV_VARS["billing_engine_api_key"]) or "",
                   billing_db_url=s.billing_db_url, ops_store_url=s.ops_store_url)


@dataclass
class ScenarioResult:
    scenario: str
    verifies: str
    passed: bool
    detail: str


class _Ctx:
    def __init__(self, env: ScenarioEnv):
        from recovery_pipeline.providers.config import ProviderOptions

        self.env = env
        self.ops = create_ops_engine(env.ops_store_url)
        init_ops_store(self.ops)
        self.billing_db = bdb.create_billing_engine(env.billing_db_url)
        bdb.init_billing_db(self.billing_db)
        seed = bdb.get_meta(self.billing_db, "gateway_seed")
        self.gateway = Gateway(int(seed) if seed is not None else 0)
        self.billing = HttpBillingSystem(env.billing_url, env.billing_api_key)
        self.http = httpx.Client(base_url=env.provider_url.rstrip("/"), timeout=30)
        self.options = ProviderOptions(provider="slicker", base_url=env.provider_url,
                                       api_key=env.provider_api_key, requests_per_second=20,
                                       max_receive_count=3, backoff_initial=0.05, backoff_max=0.2)
        self.n = 0
        self.http.post("/sandbox/config", json={"webhook_url": env.receiver_url})

    def close(self) -> None:
        self.billing.close()
        self.http.close()

    # --- fixtures in the billing database ----------------------------------------------------
    def fixture(self, tag: str, *, paid: bool = False, retry_succeeds: bool | None = None) -> str:
        """An invoice with one first attempt (succeeded if ``paid``, else failed)."""
        for k in range(500):
            self.n += 1
            iid = f"scn-{self.env.run_id}-{tag}-{self.n}"
            if retry_succeeds is None:
                break
            res = self.gateway.charge(invoice_id=iid, attempt_number=2, previous_decline_code=DECLINE)
            if res.succeeded == retry_succeeds:
                break
        else:  # pragma: no cover - 500 draws always find both outcomes
            raise RuntimeError("no invoice id with the wanted retry outcome")
        t = utcnow() - timedelta(hours=1)
        cus, sub = f"{iid}-cus", f"{iid}-sub"
        with self.billing_db.begin() as c:
            c.execute(customers.insert().values(customer_id=cus, email=None, country="GB",
                                                created_at=t, updated_at=t))
            c.execute(subscriptions.insert().values(
                subscription_id=sub, customer_id=cus, plan_id="scenario", status="active" if paid else "past_due",
                amount_minor=1500, currency="GBP", billing_period=1, billing_period_unit="month",
                created_at=t, updated_at=t))
            c.execute(invoices.insert().values(
                invoice_id=iid, customer_id=cus, subscription_id=sub, status="paid" if paid else "open",
                amount_minor=1500, currency="GBP", attempt_count=1, collection_paused=False,
                paid_at=t if paid else None, created_at=t, updated_at=t))
            c.execute(transactions.insert().values(
                transaction_id=f"{iid}-t1", invoice_id=iid, customer_id=cus, subscription_id=sub,
                status="succeeded" if paid else "failed", amount_minor=1500, currency="GBP",
                attempt_number=1, gateway="stripe", gateway_transaction_id=f"{iid}-ch1",
                decline_code=None if paid else DECLINE, payment_method_type="card",
                payment_method_token=f"pm_{iid}", created_at=t, updated_at=t))
        return iid

    def rows(self, table: sa.Table, invoice_id: str) -> list[dict[str, Any]]:
        key = table.c.subscription_id if table is subscriptions else table.c.invoice_id
        value = f"{invoice_id}-sub" if table is subscriptions else invoice_id
        with self.billing_db.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(table).where(key == value))]

    # --- provider side -------------------------------------------------------------------------
    def push(self, invoice_id: str, client=None) -> list:
        from recovery_pipeline.providers.push import push_entity

        outcomes = []
        own = client is None
        client = client or self.options.client()
        try:
            for entity, table in (("subscriptions", subscriptions), ("invoices", invoices),
                                  ("transactions", transactions)):
                push_entity(self.ops, client, entity, [self.rows(table, invoice_id)],
                            on_batch=outcomes.append)
        finally:
            if own:
                client.close()
        return outcomes

    def actions_for(self, invoice_id: str) -> int:
        r = self.http.get("/v1/recovery_actions", params={"invoiceId": invoice_id, "pageSize": 100},
                          headers={"Authorization": f"Bearer {self.env.provider_api_key}"})
        r.raise_for_status()
        return int(r.json().get("totalSize") or 0)

    def queue(self, etype: str, invoice_id: str, **data: Any) -> str:
        body = {"provider": "slicker", "type": etype,
                "data": {"invoiceId": invoice_id, "subscriptionId": f"{invoice_id}-sub", **data}}
        r = self.http.post("/sandbox/events", json=body)
        r.raise_for_status()
        return r.json()["id"]

    def deliver(self) -> dict:
        r = self.http.post("/sandbox/deliver", json={})
        r.raise_for_status()
        return r.json()

    def inbox_rows(self, event_id: str) -> list[dict[str, Any]]:
        with self.ops.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(webhook_inbox).where(
                webhook_inbox.c.provider == "slicker", webhook_inbox.c.event_id == event_id))]

    def execute(self, invoice_id: str):
        policy = policy_from_config({"mode": "live", "retry_backoff_seconds": 0}, env={})
        return execute_pending(self.ops, self.billing, policy, env={},
                               select=lambda inst: inst.invoice_id == invoice_id)

    def retry_event(self, invoice_id: str) -> str:
        ideal = (utcnow() - timedelta(minutes=1)).isoformat()
        return self.queue("recovery_action", invoice_id, actionSuggestion="ACTION_SUGGESTION_RETRY",
                          idealRetryTime=ideal)


# --- the scenarios (seed table order) -----------------------------------------------------------
def _first_attempt(ctx: _Ctx) -> tuple[bool, str]:
    iid = ctx.fixture("paid", paid=True)
    ctx.push(iid)
    n = ctx.actions_for(iid)
    return n == 0, f"pushed paid invoice {iid}; recovery actions at the provider: {n}"


def _failed_invoice(ctx: _Ctx) -> tuple[bool, str]:
    iid = ctx.fixture("failed")
    ctx.push(iid)
    n = ctx.actions_for(iid)
    return n >= 1, f"pushed failed invoice {iid}; recovery actions at the provider: {n}"


def _retry(ctx: _Ctx, succeeds: bool) -> tuple[bool, str]:
    iid = ctx.fixture("retry-ok" if succeeds else "retry-ko", retry_succeeds=succeeds)
    ctx.push(iid)
    before = ctx.actions_for(iid)
    ctx.retry_event(iid)
    ctx.deliver()
    ctx.execute(iid)
    txns = ctx.rows(transactions, iid)
    inv = ctx.rows(invoices, iid)[0]
    ctx.push(iid)  # the next sync carries the new transaction to the provider
    after = ctx.actions_for(iid)
    new_tx = len(txns) == 2 and txns[-1]["status"] == ("succeeded" if succeeds else "failed")
    if succeeds:
        ok = new_tx and inv["status"] == "paid" and after == before
    else:
        ok = new_tx and inv["status"] == "open" and after > before
    return ok, (f"{iid}: {len(txns)} transactions (last {txns[-1]['status']}), invoice {inv['status']}, "
                f"provider recovery actions {before} -> {after}")


def _state_action(ctx: _Ctx, etype: str, check: Callable[[dict], bool], what: str,
                  **data: Any) -> tuple[bool, str]:
    iid = ctx.fixture(etype.replace("_", "-"))
    ctx.queue(etype, iid, **data)
    delivered = ctx.deliver()
    ctx.execute(iid)
    inv = ctx.rows(invoices, iid)[0]
    return check(inv), f"{iid}: delivered {delivered.get('delivered')}, {what}"


def _pm_change(ctx: _Ctx) -> tuple[bool, str]:
    return _state_action(ctx, "recovery_action",
                         lambda inv: inv["payment_method_update_requested_at"] is not None,
                         "payment-method update requested in the billing system",
                         actionSuggestion="ACTION_SUGGESTION_CARD_CHANGE")


def _pause(ctx: _Ctx) -> tuple[bool, str]:
    return _state_action(ctx, "pause_collection", lambda inv: bool(inv["collection_paused"]),
                         "collection paused in the billing system")


def _complete(ctx: _Ctx) -> tuple[bool, str]:
    return _state_action(ctx, "complete_dunning",
                         lambda inv: inv["dunning_complete_at"] is not None and inv["status"] == "uncollectible",
                         "dunning completed (invoice uncollectible)")


def _duplicate(ctx: _Ctx) -> tuple[bool, str]:
    from recovery_pipeline.webhooks import signing

    iid = ctx.fixture("dup", retry_succeeds=False)
    event_id = ctx.retry_event(iid)
    ctx.deliver()
    rows = ctx.inbox_rows(event_id)
    if not rows:
        return False, f"{iid}: the webhook never reached the inbox"
    body = rows[0]["body"]
    answers = []
    with httpx.Client(timeout=30) as client:
        for _ in range(2):
            r = client.post(f"{ctx.env.receiver_url.rstrip('/')}/webhooks/slicker", content=body,
                            headers=signing.signed_headers("slicker", ctx.env.slicker_webhook_token, body))
            answers.append(r.json().get("duplicate"))
    ctx.execute(iid)
    ctx.execute(iid)
    txns = ctx.rows(transactions, iid)
    ok = answers == [True, True] and len(ctx.inbox_rows(event_id)) == 1 and len(txns) == 2
    return ok, f"{iid}: redeliveries acknowledged as duplicates {answers}; one retry ({len(txns)} transactions)"


def _delivery_failure(ctx: _Ctx) -> tuple[bool, str]:
    from recovery_pipeline.httpserve import free_port

    iid = ctx.fixture("undelivered")
    ctx.http.post("/sandbox/config", json={"webhook_url": f"http://127.0.0.1:{free_port()}"})
    try:
        event_id = ctx.queue("pause_collection", iid)
        first = ctx.deliver()
    finally:
        ctx.http.post("/sandbox/config", json={"webhook_url": ctx.env.receiver_url})
    missing = not ctx.inbox_rows(event_id)
    second = ctx.deliver()
    stored = len(ctx.inbox_rows(event_id))
    outbox = [e for e in ctx.http.get("/sandbox/outbox").json() if e["event_id"] == event_id]
    attempts = outbox[0]["attempts"] if outbox else 0
    ok = first.get("failed", 0) >= 1 and missing and stored == 1 and attempts >= 2
    return ok, (f"{iid}: first delivery failed ({first}), the provider retried ({attempts} attempts), "
                f"stored {stored}x; alerting on non-2xx is the monitoring group's webhook check")


def _api_failure(ctx: _Ctx) -> tuple[bool, str]:
    iid = ctx.fixture("api-failure")
    ctx.http.post("/sandbox/faults", json={"fraction_5xx": 1.0})
    try:
        client = ctx.options.client()
        try:
            failed = ctx.push(iid, client)
        finally:
            client.close()
    finally:
        ctx.http.post("/sandbox/faults", json={"fraction_5xx": 0.0})
    dead = [o for o in failed if o.dead_lettered]
    retried = max((o.result.attempts for o in failed), default=0)
    with ctx.ops.connect() as c:
        refs = c.execute(sa.select(dead_letters.c.payload_ref).where(
            dead_letters.c.kind == "push", dead_letters.c.ref.in_([o.batch_id for o in dead]))).scalars().all()
        kept = [load_payload(c, r) for r in refs if r]
    replayable = any(iid in (p or "") for p in kept)
    ctx.push(iid)  # after the outage: the same rows go again (nothing was acknowledged)
    n = ctx.actions_for(iid)
    ok = bool(dead) and retried >= 2 and replayable and n >= 1
    return ok, (f"{iid}: {len(dead)} batches dead-lettered after {retried} attempts each, payload kept "
                f"for replay: {replayable}; after the outage the provider has it ({n} recovery actions)")


SCENARIOS: list[tuple[str, str, Callable[[_Ctx], tuple[bool, str]]]] = [
    ("Successful first-attempt invoice", "Invoice and transaction sync without entering recovery.",
     _first_attempt),
    ("Failed invoice", "Failed transaction creates the expected recovery context.", _failed_invoice),
    ("Retry succeeds", "The successful retry is sent as a new transaction and closes the invoice.",
     lambda ctx: _retry(ctx, True)),
    ("Retry fails", "The failed retry is sent as a new transaction and recovery remains open.",
     lambda ctx: _retry(ctx, False)),
    ("Payment-method change needed", "The system routes the customer to the update flow.", _pm_change),
    ("Pause collection event", "The billing system pauses its own collection when instructed.", _pause),
    ("Complete dunning event", "The billing system stops dunning for the invoice when instructed.",
     _complete),
    ("Duplicate webhook delivery", "Processing is idempotent and does not double-retry.", _duplicate),
    ("Webhook delivery failure", "The provider retries delivery (and alerts fire).", _delivery_failure),
    ("API failure", "Sync retries with backoff and preserves failed payloads for replay.", _api_failure),
]


def run_scenarios(env: ScenarioEnv, only: list[str] | None = None) -> list[ScenarioResult]:
    ctx = _Ctx(env)
    results = []
    try:
        for name, verifies, fn in SCENARIOS:
            if only and not any(o.lower() in name.lower() for o in only):
                continue
            try:
                passed, detail = fn(ctx)
            except Exception as exc:  # noqa: BLE001 - a broken scenario is a failed row, the rest go on
                passed, detail = False, f"error: {type(exc).__name__}: {exc}"
            results.append(ScenarioResult(name, verifies, bool(passed), detail))
    finally:
        ctx.close()
    return results


def results_json(results: list[ScenarioResult]) -> str:
    return json.dumps([r.__dict__ for r in results], indent=2)
