"""End to end over HTTP: the executor acting on the real demo billing engine (loopback)."""

from __future__ import annotations

import contextlib

import sqlalchemy as sa

from recovery_pipeline.billing_engine import db as bdb
from recovery_pipeline.billing_engine.app import create_app
from recovery_pipeline.billing_engine.schema import customers, invoices, subscriptions, transactions
from recovery_pipeline.execution.billing import HttpBillingSystem, billing_db_context_lookup
from recovery_pipeline.execution.executor import execute_pending
from recovery_pipeline.execution.policy import policy_from_config
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.opsstore.models import executed_actions
from recovery_pipeline_tests._execution_fakes import T0, add_inbox, ops_engine, past, slicker_event

KEY = "billing-test-key"


def _billing_db(tmp_path, countries=("US",)):
    engine = bdb.create_billing_engine(f"sqlite:///{tmp_path / 'billing.sqlite'}")
    bdb.init_billing_db(engine)
    with engine.begin() as c:
        for i, country in enumerate(countries):
            cus, sub, inv = f"cus_{i}", f"sub_{i}", f"in_{i}"
            c.execute(customers.insert().values(customer_id=cus, email=f"{cus}@example.com", country=country,
                                                created_at=T0, updated_at=T0))
            c.execute(subscriptions.insert().values(
                subscription_id=sub, customer_id=cus, plan_id="plan_pro", status="past_due", amount_minor=2500,
                currency="USD", billing_period=1, billing_period_unit="month", created_at=T0, updated_at=T0))
            c.execute(invoices.insert().values(
                invoice_id=inv, customer_id=cus, subscription_id=sub, status="open", amount_minor=2500,
                currency="USD", attempt_count=1, collection_paused=False, created_at=T0, updated_at=T0))
            c.execute(transactions.insert().values(
                transaction_id=f"tx_{i}", invoice_id=inv, customer_id=cus, subscription_id=sub, status="failed",
                amount_minor=2500, currency="USD", attempt_number=1, gateway="stripe",
                gateway_transaction_id=f"ch_{i}", decline_code="insufficient_funds", payment_method_type="card",
                created_at=T0, updated_at=T0))
    return engine


def _snapshot(engine):
    with engine.connect() as c:
        return {t.name: sorted(tuple(r) for r in c.execute(sa.select(t))) for t in (invoices, transactions)}


@contextlib.contextmanager
def _billing_service(billing_engine, tmp_path):
    app = create_app(db_url=str(billing_engine.url), api_key=KEY)
    with serve_in_thread(app) as url, HttpBillingSystem(
            url, KEY, context_lookup=billing_db_context_lookup(billing_engine)) as billing:
        yield billing


def test_live_retry_over_http_writes_a_new_transaction_once(tmp_path):
    billing_db, ops = _billing_db(tmp_path), ops_engine(tmp_path)
    add_inbox(ops, "slicker", "evt_1", slicker_event("evt_1", "recovery_action", "in_0", "ACTION_SUGGESTION_RETRY",
                                                     ideal=past()))
    with _billing_service(billing_db, tmp_path) as billing:
        execute_pending(ops, billing, policy_from_config({"mode": "live"}, env={}), env={})
        # a second attempt with the same idempotency key (e.g. after a crash) does not charge again
        billing.retry_invoice("in_0", idempotency_key="slicker:evt_1")
    with billing_db.connect() as c:
        attempts = sorted(c.execute(sa.select(transactions.c.attempt_number)
                                    .where(transactions.c.invoice_id == "in_0")).scalars())
    with ops.connect() as c:
        row = c.execute(sa.select(executed_actions)).one()
    assert attempts == [1, 2]
    assert (row.mode, row.result) == ("live", "executed") and "retried: transaction" in row.detail


def test_shadow_mode_over_http_changes_nothing_in_the_billing_database(tmp_path):
    billing_db, ops = _billing_db(tmp_path), ops_engine(tmp_path)
    add_inbox(ops, "slicker", "evt_1", slicker_event("evt_1", "recovery_action", "in_0", "ACTION_SUGGESTION_RETRY",
                                                     ideal=past()))
    add_inbox(ops, "slicker", "evt_2", slicker_event("evt_2", "pause_collection", "in_0"))
    add_inbox(ops, "slicker", "evt_3", slicker_event("evt_3", "complete_dunning", "in_0"))
    before = _snapshot(billing_db)
    with _billing_service(billing_db, tmp_path) as billing:
        report = execute_pending(ops, billing, policy_from_config({"mode": "shadow"}, env={}), env={})
    assert report.results["shadowed"] == 3
    assert _snapshot(billing_db) == before


def test_cohort_by_country_over_http_uses_the_customer_country_from_the_billing_database(tmp_path):
    billing_db, ops = _billing_db(tmp_path, countries=("GB", "US")), ops_engine(tmp_path)
    for i in range(2):
        add_inbox(ops, "slicker", f"evt_{i}", slicker_event(f"evt_{i}", "pause_collection", f"in_{i}"))
    policy = policy_from_config({"mode": "cohort", "cohort": {"countries": ["GB"]}}, env={})
    with _billing_service(billing_db, tmp_path) as billing:
        execute_pending(ops, billing, policy, env={})
    with billing_db.connect() as c:
        paused = dict(c.execute(sa.select(invoices.c.invoice_id, invoices.c.collection_paused)).all())
    assert paused == {"in_0": True, "in_1": False}


def test_unknown_invoice_over_http_goes_to_review_not_to_dead_letters(tmp_path):
    billing_db, ops = _billing_db(tmp_path), ops_engine(tmp_path)
    add_inbox(ops, "slicker", "evt_x", slicker_event("evt_x", "pause_collection", "in_nope"))
    with _billing_service(billing_db, tmp_path) as billing:
        execute_pending(ops, billing, policy_from_config({"mode": "live"}, env={}), env={})
    with ops.connect() as c:
        assert c.execute(sa.select(executed_actions.c.result)).scalar_one() == "review"
