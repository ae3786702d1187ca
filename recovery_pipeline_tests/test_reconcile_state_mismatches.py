"""State mismatches: ops-store actions joined with canonical billing state, with age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest
import sqlalchemy as sa

from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import executed_actions, push_ledger, recovery_actions
from recovery_pipeline.reconciliation import ops_snapshot, parity, sqlrun, synthetic

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def stores(tmp_path):
    engine = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(engine)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    synthetic.generate(con, 200, months=2, start=NOW - timedelta(days=60), as_of=NOW - timedelta(days=2))
    yield engine, con
    con.close()


def _invoice(con, status):
    return con.execute("select invoice_id from canonical.invoices where status = ? order by invoice_id "
                       "limit 1", [status]).fetchone()[0]


def _action(**kw):
    base = dict(source="webhook", provider="slicker", instruction="recovery_action", mode="live",
                received_at=NOW - timedelta(hours=5), executed_at=NOW - timedelta(hours=5),
                result="executed", attempts=1)
    return {**base, **kw}


def _mismatches(engine, con):
    ops_snapshot.snapshot(engine, con)
    sqlrun.materialize(con, "reconciliation", "state_mismatches", {
        "as_of": NOW, "provider": "slicker", "missed_grace_minutes": 60, "executed_grace_minutes": 30})
    return {(r["kind"], r["invoice_id"]): r for r in parity.mismatches(con)}


def test_consistent_state_has_no_mismatches(stores):
    engine, con = stores
    paid = _invoice(con, "paid")
    with engine.begin() as c:
        c.execute(sa.insert(executed_actions).values(**_action(
            source_event_id="evt_ok", invoice_id=paid, instruction="recovery.success",
            business_action="mark_paid")))
    assert _mismatches(engine, con) == {}


def test_provider_recovered_but_billing_open_is_listed_with_age(stores):
    engine, con = stores
    open_inv = _invoice(con, "open")
    with engine.begin() as c:
        c.execute(sa.insert(executed_actions).values(**_action(
            source_event_id="evt_1", invoice_id=open_inv, instruction="recovery.success",
            business_action="mark_paid", mode="shadow", result="shadowed")))
    out = _mismatches(engine, con)
    row = out[("provider_recovered_billing_open", open_inv)]
    assert row["billing_state"] == "open" and row["provider_state"] == "recovered"
    assert row["age_hours"] == pytest.approx(5.0)


def test_executed_retry_without_a_transaction_is_listed(stores):
    engine, con = stores
    inv = _invoice(con, "uncollectible")
    with engine.begin() as c:
        c.execute(sa.insert(executed_actions).values(**_action(
            source_event_id="evt_2", invoice_id=inv, business_action="retry_now")))
    out = _mismatches(engine, con)
    assert ("executed_action_without_transaction", inv) in out
    con.execute("insert into canonical.transactions (transaction_id, invoice_id, status, created_at, "
                "updated_at, month) values ('tx_new', ?, 'failed', ?, ?, '2026-06')",
                [inv, NOW - timedelta(hours=4), NOW - timedelta(hours=4)])
    assert ("executed_action_without_transaction", inv) not in _mismatches(engine, con)


def test_action_missed_after_its_ideal_retry_time_is_listed_until_executed(stores):
    engine, con = stores
    inv = _invoice(con, "open")
    with engine.begin() as c:
        c.execute(sa.insert(recovery_actions).values(
            provider="slicker", action_id="req_9", invoice_id=inv, action_suggestion="ACTION_SUGGESTION_RETRY",
            ideal_retry_time=NOW - timedelta(hours=3), created_at=NOW - timedelta(hours=6),
            polled_at=NOW - timedelta(hours=6), body="{}", status="pending", attempts=0))
    row = _mismatches(engine, con)[("action_missed_after_ideal_retry_time", inv)]
    assert row["age_hours"] == pytest.approx(3.0)
    with engine.begin() as c:
        c.execute(sa.insert(executed_actions).values(**_action(
            source="poll", source_event_id="req_9", invoice_id=inv, business_action="retry_now",
            mode="shadow", result="shadowed")))
    assert ("action_missed_after_ideal_retry_time", inv) not in _mismatches(engine, con)


def test_invoice_changed_after_the_last_acknowledged_push_is_stale_at_the_provider(stores):
    engine, con = stores
    inv = _invoice(con, "paid")
    updated = con.execute("select updated_at from canonical.invoices where invoice_id = ?", [inv]).fetchone()[0]
    with engine.begin() as c:
        c.execute(sa.insert(push_ledger).values(provider="slicker", entity="invoices", record_id=inv,
                                                payload_hash="x", month="2026-04",
                                                pushed_at=updated - timedelta(days=1)))
    assert ("provider_copy_stale", inv) in _mismatches(engine, con)
